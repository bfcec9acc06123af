"""Which modules belong to which tower, found from the model's behaviour, not from its names.

Every module's output is captured on one feed, then again with one tower's inputs changed (the
contract groups inputs into towers: ``input_ids`` + ``attention_mask`` are one text tower). A module
whose output moves only when tower T's inputs move belongs to T; one that moves with several
towers is part of the fusion (the head); one that moves with none (position embeddings, constants)
takes the tower of the module that contains it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgemm.errors import ConfigError
from edgemm.lazy import lazy_import
from edgemm.runtime.convert import to_tensors
from edgemm.spec import ModelSpec

torch = lazy_import("torch")

FUSION = "fusion"


@dataclass
class TowerMap:
    """Module path -> tower name (or ``fusion``); ``roots`` is the outermost module of each tower."""

    owner: dict[str, str]
    roots: dict[str, list[str]]

    def modules_of(self, tower: str) -> list[str]:
        return [path for path, owner in self.owner.items() if owner == tower]

    @property
    def towers(self) -> list[str]:
        return sorted(self.roots)

    @property
    def fusion(self) -> list[str]:
        return self.modules_of(FUSION)

    def resolve(self, model: "torch.nn.Module", key: str, option: str) -> list["torch.nn.Module"]:
        """A recipe's tower key (``prune.towers``, ``distill.freeze``...): a tower's outermost modules,
        ``fusion`` (what reads several towers: the head), or a module path; anything else is a ConfigError
        naming ``option``."""
        modules = dict(model.named_modules())
        if key in self.roots:
            return [modules[path] for path in self.roots[key]]
        if key == FUSION and self.fusion:  # the head (and any fusion layers): their outermost modules
            paths = self.fusion
            return [modules[p] for p in paths if not any(p.startswith(o + ".") for o in paths)]
        if key and key in modules:
            return [modules[key]]
        raise ConfigError(f"{option}: {key!r} is neither a tower of the model nor one of its modules",
                          f"towers: {self.towers}; or a module path, e.g. {list(modules)[1:6]}")


def _tensors(value: Any) -> list["torch.Tensor"]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict) or hasattr(value, "values") and callable(value.values):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _capture(module: "torch.nn.Module", spec: ModelSpec, feed: dict) -> dict[str, list["torch.Tensor"]]:
    outputs: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, key=name: outputs.__setitem__(key, _tensors(out)))
             for name, m in module.named_modules() if name]
    try:
        with torch.no_grad():
            module(*to_tensors(spec, feed))
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def _moved(before: list["torch.Tensor"], after: list["torch.Tensor"]) -> bool:
    return len(before) != len(after) or any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(before, after))


def trace_towers(module: "torch.nn.Module", spec: ModelSpec) -> TowerMap:
    """Map every named module to its tower by perturbing one tower's inputs at a time."""
    was_training = module.training
    module.eval()
    base_feed = spec.example_inputs({"batch": 2}, seed=0)
    other = spec.example_inputs({"batch": 2}, seed=1)
    base = _capture(module, spec, base_feed)
    depends: dict[str, set[str]] = {name: set() for name in base}
    for tower, inputs in spec.towers.items():
        moved = _capture(module, spec, {**base_feed, **{n: other[n] for n in inputs}})
        for name in base:
            if name in moved and _moved(base[name], moved[name]):
                depends[name].add(tower)
    module.train(was_training)
    owner: dict[str, str] = {}
    for name, _ in module.named_modules():
        if not name:
            continue
        deps = depends.get(name, set())
        if len(deps) > 1:
            owner[name] = FUSION
        elif deps:
            owner[name] = next(iter(deps))
        else:  # constant output (or never called): the tower of the nearest enclosing module, if any
            parent = name.rpartition(".")[0]
            owner[name] = owner.get(parent, FUSION)
    roots: dict[str, list[str]] = {}
    for name, tower in owner.items():
        parent = name.rpartition(".")[0]
        if tower != FUSION and owner.get(parent) != tower:
            roots.setdefault(tower, []).append(name)
    return TowerMap(owner, roots)
