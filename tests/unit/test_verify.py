"""Tests for homing.verify, the standalone receiver library: vectors, sender agreement, errors."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import importlib.util
import json
import random
import shutil
import string
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks.webhooks
import svix.webhooks

import homing.verify
from homing.signing import github_signature, signature_header
from homing.signing import sign as sender_sign
from homing.verify import Webhook, WebhookVerificationError, verify_github

VECTORS = Path(__file__).parent.parent / "vectors" / "signatures.json"

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B64 = SECRET.removeprefix("whsec_")
KEY = base64.b64decode(SECRET_B64)
OTHER_SECRET = "whsec_" + base64.b64encode(b"\x01" * 32).decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
NOW = 1_700_000_000
BODY = b'{"type":"invoice.paid","data":{"id":"in_1"}}'
SIGNATURE = sender_sign(SECRET, MSG_ID, NOW, BODY)

Headers = dict[str, Any]


def _vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
    return cases


def _headers(
    secrets: list[str] | None = None, timestamp: int = NOW, body: bytes = BODY
) -> dict[str, str]:
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets or [SECRET], MSG_ID, timestamp, body),
    }


def _assert_secret_not_leaked(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    for needle in (SECRET, SECRET_B64, KEY.hex(), repr(KEY)):
        assert needle not in text


# -- shared vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", _vectors(), ids=lambda case: str(case["description"]))
def test_vector_standard_signature_verifies(case: dict[str, Any]) -> None:
    """Each shared vector's webhook-signature verifies and sign() reproduces it."""
    body = case["body"].encode("utf-8")
    headers = {
        "webhook-id": case["msg_id"],
        "webhook-timestamp": str(case["timestamp"]),
        "webhook-signature": case["signature"],
    }
    webhook = Webhook(case["secret"])
    assert webhook.sign(case["msg_id"], case["timestamp"], body) == case["signature"]
    assert webhook.verify_raw(body, headers, now=case["timestamp"]) == body
    if body:
        assert webhook.verify(body, headers, now=case["timestamp"]) == json.loads(body)


@pytest.mark.parametrize("case", _vectors(), ids=lambda case: str(case["description"]))
def test_vector_github_signature_verifies(case: dict[str, Any]) -> None:
    """Each shared vector's GitHub-style signature verifies with the same secret."""
    body = case["body"].encode("utf-8")
    verify_github(case["secret"], body, case["github_signature"])
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_github(case["secret"], body + b"x", case["github_signature"])


@pytest.mark.parametrize("case", _vectors(), ids=lambda case: str(case["description"]))
def test_vector_verifies_with_the_raw_key_bytes(case: dict[str, Any]) -> None:
    """Passing the decoded key as bytes is the same as passing the secret text."""
    key = base64.b64decode(case["secret"].removeprefix("whsec_"))
    body = case["body"].encode("utf-8")
    assert Webhook(key).sign(case["msg_id"], case["timestamp"], body) == case["signature"]
    verify_github(key, body, case["github_signature"])


# -- agreement with the sender ------------------------------------------------------------------


def _random_secret(rng: random.Random) -> str:
    key = bytes(rng.randrange(256) for _ in range(rng.randint(24, 75)))
    return "whsec_" + base64.b64encode(key).decode()


def test_sender_and_receiver_agree_on_random_inputs() -> None:
    """Headers from homing.signing verify here for every live secret, and tampering fails."""
    rng = random.Random(20240604)
    alphabet = string.ascii_letters + string.digits + "_-."
    for _ in range(150):
        secrets = [_random_secret(rng) for _ in range(rng.randint(1, 3))]
        msg_id = "msg_" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        timestamp = rng.randrange(2**32)
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        }
        for secret in secrets:
            webhook = Webhook(secret)
            assert webhook.sign(msg_id, timestamp, body) == sender_sign(
                secret, msg_id, timestamp, body
            )
            assert webhook.verify_raw(body, headers, now=timestamp) == body
            verify_github(secret, body, github_signature(secret, body))
        with pytest.raises(WebhookVerificationError):
            Webhook(_random_secret(rng)).verify_raw(body, headers, now=timestamp)
        tampered = body + b"\x00" if not body else bytes([body[0] ^ 1]) + body[1:]
        with pytest.raises(WebhookVerificationError):
            Webhook(secrets[0]).verify_raw(tampered, headers, now=timestamp)
        with pytest.raises(WebhookVerificationError):
            verify_github(secrets[0], tampered, github_signature(secrets[0], body))


