"""What the running app holds, under one typed app key (`request.app[STATE]`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from engine.breaker import Breakers
from engine.graph import Graph
from engine.sessionlog import SessionLogWriter
from engine.settings import Settings
from engine.stats import Stats
from engine.upstream import Client


@dataclass
class AppState:
    settings: Settings
    graph: Graph  # replaced as a whole on reload; a request keeps the one it started with
    stats: Stats = field(default_factory=Stats)
    upstream: Client | None = None  # pooled connections to every backend
    writer: SessionLogWriter | None = None
    breakers: Breakers = field(default_factory=Breakers)  # by backend name; survive reloads
    reloads: Counter = field(default_factory=Counter)  # applied / refused
    watcher: asyncio.Task | None = None
    health_cache: tuple | None = None  # (monotonic time, graph, probe results)


STATE = web.AppKey("state", AppState)
