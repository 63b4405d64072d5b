"""Tests for homing.ids: Svix-style prefixed, time-sortable identifiers."""

from __future__ import annotations

import string

from homing.ids import id_floor, new_id

BASE62 = set(string.digits + string.ascii_letters)
NOW_MS = 1_700_000_000_000


def test_id_has_prefix_and_27_base62_characters() -> None:
    """An id is the prefix, an underscore and 27 base62 characters."""
    value = new_id("msg", now_ms=NOW_MS)
    prefix, _, body = value.partition("_")
    assert prefix == "msg"
    assert len(body) == 27
    assert set(body) <= BASE62


def test_id_without_now_uses_the_clock() -> None:
    """Without now_ms the id still has the right shape."""
    value = new_id("ep")
    assert value.startswith("ep_")
    assert len(value) == len("ep_") + 27


def test_later_ids_sort_after_earlier_ones() -> None:
    """Ids made one millisecond apart sort by time whatever their random bytes."""
    for _ in range(200):
        assert new_id("msg", now_ms=NOW_MS) < new_id("msg", now_ms=NOW_MS + 1)
    times = [0, 1, 61, 62, 3843, NOW_MS, NOW_MS + 1000, 2**48 - 1]
    ids = [new_id("msg", now_ms=ms) for ms in times]
    assert sorted(reversed(ids)) == ids


def test_ids_are_unique() -> None:
    """1000 ids made in the same millisecond are all different."""
    assert len({new_id("msg", now_ms=NOW_MS) for _ in range(1000)}) == 1000


def test_id_floor_is_below_every_id_of_that_millisecond() -> None:
    """id_floor(ms) sorts at or below ids of ms and above ids of ms - 1."""
    floor = id_floor("msg", NOW_MS)
    assert floor.startswith("msg_")
    assert len(floor) == len("msg_") + 27
    for _ in range(200):
        assert new_id("msg", now_ms=NOW_MS - 1) < floor <= new_id("msg", now_ms=NOW_MS)