# -- cross-checks with the PyPI libraries -------------------------------------------------------


def test_standardwebhooks_signature_verifies_here() -> None:
    """A header made by standardwebhooks.Webhook.sign passes our verify."""
    now = int(time.time())
    stamp = datetime.fromtimestamp(now, tz=UTC)
    signature = standardwebhooks.webhooks.Webhook(SECRET).sign(MSG_ID, stamp, BODY.decode())
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(now), "webhook-signature": signature}
    assert Webhook(SECRET).verify(BODY, headers, now=now) == json.loads(BODY)
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


def test_our_signature_verifies_with_standardwebhooks() -> None:
    """A header made by our Webhook.sign, with a rotation entry, passes standardwebhooks."""
    now = int(time.time())
    ours = Webhook(SECRET).sign(MSG_ID, now, BODY)
    other = Webhook(OTHER_SECRET).sign(MSG_ID, now, BODY)
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(now),
        "webhook-signature": f"{other} {ours}",
    }
    library = standardwebhooks.webhooks.Webhook(SECRET)
    assert library.verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        library.verify(BODY + b" ", headers)


def test_svix_library_agrees_in_both_directions() -> None:
    """svix signs headers we accept under svix-* names, and accepts headers we sign."""
    now = int(time.time())
    stamp = datetime.fromtimestamp(now, tz=UTC)
    signature = svix.webhooks.Webhook(SECRET).sign(MSG_ID, stamp, BODY.decode())
    svix_headers = {"svix-id": MSG_ID, "svix-timestamp": str(now), "svix-signature": signature}
    assert Webhook(SECRET).verify(BODY, svix_headers, now=now) == json.loads(BODY)
    ours = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(now),
        "webhook-signature": Webhook(SECRET).sign(MSG_ID, now, BODY),
    }
    svix.webhooks.Webhook(SECRET).verify(BODY, ours)


# -- inputs that verify -----------------------------------------------------------------------


def _odd_case(headers: dict[str, str]) -> dict[str, str]:
    names = {"webhook-id": "WEBHOOK-ID", "webhook-timestamp": "Webhook-Timestamp"}
    names["webhook-signature"] = "wEbHoOk-SiGnAtUrE"
    return {names[name]: value for name, value in headers.items()}


ACCEPTED: list[Any] = [
    pytest.param(SECRET, BODY, _headers(), id="plain"),
    pytest.param(SECRET_B64, BODY, _headers(), id="secret-without-prefix"),
    pytest.param(SECRET_B64.rstrip("="), BODY, _headers(), id="secret-unpadded"),
    pytest.param(SECRET + "\n", BODY, _headers(), id="secret-trailing-newline"),
    pytest.param(KEY, BODY, _headers(), id="secret-raw-bytes"),
    pytest.param(SECRET, BODY.decode(), _headers(), id="str-body"),
    pytest.param(SECRET, BODY, _odd_case(_headers()), id="odd-case-headers"),
    pytest.param(
        SECRET,
        BODY,
        {k.replace("webhook-", "Svix-"): v for k, v in _headers().items()},
        id="svix-aliases",
    ),
    pytest.param(
        SECRET,
        BODY,
        {**_headers(), "webhook-signature": f"v2,abc  v1a,xyz {SIGNATURE}  "},
        id="other-versions-and-spaces",
    ),
    pytest.param(
        SECRET,
        BODY,
        {**_headers(), "webhook-id": "", "svix-id": MSG_ID},
        id="empty-webhook-id-falls-back-to-svix-id",
    ),
    pytest.param(SECRET, BODY, _headers(timestamp=NOW - 300), id="oldest-allowed"),
    pytest.param(SECRET, BODY, _headers(timestamp=NOW + 300), id="newest-allowed"),
]


