"""Tests for homing.signing: format, verification, secrets and cross-checks with PyPI libraries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks.webhooks
import svix.webhooks

from homing.errors import HomingError
from homing.signing import (
    SECRET_PREFIX,
    InvalidSecretError,
    SignatureError,
    generate_secret,
    github_signature,
    is_valid_secret,
    parse_secret,
    redact_headers,
    sign,
    signature_header,
    verify,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "signatures.json"

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + base64.b64encode(b"\x01" * 32).decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
NOW = 1_700_000_000
BODY = b'{"type":"invoice.paid","data":{"id":"in_1"}}'


def _headers(secrets: list[str], timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, MSG_ID, timestamp, body),
    }


def _vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
    return cases


# -- sign / verify ---------------------------------------------------------------------------


def test_sign_matches_a_direct_hmac_computation() -> None:
    """sign() returns v1, plus the base64 HMAC-SHA256 of "id.timestamp." followed by the body."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{MSG_ID}.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(SECRET, MSG_ID, NOW, BODY) == "v1," + base64.b64encode(digest).decode()


def test_sign_then_verify_round_trips() -> None:
    """A header made by signature_header verifies with the same secret, time and body."""
    headers = _headers([SECRET])
    assert headers["webhook-signature"] == sign(SECRET, MSG_ID, NOW, BODY)
    verify(SECRET, headers, BODY, now=NOW)


def test_verify_accepts_timestamps_at_the_edge_of_tolerance() -> None:
    """Timestamps exactly tolerance seconds old or ahead are still accepted."""
    verify(SECRET, _headers([SECRET], NOW - 300), BODY, now=NOW)
    verify(SECRET, _headers([SECRET], NOW + 300), BODY, now=NOW)
    verify(SECRET, _headers([SECRET], NOW - 10), BODY, now=NOW, tolerance=10)


def test_verify_header_names_are_case_insensitive() -> None:
    """Header names in any case are found."""
    headers = {name.title(): value for name, value in _headers([SECRET]).items()}
    assert "Webhook-Signature" in headers
    verify(SECRET, headers, BODY, now=NOW)


def test_verify_accepts_svix_header_names() -> None:
    """The svix-id, svix-timestamp and svix-signature spellings are accepted."""
    headers = {
        name.replace("webhook-", "Svix-"): value for name, value in _headers([SECRET]).items()
    }
    verify(SECRET, headers, BODY, now=NOW)


def test_verify_accepts_a_bare_base64_secret() -> None:
    """The same key without the whsec_ prefix verifies the same signature."""
    verify(SECRET.removeprefix(SECRET_PREFIX), _headers([SECRET]), BODY, now=NOW)


def test_verify_skips_unknown_versions_and_extra_spaces() -> None:
    """Entries of other versions are ignored and runs of spaces are tolerated."""
    headers = _headers([SECRET])
    headers["webhook-signature"] = "v2,abc  v1a,xyz   " + headers["webhook-signature"] + " "
    verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_a_tampered_body() -> None:
    """Changing one byte of the body makes verification fail."""
    with pytest.raises(SignatureError, match="no matching"):
        verify(SECRET, _headers([SECRET]), BODY.replace(b"in_1", b"in_2"), now=NOW)


def test_verify_rejects_a_wrong_secret() -> None:
    """A signature made with another secret does not verify."""
    with pytest.raises(SignatureError, match="no matching"):
        verify(OTHER_SECRET, _headers([SECRET]), BODY, now=NOW)


def test_verify_rejects_a_tampered_id() -> None:
    """The message id is covered by the signature."""
    headers = _headers([SECRET])
    headers["webhook-id"] = "msg_other"
    with pytest.raises(SignatureError, match="no matching"):
        verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [(NOW - 301, "too old"), (NOW + 301, "future"), (0, "too old")],
)
def test_verify_rejects_timestamps_outside_tolerance(timestamp: int, message: str) -> None:
    """A correctly signed message older or newer than the tolerance is refused."""
    with pytest.raises(SignatureError, match=message):
        verify(SECRET, _headers([SECRET], timestamp), BODY, now=NOW)


