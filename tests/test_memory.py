"""engine.memory: when the engine trims the C heap, and that a trim gives memory back."""

from __future__ import annotations

import ctypes
import sys

import pytest

from engine import memory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(quiet=5.0, max_interval=300.0):
    clock, counter = Clock(), {"requests": 0}
    trimmer = memory.Trimmer(lambda: counter["requests"], quiet=quiet, max_interval=max_interval, clock=clock)
    return trimmer, clock, counter


def test_an_engine_that_never_served_is_never_trimmed():
    trimmer, clock, _ = make()
    clock.now += 3600
    assert not trimmer.due()


def test_trims_once_after_requests_stop():
    trimmer, clock, counter = make(quiet=5.0)
    counter["requests"] = 40
    assert not trimmer.due()          # busy right now
    clock.now += 4.9
    assert not trimmer.due()          # not quiet long enough
    clock.now += 0.2
    assert trimmer.due()
    trimmer.done()
    clock.now += 60
    assert not trimmer.due()          # still idle: nothing new to give back
    counter["requests"] += 1
    assert not trimmer.due()
    clock.now += 5
    assert trimmer.due() and trimmer.trims == 1


def test_continuous_load_still_trims_every_max_interval():
    trimmer, clock, counter = make(quiet=5.0, max_interval=300.0)
    for _ in range(299):              # a request every second: never quiet
        clock.now += 1
        counter["requests"] += 1
        assert not trimmer.due()
    clock.now += 1
    counter["requests"] += 1
    assert trimmer.due()


def rss_anon_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(memory._malloc_trim is None, reason="needs glibc's malloc_trim")
def test_trim_returns_free_pages_below_a_block_still_in_use():
    """The case the engine is in: freed memory under live blocks that the heap cannot shrink past."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallopt(-1, 128 * 1024)      # M_TRIM_THRESHOLD at its default: free() trims only the top
    blocks = [libc.malloc(4000) for _ in range(10_000)]   # ~40 MB of heap, well under mmap's threshold
    pin = libc.malloc(4000)           # a block still in use, above all of them
    for block in blocks:
        ctypes.memset(block, 1, 4000)  # touch the pages so they are resident
    for block in blocks:
        libc.free(block)
    before = rss_anon_kb()
    assert memory.trim() is True
    after = rss_anon_kb()
    libc.free(pin)
    assert before - after > 20_000, (before, after)  # most of the ~40 MB freed went back


def test_trim_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", None)
    assert memory.trim() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc is Linux")
def test_finds_malloc_trim_on_glibc():
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert memory._malloc_trim is not None