@pytest.mark.parametrize(("secret", "body", "headers"), ACCEPTED)
def test_valid_inputs_verify(secret: str | bytes, body: bytes | str, headers: Headers) -> None:
    """Prefix-less or raw secrets, str bodies, odd-case or svix-* headers all verify."""
    assert Webhook(secret).verify(body, headers, now=NOW) == json.loads(BODY)


def test_any_one_of_several_signatures_passes() -> None:
    """During rotation a header with one entry per secret verifies with any of those secrets."""
    third = "whsec_" + base64.b64encode(b"\x03" * 24).decode()
    headers = _headers([OTHER_SECRET, SECRET, third])
    for secret in (SECRET, OTHER_SECRET, third):
        assert Webhook(secret).verify(BODY, headers, now=NOW) == json.loads(BODY)
    outsider = "whsec_" + base64.b64encode(b"\x04" * 24).decode()
    with pytest.raises(WebhookVerificationError, match="no matching"):
        Webhook(outsider).verify(BODY, headers, now=NOW)


def test_tolerance_is_configurable() -> None:
    """A smaller tolerance refuses what the default accepts, and zero needs the exact second."""
    headers = _headers(timestamp=NOW - 10)
    Webhook(SECRET).verify(BODY, headers, tolerance=10, now=NOW)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(BODY, headers, tolerance=9, now=NOW)
    Webhook(SECRET).verify(BODY, _headers(), tolerance=0, now=NOW)


# -- inputs that must fail with WebhookVerificationError and nothing else ------------------------


def _with(**changes: Any) -> Headers:
    headers: Headers = _headers()
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            del headers[key]
        else:
            headers[key] = value
    return headers


SIG_B64 = SIGNATURE.removeprefix("v1,")


def _digits(number: int, zero: str) -> str:
    """Spell ``number`` with the ten digits that start at ``zero`` (a non-ASCII digit set)."""
    return "".join(chr(ord(zero) + int(digit)) for digit in str(number))


