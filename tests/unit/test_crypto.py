"""Endpoint secrets at rest: ``SecretBox`` (AES-256-GCM under a key derived from the main
secret) and the ``reveal``/``conceal`` helpers the storage uses."""

from __future__ import annotations

import base64

import pytest

from homing.crypto import PREFIX, SecretBox, conceal, reveal
from homing.errors import StorageError

MAIN = "correct horse battery staple 0123"
OTHER = "an entirely different main secret"
KEY = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


@pytest.fixture(scope="module")
def box() -> SecretBox:
    """One box for the module (deriving the key takes tens of milliseconds)."""
    return SecretBox(MAIN)


@pytest.mark.parametrize("plaintext", [KEY, "", "Zo\u00eb \u2603 \U0001f600", "x" * 10_000])
def test_seal_then_open_gives_the_plaintext_back(box: SecretBox, plaintext: str) -> None:
    """Whatever is sealed opens to exactly the same text."""
    sealed = box.seal(plaintext)
    assert sealed.startswith(PREFIX)
    assert box.open(sealed) == plaintext


def test_sealed_text_does_not_contain_the_plaintext(box: SecretBox) -> None:
    """The stored form shows neither the key nor its base64 body."""
    sealed = box.seal(KEY)
    assert KEY not in sealed
    assert KEY.removeprefix("whsec_") not in sealed


def test_a_fresh_box_with_the_same_main_secret_opens_it(box: SecretBox) -> None:
    """The key is derived from the main secret alone, so a restarted process reads old values."""
    assert SecretBox(MAIN).open(box.seal(KEY)) == KEY


def test_each_seal_uses_a_new_nonce(box: SecretBox) -> None:
    """Sealing the same plaintext twice gives different ciphertexts (and nonces)."""
    sealed = [box.seal(KEY) for _ in range(20)]
    assert len(set(sealed)) == len(sealed)
    nonces = {base64.b64decode(s[len(PREFIX) :])[:12] for s in sealed}
    assert len(nonces) == len(sealed)
    assert {box.open(s) for s in sealed} == {KEY}


def test_a_wrong_main_secret_cannot_open_it(box: SecretBox) -> None:
    """A box made from another main secret raises StorageError naming the likely cause."""
    with pytest.raises(StorageError, match="HOMING_MAIN_SECRET") as failed:
        SecretBox(OTHER).open(box.seal(KEY))
    assert KEY not in str(failed.value)
    assert OTHER not in str(failed.value)


def _flip_last_byte(sealed: str) -> str:
    raw = bytearray(base64.b64decode(sealed[len(PREFIX) :]))
    raw[-1] ^= 0x01
    return PREFIX + base64.b64encode(bytes(raw)).decode()


def _flip_first_ciphertext_byte(sealed: str) -> str:
    raw = bytearray(base64.b64decode(sealed[len(PREFIX) :]))
    raw[12] ^= 0x80
    return PREFIX + base64.b64encode(bytes(raw)).decode()


def _flip_nonce_byte(sealed: str) -> str:
    raw = bytearray(base64.b64decode(sealed[len(PREFIX) :]))
    raw[0] ^= 0x01
    return PREFIX + base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "tamper",
    [
        _flip_last_byte,
        _flip_first_ciphertext_byte,
        _flip_nonce_byte,
        lambda s: s[:-8] + "AAAAAAA=",
        lambda s: s[: len(PREFIX) + 20],
        lambda s: PREFIX,
        lambda s: PREFIX + "!!!not base64!!!",
        lambda s: s + "AAAA",
    ],
    ids=["tag", "ciphertext", "nonce", "tail", "truncated", "empty", "not-base64", "extended"],
)
def test_tampered_ciphertext_raises_storage_error(box: SecretBox, tamper: object) -> None:
    """Any change to a sealed value is detected (GCM tag) and reported as StorageError."""
    assert callable(tamper)
    with pytest.raises(StorageError):
        box.open(tamper(box.seal(KEY)))


@pytest.mark.parametrize("stored", [KEY, "", "plain text", "enc2:looks-like-but-is-not"])
def test_plaintext_passes_through_open(box: SecretBox, stored: str) -> None:
    """A value without the ``enc1:`` prefix (written before encryption was on) is returned as is."""
    assert box.open(stored) == stored


def test_reveal_without_a_box_refuses_an_encrypted_value(box: SecretBox) -> None:
    """Without a box an encrypted value is a StorageError, never handed out as if it were a key."""
    with pytest.raises(StorageError, match="HOMING_MAIN_SECRET"):
        reveal(box.seal(KEY), None)


def test_reveal_and_conceal_without_a_box_are_the_identity() -> None:
    """With encryption off, plaintext is stored and read as it is."""
    assert conceal(KEY, None) == KEY
    assert reveal(KEY, None) == KEY


def test_reveal_and_conceal_with_a_box_round_trip(box: SecretBox) -> None:
    """``conceal`` encrypts with a box and ``reveal`` decrypts (and reads plaintext too)."""
    stored = conceal(KEY, box)
    assert stored.startswith(PREFIX)
    assert reveal(stored, box) == KEY
    assert reveal(KEY, box) == KEY


def test_repr_and_str_hide_the_key(box: SecretBox) -> None:
    """Neither ``repr`` nor ``str`` of a box shows the main secret or anything derived from it."""
    assert repr(box) == "SecretBox(***)"
    assert str(box) == "SecretBox(***)"
    assert MAIN not in repr(box)
    assert MAIN not in repr([box]) and MAIN not in f"{box!r} {box}"


@pytest.mark.parametrize("main", ["", "short", "x" * 15])
def test_a_short_main_secret_is_refused(main: str) -> None:
    """A main secret under 16 characters raises ValueError (and the message does not echo it)."""
    with pytest.raises(ValueError, match="at least 16") as refused:
        SecretBox(main)
    assert main == "" or main not in str(refused.value)


def test_sixteen_characters_are_enough() -> None:
    """The minimum length itself is accepted."""
    small = SecretBox("y" * 16)
    assert small.open(small.seal(KEY)) == KEY
