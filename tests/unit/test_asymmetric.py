"""Ed25519 endpoint keys: v1a signatures that verify with the public key only."""

from __future__ import annotations

import base64

import pytest

from homing import asymmetric
from homing.signing import InvalidSecretError, generate_secret, signature_header


def test_generated_key_signs_what_its_public_key_verifies() -> None:
    """A v1a signature made with a whsk_ key verifies with its whpk_ public key."""
    key = asymmetric.generate_signing_key()
    public = asymmetric.public_key(key)
    assert key.startswith("whsk_") and public.startswith("whpk_")
    entry = asymmetric.sign(key, "msg_1", 1_700_000_000, b'{"a":1}')
    assert entry.startswith("v1a,")
    assert asymmetric.verify(public, "msg_1", 1_700_000_000, b'{"a":1}', entry)


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body"),
    [
        ("msg_2", 1_700_000_000, b'{"a":1}'),
        ("msg_1", 1_700_000_001, b'{"a":1}'),
        ("msg_1", 1_700_000_000, b'{"a":2}'),
    ],
)
def test_any_change_breaks_the_signature(msg_id: str, timestamp: int, body: bytes) -> None:
    """Changing the id, the timestamp or the body makes the signature fail."""
    key = asymmetric.generate_signing_key()
    entry = asymmetric.sign(key, "msg_1", 1_700_000_000, b'{"a":1}')
    assert not asymmetric.verify(asymmetric.public_key(key), msg_id, timestamp, body, entry)


def test_another_key_does_not_verify() -> None:
    """A signature does not verify with someone else's public key."""
    entry = asymmetric.sign(asymmetric.generate_signing_key(), "m", 1, b"{}")
    assert not asymmetric.verify(
        asymmetric.public_key(asymmetric.generate_signing_key()), "m", 1, b"{}", entry
    )


def test_header_mixes_hmac_and_ed25519_entries_in_key_order() -> None:
    """During a rotation between kinds, the header carries one entry per key, in order."""
    hmac_key, ed_key = generate_secret(), asymmetric.generate_signing_key()
    header = signature_header([ed_key, hmac_key], "m", 5, b"{}")
    first, second = header.split(" ")
    assert first.startswith("v1a,") and second.startswith("v1,")
    assert asymmetric.verify(asymmetric.public_key(ed_key), "m", 5, b"{}", header)


@pytest.mark.parametrize(
    "bad",
    ["whsk_", "whsk_!!!!", "whsk_" + base64.b64encode(b"x" * 31).decode(), "whsec_abc", "plain"],
)
def test_bad_signing_keys_are_refused(bad: str) -> None:
    """Malformed or short whsk_ keys raise InvalidSecretError."""
    with pytest.raises(InvalidSecretError):
        asymmetric.check_signing_key(bad)