REJECTED: list[Any] = [
    pytest.param(SECRET, BODY, _with(webhook_id=None), "missing or empty webhook-id", id="no-id"),
    pytest.param(
        SECRET,
        BODY,
        _with(webhook_timestamp=None),
        "missing or empty webhook-timestamp",
        id="no-ts",
    ),
    pytest.param(
        SECRET, BODY, _with(webhook_signature=None), "missing or empty webhook-sig", id="no-sig"
    ),
    pytest.param(SECRET, BODY, _with(webhook_id=""), "missing or empty", id="empty-id"),
    pytest.param(SECRET, BODY, _with(webhook_timestamp=""), "missing or empty", id="empty-ts"),
    pytest.param(SECRET, BODY, _with(webhook_signature=""), "missing or empty", id="empty-sig"),
    pytest.param(SECRET, BODY, _with(webhook_signature="   "), "missing or empty", id="blank-sig"),
    pytest.param(SECRET, BODY, {}, "missing", id="no-headers"),
    pytest.param(SECRET, BODY, _with(webhook_timestamp="soon"), "Unix seconds", id="ts-word"),
    pytest.param(SECRET, BODY, _with(webhook_timestamp=f"-{NOW}"), "Unix seconds", id="ts-neg"),
    pytest.param(SECRET, BODY, _with(webhook_timestamp=f"+{NOW}"), "Unix seconds", id="ts-plus"),
    pytest.param(SECRET, BODY, _with(webhook_timestamp=f"{NOW}.0"), "Unix seconds", id="ts-float"),
    pytest.param(SECRET, BODY, _with(webhook_timestamp="1.7e9"), "Unix seconds", id="ts-exp"),
    pytest.param(
        SECRET,
        BODY,
        _with(webhook_timestamp=_digits(NOW, "\u0660")),
        "Unix seconds",
        id="ts-arabic-indic-digits",
    ),
    pytest.param(
        SECRET,
        BODY,
        _with(webhook_timestamp=_digits(NOW, "\uff10")),
        "Unix seconds",
        id="ts-fullwidth-digits",
    ),
    pytest.param(SECRET, BODY, _with(webhook_timestamp="9" * 5000), "Unix seconds", id="ts-huge"),
    pytest.param(SECRET, BODY, _headers(timestamp=NOW - 301), "too old", id="too-old"),
    pytest.param(SECRET, BODY, _headers(timestamp=0), "too old", id="epoch"),
    pytest.param(SECRET, BODY, _headers(timestamp=NOW + 301), "future", id="too-new"),
    pytest.param(
        SECRET, BODY, _with(webhook_signature="v1" + SIG_B64), "no v1 entry", id="no-comma"
    ),
    pytest.param(SECRET, BODY, _with(webhook_signature="garbage"), "no v1 entry", id="garbage"),
    pytest.param(
        SECRET, BODY, _with(webhook_signature="v2," + SIG_B64), "no v1 entry", id="v2-only"
    ),
    pytest.param(
        SECRET, BODY, _with(webhook_signature="v1a," + SIG_B64), "no v1 entry", id="v1a-only"
    ),
    pytest.param(SECRET, BODY, _with(webhook_signature="v1,"), "no matching", id="empty-value"),
    pytest.param(
        SECRET, BODY, _with(webhook_signature="v1,!!not*base64!!"), "no matching", id="bad-base64"
    ),
    pytest.param(
        SECRET, BODY, _with(webhook_signature="v1,ünïcödé"), "no matching", id="non-ascii-sig"
    ),
    pytest.param(
        SECRET, BODY, _with(webhook_signature=SIGNATURE[:-4]), "no matching", id="truncated"
    ),
    pytest.param(
        SECRET, BODY, _with(webhook_signature=SIGNATURE[:-1]), "no matching", id="bad-padding"
    ),
    pytest.param(
        SECRET, BODY, _with(webhook_signature=SIGNATURE + "AAAA"), "no matching", id="extended"
    ),
    pytest.param(
        SECRET, BODY, _with(webhook_signature="V1," + SIG_B64), "no v1 entry", id="upper-version"
    ),
    pytest.param(SECRET, BODY + b" ", _headers(), "no matching", id="body-appended"),
    pytest.param(SECRET, BODY.replace(b"in_1", b"in_2"), _headers(), "no matching", id="tampered"),
    pytest.param(SECRET, b"", _headers(), "no matching", id="body-dropped"),
    pytest.param(SECRET, BODY, _with(webhook_id="msg_other"), "no matching", id="id-changed"),
    pytest.param(
        SECRET,
        BODY,
        {**_headers(timestamp=NOW - 1000), "webhook-timestamp": str(NOW)},
        "no matching",
        id="timestamp-moved",
    ),
    pytest.param(OTHER_SECRET, BODY, _headers(), "no matching", id="wrong-secret"),
    pytest.param(SECRET.encode(), BODY, _headers(), "pass the secret text", id="text-as-bytes"),
    pytest.param(SECRET, None, _headers(), "raw request bytes", id="body-none"),
    pytest.param(SECRET, json.loads(BODY), _headers(), "raw request bytes", id="body-parsed"),
    pytest.param(SECRET, bytearray(BODY), _headers(), "raw request bytes", id="body-bytearray"),
    pytest.param(SECRET, "\ud800", _headers(), "UTF-8", id="body-lone-surrogate"),
    pytest.param(SECRET, BODY, None, "mapping", id="headers-none"),
    pytest.param(SECRET, BODY, list(_headers().items()), "mapping", id="headers-list"),
    pytest.param(
        SECRET,
        BODY,
        {"webhook-id": MSG_ID, "webhook-timestamp": NOW, "webhook-signature": SIGNATURE},
        "missing or empty webhook-timestamp",
        id="header-value-not-str",
    ),
]


@pytest.mark.parametrize(("secret", "body", "headers", "message"), REJECTED)
def test_bad_inputs_raise_only_webhook_verification_error(
    secret: Any, body: Any, headers: Any, message: str
) -> None:
    """Each malformed, stale or wrong input raises WebhookVerificationError with a clear reason."""
    with pytest.raises(WebhookVerificationError, match=message) as caught:
        Webhook(secret).verify(body, headers, now=NOW)
    assert type(caught.value) is WebhookVerificationError
    _assert_secret_not_leaked(caught.value)


