"""Payload validation against event-type JSON Schemas, with every regular expression of a
schema (``pattern``, ``patternProperties``, and ``additionalProperties`` beside them) run by
RE2, whose matching time is linear in the input. Python's backtracking ``re`` would let one
tenant's ``^(a+)+$`` stall the whole process (ReDoS).

RE2 has no backreferences or lookaround: schemas using them are refused when saved.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import re2
from jsonschema import ValidationError, validators
from jsonschema.protocols import Validator


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern)


def _search(pattern: str, text: str) -> bool:
    return _compiled(pattern).search(text) is not None


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _extras(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [
        key
        for key in instance
        if key not in properties and not any(_search(p, key) for p in patterns)
    ]


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _extras(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(e) for e in sorted(extras))
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


_RE2_KEYWORDS = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}


@functools.lru_cache(maxsize=16)
def _validator_class(base: type[Validator]) -> type[Validator]:
    extended: type[Validator] = validators.extend(base, _RE2_KEYWORDS)
    return extended


def validator(schema: dict[str, Any]) -> Validator:
    """A validator for ``schema`` (its ``$schema`` dialect, else the newest) using RE2."""
    return _validator_class(validators.validator_for(schema))(schema)


def unsupported_patterns(schema: Any) -> list[str]:
    """The regular expressions of ``schema`` that RE2 cannot run."""
    bad: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        if not isinstance(node, dict):
            continue
        candidates = list(node.get("patternProperties", {}) or {})
        if isinstance(node.get("pattern"), str):
            candidates.append(node["pattern"])
        for pattern in candidates:
            try:
                _compiled(pattern)
            except re2.error:
                bad.append(pattern)
        stack.extend(node.values())
    return bad
