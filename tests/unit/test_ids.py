"""Tests for homing.ids: Svix-style prefixed, time-sortable identifiers."""

from __future__ import annotations

import os
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


def test_random_part_is_never_reused_across_buffer_refills() -> None:
    """Ids take their random bytes from a buffer refilled a few KiB at a time: 2,000 ids (several
    refills) still have 2,000 distinct random parts."""
    tails = {new_id("x", 0)[-20:] for _ in range(2000)}
    assert len(tails) == 2000


def test_forked_child_does_not_repeat_the_parents_ids() -> None:
    """A child process starts with a copy of the parent's buffer: it must fetch its own bytes
    rather than hand out the ids the parent is about to make."""
    new_id("x", 0)  # the buffer is filled and partly used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave at once
        os.write(write, " ".join(new_id("x", 0) for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    parent = {new_id("x", 0) for _ in range(5)}
    assert len(child) == 5
    assert not child & parent
