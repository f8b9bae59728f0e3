"""Give the C heap's free memory back to the OS once the engine goes quiet (glibc only).

Why (docs/soak.md, "Memory growth"): with Python objects and the allocator's live bytes
flat, the engine's RSS still crept up by about 0.15 MB per 1,000 requests, because glibc
keeps memory that has been freed: its heap only shrinks from the top, so one long-lived
block near the top keeps every free page below it resident. `malloc_trim(0)` hands those
free pages back (madvise), whatever lies above them. In a 30,000-request soak, trimming at
the idle checkpoints took the growth over the second half from +2.2 MB to +0.2 MB. (It does
nothing for pymalloc's arenas, which are not on the C heap: see docs/soak.md.)

It is not free (a walk over the heap: 1.5 to 7.5 ms for a fragmented 40 MB heap here) and
pages given back must be faulted in again when reused, so it runs in the executor, off the
event loop, once the engine has been quiet for a while after handling requests, and, under
continuous load, every `max_interval` seconds. Without glibc (musl, macOS) there is nothing
to call, and nothing is scheduled.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import time
from typing import Callable

QUIET_SECONDS = 5.0      # no new request for this long: trim
MAX_INTERVAL = 300.0     # under continuous load, still trim this often
CHECK_EVERY = 1.0


def _find_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:
        return None
    function = getattr(libc, "malloc_trim", None)  # glibc has it; musl does not
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


_malloc_trim = _find_malloc_trim()


def trim() -> bool:
    """Return the C heap's free pages to the OS; False where that is not possible (no glibc)."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)  # its result only says whether memory was released; either is fine
    return True


class Trimmer:
    """Decides when to trim, from a counter of requests handled (`activity`).

    `due()` is true when requests were handled since the last trim and either none came
    for `quiet` seconds or the last trim is `max_interval` seconds old. An idle engine is
    trimmed once, not every second.
    """

    def __init__(self, activity: Callable[[], int], quiet: float = QUIET_SECONDS,
                 max_interval: float = MAX_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.activity, self.quiet, self.max_interval, self.clock = activity, quiet, max_interval, clock
        self.seen = activity()
        self.last_change = self.last_trim = clock()
        self.pending = False  # requests handled since the last trim
        self.trims = 0

    def due(self) -> bool:
        now, count = self.clock(), self.activity()
        if count != self.seen:
            self.seen, self.last_change, self.pending = count, now, True
        if not self.pending:
            return False
        return now - self.last_change >= self.quiet or now - self.last_trim >= self.max_interval

    def done(self) -> None:
        self.pending, self.last_trim = False, self.clock()
        self.trims += 1

    async def run(self, every: float = CHECK_EVERY) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            if self.due():
                await loop.run_in_executor(None, trim)
                self.done()