GARBAGE_SECRETS: list[Any] = [
    pytest.param("", id="empty"),
    pytest.param("whsec_", id="prefix-only"),
    pytest.param("   ", id="blank"),
    pytest.param("not a secret at all!", id="words"),
    pytest.param("whsec_" + base64.b64encode(bytes(23)).decode(), id="23-bytes"),
    pytest.param("whsec_AAAAA", id="impossible-length"),
    pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS-", id="urlsafe-char"),
    pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSé", id="non-ascii"),
    pytest.param("whsec_MfKQ9r8GKYqrTwjU=PD8ILPZIo2LaLaSw", id="padding-inside"),
    pytest.param("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="upper-prefix"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(b"short key", id="short-bytes"),
    pytest.param(None, id="none"),
    pytest.param(1234, id="int"),
]


@pytest.mark.parametrize("secret", GARBAGE_SECRETS)
def test_garbage_secrets_are_refused(secret: Any) -> None:
    """A secret that is not a usable key raises WebhookVerificationError in both entry points."""
    with pytest.raises(WebhookVerificationError, match="secret") as caught:
        Webhook(secret)
    assert type(caught.value) is WebhookVerificationError
    if isinstance(secret, str) and len(secret.strip()) > len("whsec_"):
        assert secret.strip() not in "".join(traceback.format_exception(caught.value))
    with pytest.raises(WebhookVerificationError, match="secret"):
        verify_github(secret, BODY, github_signature(SECRET, BODY))


@pytest.mark.parametrize(
    ("tolerance", "now"),
    [(-1, NOW), ("300", NOW), (True, NOW), (300.0, NOW), (300, float(NOW)), (300, str(NOW))],
)
def test_bad_tolerance_or_clock_is_refused(tolerance: Any, now: Any) -> None:
    """A negative or non-int tolerance, or a non-int now, raises WebhookVerificationError."""
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, _headers(), tolerance=tolerance, now=now)


def test_verified_body_that_is_not_json_is_refused_by_verify_only() -> None:
    """verify_raw returns authentic non-JSON bytes while verify raises WebhookVerificationError."""
    body = b"not json \xff"
    headers = _headers(body=body)
    assert Webhook(SECRET).verify_raw(body, headers, now=NOW) == body
    with pytest.raises(WebhookVerificationError, match="not valid JSON"):
        Webhook(SECRET).verify(body, headers, now=NOW)
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(WebhookVerificationError, match="not valid JSON"):
        Webhook(SECRET).verify(deep, _headers(body=deep), now=NOW)


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body"),
    [(None, NOW, BODY), (MSG_ID, -1, BODY), (MSG_ID, "1700000000", BODY), (MSG_ID, NOW, None)],
)
def test_sign_refuses_wrong_argument_types(msg_id: Any, timestamp: Any, body: Any) -> None:
    """sign() raises WebhookVerificationError for a non-str id, bad timestamp or non-bytes body."""
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).sign(msg_id, timestamp, body)


# -- GitHub-style header --------------------------------------------------------------------------


def test_github_uses_the_decoded_key_like_the_sender() -> None:
    """verify_github keys with the decoded secret, so a GitHub-style text-keyed HMAC fails."""
    decoded = "sha256=" + hmac.new(KEY, BODY, hashlib.sha256).hexdigest()
    assert decoded == github_signature(SECRET, BODY)
    verify_github(SECRET, BODY, decoded)
    verify_github(SECRET_B64, BODY.decode(), decoded)
    text_keyed = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_github(SECRET, BODY, text_keyed)


def test_github_accepts_upper_case_hex_and_surrounding_space() -> None:
    """Hex digits and the algorithm name are case-insensitive; outer whitespace is ignored."""
    header = github_signature(SECRET, BODY)
    verify_github(SECRET, BODY, " SHA256=" + header.removeprefix("sha256=").upper() + " ")


