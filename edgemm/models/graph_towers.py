"""Which tower an ONNX node belongs to: the towers of the graph inputs it depends on.

The contract groups inputs into towers (``input_ids`` + ``attention_mask`` feed one text tower). A
node fed only by the text tower's inputs is in the text tower; one fed by several towers is part
of the fusion. This needs no naming convention from the user's model.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

FUSION = "fusion"


def node_towers(model, tower_of: Mapping[str, str] | None = None) -> dict[str, str]:
    """Map node name -> tower (``tower_of[input]``, by default the input's name; 'fusion' where towers meet)."""
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    tower_of = tower_of or {}
    sources: dict[str, frozenset[str]] = {i.name: frozenset([tower_of.get(i.name, i.name)])
                                          for i in graph.input if i.name not in initialisers}
    towers = {}
    for node in graph.node:  # ONNX graphs are topologically sorted
        deps = frozenset().union(*(sources.get(x, frozenset()) for x in node.input if x))
        for out in node.output:
            sources[out] = deps
        towers[node.name] = next(iter(deps)) if len(deps) == 1 else FUSION
    return towers


def nodes_by_tower(model, op_types: list[str] | None = None,
                   tower_of: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    op_filter = set(op_types) if op_types else None
    grouped: dict[str, list[str]] = defaultdict(list)
    towers = node_towers(model, tower_of)
    for node in model.graph.node:
        if op_filter is None or node.op_type in op_filter:
            grouped[towers[node.name]].append(node.name)
    return dict(grouped)
