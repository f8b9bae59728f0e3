"""Walk the route graph for one request: the one execution path.

`run_graph` starts at `graph.start`, runs each node's executor, records a step per node
and follows the edge the node returns, until a node replies. Serve, dry-run and the
tests all call this function; only `ctx.dry_run` differs.

Failures: a node that raises BackendError ends its step as `error`. If the node declares
a `fallback` covering that error kind, the runner records the fallback (in the step, in
`ctx.fallbacks`, and so in the session log and /stats) and continues at the fallback
node. Otherwise the error propagates to the view, which answers 502/504/4xx.
"""

from __future__ import annotations

from engine.context import NodeResult, RequestContext
from engine.errors import BackendError, EngineError
from engine.graph import Graph
from engine.nodes import NODES

# A graph is acyclic (lint), so a request visits each node at most once; fallbacks
# included, no walk can be longer than this.
MAX_STEPS = 256


async def run_graph(graph: Graph, ctx: RequestContext):
    """Run `ctx` through `graph`; return the answering node's Reply."""
    name = graph.start
    for _ in range(MAX_STEPS):
        node = graph.nodes[name]
        step = ctx.begin(name, node.type)
        try:
            result: NodeResult = await NODES[node.type].run(node, ctx)
        except BackendError as err:
            step.fail(err)
            target = fallback_for(node, err, ctx)
            if target is None:
                raise
            step.status, step.edge = "fallback", "fallback"
            ctx.fallbacks.append({"from": name, "to": target, "kind": err.kind, "backend": err.backend,
                                  "error": str(err)})
            name = target
            continue
        except EngineError as err:
            step.fail(err)
            raise
        if result.reply is not None:
            # The answering step stays open: the view finishes it when the answer is sent.
            return result.reply
        step.edge = result.edge
        step.finish()
        name = node.edges[result.edge]
    raise EngineError("route graph walk exceeded its step limit")


def fallback_for(node, err: BackendError, ctx: RequestContext) -> str | None:
    fallback = node.params.get("fallback")
    if not fallback:
        return None
    kinds = fallback.get("when")
    if kinds and err.kind not in kinds:
        return None
    if "max_prompt_chars" in fallback and ctx.prompt_chars() > fallback["max_prompt_chars"]:
        return None  # too long for the fallback's (smaller) model
    return fallback["to"]