def test_verify_rejects_a_replayed_message_with_a_new_timestamp() -> None:
    """Moving the timestamp header forward breaks the signature."""
    headers = _headers([SECRET], NOW - 1000)
    headers["webhook-timestamp"] = str(NOW)
    with pytest.raises(SignatureError, match="no matching"):
        verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": None}, "missing webhook-id"),
        ({"webhook-timestamp": None}, "missing webhook-timestamp"),
        ({"webhook-signature": None}, "missing webhook-signature"),
        ({"webhook-id": ""}, "missing webhook-id"),
        ({"webhook-timestamp": "soon"}, "not Unix seconds"),
        ({"webhook-timestamp": "1700000000.5"}, "not Unix seconds"),
        ({"webhook-timestamp": "-1700000000"}, "not Unix seconds"),
        ({"webhook-timestamp": "\u0661\u0667"}, "not Unix seconds"),
        ({"webhook-timestamp": "9" * 5000}, "not Unix seconds"),
        ({"webhook-signature": "garbage"}, "no matching"),
        ({"webhook-signature": "v1,"}, "no matching"),
        ({"webhook-signature": "v1,not base64 at all \u00e9"}, "no matching"),
        ({"webhook-signature": "   "}, "no matching"),
    ],
)
def test_verify_rejects_malformed_headers(change: dict[str, str | None], message: str) -> None:
    """Missing, empty or malformed headers raise SignatureError, never another exception."""
    headers: dict[str, str] = _headers([SECRET])
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(SignatureError, match=message):
        verify(SECRET, headers, BODY, now=NOW)


def test_signature_error_is_a_homing_error_with_a_default_message() -> None:
    """SignatureError and InvalidSecretError sit under HomingError and default to their doc."""
    assert issubclass(SignatureError, HomingError)
    assert issubclass(InvalidSecretError, HomingError)
    assert str(SignatureError()) == "The webhook signature could not be verified."


def test_verify_with_an_invalid_secret_raises_invalid_secret_error() -> None:
    """A bad secret passed to verify is a configuration fault, reported as InvalidSecretError."""
    with pytest.raises(InvalidSecretError):
        verify("whsec_short", _headers([SECRET]), BODY, now=NOW)


# -- several secrets ---------------------------------------------------------------------------


def test_signature_header_has_one_entry_per_secret_in_order() -> None:
    """Two secrets give two space-separated v1 entries, in the order given."""
    header = signature_header([SECRET, OTHER_SECRET], MSG_ID, NOW, BODY)
    assert header.split(" ") == [
        sign(SECRET, MSG_ID, NOW, BODY),
        sign(OTHER_SECRET, MSG_ID, NOW, BODY),
    ]


def test_each_of_several_secrets_verifies_on_its_own() -> None:
    """A header signed with two secrets verifies with either, and not with a third."""
    headers = _headers([SECRET, OTHER_SECRET])
    verify(SECRET, headers, BODY, now=NOW)
    verify(OTHER_SECRET, headers, BODY, now=NOW)
    with pytest.raises(SignatureError):
        verify(generate_secret(), headers, BODY, now=NOW)


def test_signature_header_needs_a_secret() -> None:
    """An empty list of secrets is refused rather than producing an empty header."""
    with pytest.raises(InvalidSecretError, match="at least one"):
        signature_header([], MSG_ID, NOW, BODY)


# -- cross-checks with the PyPI libraries -------------------------------------------------------


def test_our_header_verifies_with_standardwebhooks() -> None:
    """standardwebhooks.Webhook.verify accepts a header made by signature_header."""
    now = int(time.time())
    headers = _headers([OTHER_SECRET, SECRET], now)
    assert standardwebhooks.webhooks.Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


def test_our_header_verifies_with_svix() -> None:
    """svix.webhooks.Webhook.verify accepts a header made by signature_header, svix names too."""
    now = int(time.time())
    headers = _headers([SECRET], now)
    svix.webhooks.Webhook(SECRET).verify(BODY, headers)
    svix_headers = {k.replace("webhook-", "svix-"): v for k, v in headers.items()}
    svix.webhooks.Webhook(SECRET).verify(BODY, svix_headers)


def test_libraries_reject_our_header_for_a_tampered_body() -> None:
    """The cross-check is meaningful: the libraries refuse a body we did not sign."""
    headers = _headers([SECRET], int(time.time()))
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.webhooks.Webhook(SECRET).verify(BODY + b" ", headers)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(SECRET).verify(BODY + b" ", headers)


def test_standardwebhooks_signature_verifies_with_ours() -> None:
    """A signature made by standardwebhooks.Webhook.sign passes our verify."""
    now = int(time.time())
    stamp = datetime.fromtimestamp(now, tz=UTC)
    signature = standardwebhooks.webhooks.Webhook(SECRET).sign(MSG_ID, stamp, BODY.decode())
    assert signature == sign(SECRET, MSG_ID, now, BODY)
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(now), "webhook-signature": signature}
    verify(SECRET, headers, BODY, now=now)


# -- secrets -----------------------------------------------------------------------------------


def test_generate_secret_format_and_key_length() -> None:
    """A generated secret is whsec_ plus 32 base64 characters decoding to 24 bytes."""
    secret = generate_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(secret) == len(SECRET_PREFIX) + 32
    assert len(parse_secret(secret)) == 24
    assert base64.b64decode(secret.removeprefix(SECRET_PREFIX)) == parse_secret(secret)
    assert is_valid_secret(secret)


