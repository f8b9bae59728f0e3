"""Per-backend circuit breakers: a dead server costs one fast failure, not a timeout per request.

    closed  --(`failures` failures in a row)-->  open
    open    --(`cooldown` seconds pass)------->  half-open: one probe request is let through
    half-open --probe succeeds--> closed;  --probe fails--> open again (cooldown restarts)

While open, calls fail at once with BackendError kind `circuit_open`, which a node's
declared fallback can catch like any other kind. Only failures that say the server is
unwell count (connect, timeout, 5xx, 429, a broken stream); a 400 for a too-long prompt
does not. Breakers are kept by backend name for the life of the process, so they survive
a graph reload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

COUNTED_KINDS = frozenset({"connect", "timeout", "http_5xx", "http_429", "stream_cut", "bad_response"})


@dataclass
class Breaker:
    name: str
    failures_to_open: int = 5
    cooldown: float = 30.0
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    times_opened: int = 0
    clock: Any = field(default=time.monotonic, repr=False)

    def allow(self) -> bool:
        """May a call go out now? In half-open, exactly one probe at a time."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self.opened_at >= self.cooldown:
            self.state, self.probing = "half-open", False
        if self.state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.state, self.failures, self.probing = "closed", 0, False

    def failure(self, kind: str) -> None:
        if kind not in COUNTED_KINDS:
            # The server answered sensibly; a probe that got this far proved it is up.
            if self.state == "half-open":
                self.success()
            return
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.failures_to_open:
            if self.state != "open":
                self.times_opened += 1
            self.state, self.opened_at, self.probing = "open", self.clock(), False

    def retry_in(self) -> float:
        return max(0.0, self.cooldown - (self.clock() - self.opened_at)) if self.state == "open" else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "consecutive_failures": self.failures, "times_opened": self.times_opened,
                "retry_in_s": round(self.retry_in(), 1)}


class Breakers(dict):
    """name -> Breaker, created on first use with the backend's declared settings."""

    def for_backend(self, backend) -> Breaker:
        breaker = self.get(backend.name)
        settings = backend.breaker
        if breaker is None:
            breaker = self[backend.name] = Breaker(backend.name, settings["failures"], settings["cooldown"])
        else:  # a reload may have changed the settings; keep the state
            breaker.failures_to_open, breaker.cooldown = settings["failures"], settings["cooldown"]
        return breaker
