"""Record a model's layer shapes and replay them on a fresh build, so a pruned model reloads
from ``model.json`` + safetensors without pickling (ModelOpt-style restore by replay). A layer stack
(ModuleList) records its ``length``: replay drops the entries past it (dropped transformer layers;
the kept ones were renumbered, and the weights loaded next are theirs). A list the prune stage cut also
records which entries it ``kept``: blocks of a CNN differ in shape, so replay keeps those entries."""
from __future__ import annotations

from typing import Any

from edgemm.errors import ModelLoadError
from edgemm.lazy import lazy_import

torch = lazy_import("torch")

# Attributes that define a layer's shape in torch.nn (and `num_heads` for attention modules).
SHAPE_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features", "normalized_shape",
               "num_embeddings", "embedding_dim", "groups", "num_heads",
               "num_attention_heads", "all_head_size", "embed_dim")  # Hugging Face attention
LENGTH = "length"  # a ModuleList's entry count (recorded for stacks only, not read from attributes)
KEPT = "kept"  # which entries of the factory's build a cut ModuleList kept (removed CNN blocks differ in shape)
KEPT_ATTR = "_edgemm_kept"  # where the prune stage leaves that on the ModuleList


def record_structure(model: "torch.nn.Module") -> dict[str, dict[str, Any]]:
    record = {}
    for name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in SHAPE_ATTRS if isinstance(getattr(module, a, None), (int, tuple))}
        if isinstance(module, torch.nn.ModuleList) and len(module):  # an empty list has nothing to cut
            attrs[LENGTH] = len(module)
            if isinstance(getattr(module, KEPT_ATTR, None), list):
                attrs[KEPT] = list(getattr(module, KEPT_ATTR))
        if attrs:
            record[name] = {a: list(v) if isinstance(v, tuple) else v for a, v in attrs.items()}
    return record


def replay_structure(model: "torch.nn.Module", record: dict[str, dict[str, Any]], state: dict[str, "torch.Tensor"]) -> None:
    """Cut the recorded layer stacks, then set recorded attributes and resize parameters/buffers to the saved
    tensors' shapes (after the cuts: the record names the kept entries by their new positions)."""
    for name, attrs in record.items():
        for attr, value in attrs.items():
            if attr not in (*SHAPE_ATTRS, LENGTH, KEPT) or not _shape_value(attr, value):  # shapes, nothing else
                raise ModelLoadError(f"recorded layer {name!r} sets {attr!r} = {value!r}, which is not a shape",
                                     "re-create the run; model.json was edited or is corrupt")
        if KEPT in attrs and len(attrs[KEPT]) != attrs.get(LENGTH, len(attrs[KEPT])):
            raise ModelLoadError(f"recorded layer stack {name!r} keeps {len(attrs[KEPT])} entries but has length "
                                 f"{attrs[LENGTH]}", "re-create the run; model.json was edited or is corrupt")
        if LENGTH in attrs or KEPT in attrs:
            stack = _recorded(dict(model.named_modules()), name)
            if KEPT in attrs:
                _keep(stack, name, attrs[KEPT])
            _truncate(stack, name, attrs.get(LENGTH, len(stack)))
    modules = dict(model.named_modules())
    for name, attrs in record.items():
        for attr, value in attrs.items():
            if attr not in (LENGTH, KEPT):
                setattr(_recorded(modules, name), attr, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules.get(owner_name)
        current = getattr(owner, leaf, None) if owner is not None else None
        if isinstance(current, torch.Tensor) and current.shape != tensor.shape:
            resized = torch.empty_like(tensor)
            setattr(owner, leaf, torch.nn.Parameter(resized, current.requires_grad) if isinstance(current, torch.nn.Parameter)
                    else resized)


def _shape_value(attr: str, value: Any) -> bool:
    """An int (not a bool), or for shapes and kept entries a list of them; a list length is an int alone."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    if attr == LENGTH:
        return count(value)
    return count(value) or (isinstance(value, list) and all(count(v) for v in value))


def _recorded(modules: dict[str, "torch.nn.Module"], name: str) -> "torch.nn.Module":
    if name not in modules:
        raise ModelLoadError(f"recorded layer {name!r} does not exist in the rebuilt model",
                             "the factory's architecture changed since the model was saved")
    return modules[name]


def _keep(stack: "torch.nn.Module", name: str, kept: list) -> None:
    """Keep the recorded entries of the fresh build's list, in order (before its length is checked)."""
    if (not isinstance(stack, torch.nn.ModuleList) or not kept or len(set(kept)) != len(kept)
            or not all(0 <= i < len(stack) for i in kept)):  # ints already (replay_structure checks types)
        raise ModelLoadError(f"recorded layer stack {name!r} keeps entries {kept}, which this build cannot take",
                             "the factory's architecture changed since the model was saved")
    entries = [stack[i] for i in kept]
    del stack[:]
    stack.extend(entries)
    setattr(stack, KEPT_ATTR, list(kept))


def _truncate(stack: "torch.nn.Module", name: str, length: int) -> None:
    if not isinstance(stack, torch.nn.ModuleList) or not 0 < length <= len(stack):
        raise ModelLoadError(f"recorded layer stack {name!r} has length {length}, which this build cannot take",
                             "the factory's architecture changed since the model was saved")
    del stack[length:]