def test_generate_secret_is_random() -> None:
    """Generated secrets do not repeat."""
    assert len({generate_secret() for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("secret", "key_length"),
    [
        (SECRET, 24),
        (SECRET.removeprefix(SECRET_PREFIX), 24),
        ("whsec_" + base64.b64encode(bytes(range(32))).decode(), 32),
        ("whsec_" + base64.b64encode(bytes(25)).decode(), 25),
        ("whsec_" + base64.b64encode(bytes(75)).decode(), 75),
    ],
)
def test_parse_secret_accepts_good_secrets(secret: str, key_length: int) -> None:
    """Prefixed and bare canonical base64 of 24 to 75 bytes decode to the key bytes."""
    key = parse_secret(secret)
    assert len(key) == key_length
    assert key == base64.b64decode(secret.removeprefix(SECRET_PREFIX))


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("", id="empty"),
        pytest.param("whsec_", id="prefix-only"),
        pytest.param("whsec_" + base64.b64encode(bytes(23)).decode(), id="23-bytes"),
        pytest.param("whsec_" + base64.b64encode(bytes(76)).decode(), id="76-bytes"),
        pytest.param("whsec_" + "A" * 101, id="too-long-text"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS-", id="urlsafe-char"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", id="bad-char"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw", id="space"),
        pytest.param(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="leading-space"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", id="trailing-newline"),
        pytest.param("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="upper-prefix"),
        pytest.param("whsec_whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="double-prefix"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAA", id="bad-padding"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw==", id="surplus-padding"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA=A", id="padding-inside"),
        pytest.param("whsec_" + "A" * 42 + "B=", id="non-canonical-bits"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS\u00e9", id="non-ascii"),
    ],
)
def test_parse_secret_rejects_bad_secrets(secret: str) -> None:
    """Wrong charset, bad or non-canonical base64 and wrong key lengths raise InvalidSecretError."""
    with pytest.raises(InvalidSecretError):
        parse_secret(secret)
    assert not is_valid_secret(secret)


def test_sign_refuses_an_invalid_secret() -> None:
    """Signing with an invalid secret raises instead of using a weak key."""
    with pytest.raises(InvalidSecretError):
        sign("whsec_tooShort", MSG_ID, NOW, BODY)
    with pytest.raises(InvalidSecretError):
        github_signature("whsec_tooShort", BODY)


# -- GitHub-style signature --------------------------------------------------------------------


def test_github_signature_uses_the_decoded_key() -> None:
    """github_signature is sha256= plus the hex HMAC of the body under the decoded secret."""
    key = parse_secret(SECRET)
    expected = "sha256=" + hmac.new(key, BODY, hashlib.sha256).hexdigest()
    assert github_signature(SECRET, BODY) == expected
    assert github_signature(SECRET, BODY) != (
        "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    )


# -- vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _vectors(), ids=lambda case: str(case["description"]))
def test_vectors_match_the_sender(case: dict[str, Any]) -> None:
    """The fixed vectors, computed independently, equal what sign and github_signature produce."""
    body = case["body"].encode("utf-8")
    assert sign(case["secret"], case["msg_id"], case["timestamp"], body) == case["signature"]
    assert github_signature(case["secret"], body) == case["github_signature"]
    headers = {
        "webhook-id": case["msg_id"],
        "webhook-timestamp": str(case["timestamp"]),
        "webhook-signature": case["signature"],
    }
    verify(case["secret"], headers, body, now=case["timestamp"])


def test_vectors_file_has_several_cases() -> None:
    """The shared vector file holds at least the four cases the receiver tests rely on."""
    cases = _vectors()
    assert len(cases) >= 4
    assert {"secret", "msg_id", "timestamp", "body", "signature", "github_signature"} <= set(
        cases[0]
    )


# -- redaction ---------------------------------------------------------------------------------


def test_redact_headers_hides_credentials_and_keeps_the_rest() -> None:
    """Signature, authorization, secret and token headers become *** and others stay."""
    headers = {
        "Content-Type": "application/json",
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(NOW),
        "Webhook-Signature": "v1,abc",
        "X-Hub-Signature-256": "sha256=abc",
        "Authorization": "Bearer t0k3n",
        "X-Client-Secret": "s3cret",
        "x-access-token": "t0k3n",
        "X-Api-Key": "k3y",
        "User-Agent": "homing",
    }
    redacted = redact_headers(headers)
    assert redacted == {
        "Content-Type": "application/json",
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(NOW),
        "Webhook-Signature": "***",
        "X-Hub-Signature-256": "***",
        "Authorization": "***",
        "X-Client-Secret": "***",
        "x-access-token": "***",
        "X-Api-Key": "***",
        "User-Agent": "homing",
    }
    assert list(redacted) == list(headers)
    assert headers["Authorization"] == "Bearer t0k3n"
