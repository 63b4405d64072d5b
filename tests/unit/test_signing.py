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

from homing.signing import (
    SECRET_PREFIX,
    InvalidSecretError,
    generate_secret,
    github_signature,
    is_valid_secret,
    parse_secret,
    redact_headers,
    sign,
    signature_header,
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


# -- several secrets ---------------------------------------------------------------------------


def test_signature_header_has_one_entry_per_secret_in_order() -> None:
    """Two secrets give two space-separated v1 entries, in the order given."""
    header = signature_header([SECRET, OTHER_SECRET], MSG_ID, NOW, BODY)
    assert header.split(" ") == [
        sign(SECRET, MSG_ID, NOW, BODY),
        sign(OTHER_SECRET, MSG_ID, NOW, BODY),
    ]


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


def test_standardwebhooks_signs_exactly_as_we_do() -> None:
    """A signature made by standardwebhooks.Webhook.sign equals ours, byte for byte."""
    now = int(time.time())
    stamp = datetime.fromtimestamp(now, tz=UTC)
    signature = standardwebhooks.webhooks.Webhook(SECRET).sign(MSG_ID, stamp, BODY.decode())
    assert signature == sign(SECRET, MSG_ID, now, BODY)


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
