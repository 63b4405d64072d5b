"""Homing's OpenAPI document against the Svix server's: same routes, same success codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homing.api.app import create_app
from homing.config import Settings

SVIX_SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "svix-openapi.json"

# Svix routes Homing does not serve (yet), each with the reason.
NOT_SERVED: dict[tuple[str, str], str] = {}
# Deliberate differences the official Python SDK needs (see docs/architecture.md).
STATUS_OVERRIDES = {("post", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate"): "200"}
METHODS = ("get", "post", "put", "patch", "delete")


def success_codes(operation: dict[str, object]) -> set[str]:
    responses = operation.get("responses", {})
    assert isinstance(responses, dict)
    return {code for code in responses if code.startswith("2")}


@pytest.fixture(scope="module")
def specs() -> tuple[dict[str, object], dict[str, object]]:
    if not SVIX_SPEC.exists():
        pytest.skip(f"the Svix reference spec is not at {SVIX_SPEC}")
    svix = json.loads(SVIX_SPEC.read_text(encoding="utf-8"))
    ours = create_app(Settings(), storage=None).openapi()  # type: ignore[arg-type]
    return svix, ours


def test_every_svix_route_is_served_with_its_status(specs: tuple[dict, dict]) -> None:
    """Each Svix operation exists in Homing's spec with the same method, path and a 2xx code
    Svix documents for it."""
    svix, ours = specs
    problems = []
    for path, item in svix["paths"].items():
        for method in METHODS:
            if method not in item or (method, path) in NOT_SERVED:
                continue
            mine = ours["paths"].get(path, {}).get(method)
            if mine is None:
                problems.append(f"missing {method.upper()} {path}")
                continue
            override = STATUS_OVERRIDES.get((method, path))
            expected = {override} if override else success_codes(item[method])
            if expected and not success_codes(mine) & expected:
                problems.append(f"{method.upper()} {path}: {success_codes(mine)} vs {expected}")
    assert problems == []


def test_list_responses_keep_svix_schema_names(specs: tuple[dict, dict]) -> None:
    """List bodies are named like Svix's (``ListResponse_ApplicationOut_``) for generators."""
    _, ours = specs
    names = set(ours["components"]["schemas"])
    assert {"ListResponse_ApplicationOut_", "ListResponse_MessageOut_"} <= names
