"""Node types: one module per type, registered in a plain dict.

Each module provides the same functions, so the runner and the linter treat every
type alike:

    prepare(node, graph)            -> prepared state, built once at load (regexes, ...)
    run(node, ctx)                  -> NodeResult: an edge to follow, or a reply (async)
    check(name, spec, data, smap, root) -> list of lint Problems specific to the type
    templates(spec)                 -> [(key path, template path)] the node renders
    template_variables(spec)        -> extra variables only this node's templates get
    provides(spec)                  -> variables the node sets for later nodes

A node's parameters are defined in `schemas/nodes/<type>.json`, nowhere else.
"""

from engine.nodes import call_backend, classify, detect_meta, inject_context

NODES = {
    "detect-meta": detect_meta,
    "classify": classify,
    "call-backend": call_backend,
    "inject-context": inject_context,
}
