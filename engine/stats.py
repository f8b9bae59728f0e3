"""`/stats`: real counts since start, kept in memory.

Latency percentiles come from the most recent `WINDOW` requests per series, so memory
stays bounded however long the engine runs. The windows are flat arrays of doubles, not
deques of float objects: a float object that lives for 5,000 requests amid the short-lived
objects of each request pins pymalloc pools and fragments the heap.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from typing import Any

WINDOW = 5000


def percentiles(values) -> dict[str, float | None]:
    data = sorted(values)
    if not data:
        return {"p50": None, "p95": None, "p99": None, "count": 0}

    def pick(q: float) -> float:
        return round(data[min(len(data) - 1, int(q * len(data)))], 2)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "count": len(data)}


class Window:
    """The last `size` values of a series, in a fixed array (a ring buffer)."""

    def __init__(self, size: int = WINDOW):
        self.values = array("d")
        self.size = size
        self.next = 0

    def append(self, value: float) -> None:
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            self.values[self.next] = value
        self.next = (self.next + 1) % self.size

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.by_route: Counter[str] = Counter()
        self.by_outcome: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.errors_by_kind: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.classification_sources: Counter[str] = Counter()
        self.classification_ms = Window()
        self.total_ms = Window()
        self.total_ms_by_route: dict[str, Window] = {}

    def record(self, record: dict[str, Any]) -> None:
        """Count one finished request from its session-log record."""
        self.requests += 1
        route = record.get("route") or "none"
        self.by_route[route] += 1
        self.by_outcome[record["outcome"]] += 1
        self.by_status[record["status"]] += 1
        for step in record["steps"]:
            if step.get("error_kind"):
                self.errors_by_kind[step["error_kind"]] += 1
        for fallback in record.get("fallbacks") or ():
            self.fallbacks[f"{fallback['from']}->{fallback['to']}"] += 1
        for retry in record.get("retries") or ():
            self.retries[f"{retry['node']}:{retry['kind']}"] += 1
        if record.get("classification_source"):
            self.classification_sources[record["classification_source"]] += 1
        if record.get("classification_ms") is not None:
            self.classification_ms.append(record["classification_ms"])
        self.total_ms.append(record["total_ms"])
        self.total_ms_by_route.setdefault(route, Window()).append(record["total_ms"])

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "requests": self.requests,
            "routes": dict(self.by_route),
            "outcomes": dict(self.by_outcome),
            "statuses": {str(k): v for k, v in self.by_status.items()},
            "errors_by_kind": dict(self.errors_by_kind),
            "fallbacks": dict(self.fallbacks),
            "retries": dict(self.retries),
            "classification": {"sources": dict(self.classification_sources),
                               "latency_ms": percentiles(self.classification_ms)},
            "latency_ms": percentiles(self.total_ms),
            "latency_ms_by_route": {r: percentiles(v) for r, v in self.total_ms_by_route.items()},
        }