GITHUB_DIGEST = github_signature(SECRET, BODY).removeprefix("sha256=")


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        pytest.param(BODY, "", "not 'sha256=<hex>'", id="empty"),
        pytest.param(BODY, GITHUB_DIGEST, "not 'sha256=<hex>'", id="no-prefix"),
        pytest.param(BODY, "sha1=" + GITHUB_DIGEST, "not 'sha256=<hex>'", id="sha1"),
        pytest.param(BODY, "sha256:" + GITHUB_DIGEST, "not 'sha256=<hex>'", id="colon"),
        pytest.param(BODY, "sha256=" + GITHUB_DIGEST[:-2], "64 hex", id="truncated"),
        pytest.param(BODY, "sha256=" + GITHUB_DIGEST + "00", "64 hex", id="extended"),
        pytest.param(BODY, "sha256=" + "g" * 64, "64 hex", id="non-hex"),
        pytest.param(BODY, "sha256=" + "\u0660" * 64, "64 hex", id="unicode-digits"),
        pytest.param(BODY, "sha256=" + "0" * 64, "does not match", id="zeros"),
        pytest.param(BODY + b" ", "sha256=" + GITHUB_DIGEST, "does not match", id="tampered"),
        pytest.param(BODY, None, "must be str", id="header-none"),
        pytest.param(None, "sha256=" + GITHUB_DIGEST, "raw request bytes", id="body-none"),
    ],
)
def test_github_bad_inputs_raise_only_webhook_verification_error(
    body: Any, header: Any, message: str
) -> None:
    """Malformed or wrong GitHub-style headers raise WebhookVerificationError with a reason."""
    with pytest.raises(WebhookVerificationError, match=message) as caught:
        verify_github(SECRET, body, header)
    assert type(caught.value) is WebhookVerificationError
    _assert_secret_not_leaked(caught.value)


def test_github_wrong_secret_fails() -> None:
    """A signature made with another secret does not verify."""
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_github(OTHER_SECRET, BODY, github_signature(SECRET, BODY))


# -- the error type, secrecy and independence ---------------------------------------------------


def test_error_is_a_plain_exception_with_a_default_message() -> None:
    """WebhookVerificationError stands alone (no homing base class) and defaults to its doc."""
    assert WebhookVerificationError.__mro__[1:] == (Exception, BaseException, object)
    assert str(WebhookVerificationError()) == "The webhook could not be verified."


def test_repr_does_not_show_the_key() -> None:
    """The Webhook repr hides the secret and the key."""
    text = repr(Webhook(SECRET))
    assert SECRET_B64 not in text
    assert KEY.hex() not in text
    assert "***" in text


def test_verify_module_imports_only_the_standard_library() -> None:
    """Every import in verify.py is a standard library module, so the file can be copied alone."""
    tree = ast.parse(Path(homing.verify.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add((node.module or "").split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def test_importing_homing_verify_loads_no_server_dependencies() -> None:
    """A fresh interpreter importing homing.verify loads no web, database or HTTP packages."""
    code = "import json, sys, homing.verify; print(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    loaded = set(json.loads(output))
    tops = {name.split(".")[0] for name in loaded}
    forbidden = {"fastapi", "pydantic", "starlette", "uvicorn", "asyncpg", "aiosqlite", "aiohttp"}
    assert not tops & (forbidden | {"jsonschema", "httpx"})
    assert {name for name in loaded if name.split(".")[0] == "homing"} == {
        "homing",
        "homing.verify",
    }


def test_a_copy_of_the_file_works_on_its_own(tmp_path: Path) -> None:
    """verify.py copied under another name, outside the package, verifies a vector."""
    copy = tmp_path / "receiver_verify.py"
    shutil.copyfile(homing.verify.__file__, copy)
    spec = importlib.util.spec_from_file_location("receiver_verify", copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    case = _vectors()[0]
    headers = {
        "webhook-id": case["msg_id"],
        "webhook-timestamp": str(case["timestamp"]),
        "webhook-signature": case["signature"],
    }
    verify: Callable[..., Any] = module.Webhook(case["secret"]).verify
    assert verify(case["body"].encode(), headers, now=case["timestamp"]) == json.loads(case["body"])
