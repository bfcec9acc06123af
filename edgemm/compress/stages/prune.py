"""The ``prune`` stage: structured, dependency-aware pruning with torch-pruning (channels, MLP widths,
attention heads). The pruned model is saved as factory + recorded layer shapes + safetensors and
rebuilt by replaying the shapes (ModelOpt-style), never pickled."""
from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field

from edgemm.compress.stage import STAGES, Artifact, Context, Stage, StageConfig
from edgemm.errors import ConfigError
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel, save_model
from edgemm.runtime.convert import to_tensors

torch = lazy_import("torch")
tp = lazy_import("torch_pruning")


class PruneConfig(StageConfig):
    stage: Literal["prune"]
    ratio: float = Field(0.5, ge=0, lt=1, description="default channel ratio removed")
    towers: dict[str, float] = Field(default_factory=dict, description="per-tower ratio: input name or module path")
    importance: Literal["l2", "l1", "random"] = "l2"
    global_pruning: bool = False
    prune_heads: bool = True
    head_ratio: float = Field(0.5, ge=0, lt=1)
    ignore: list[str] = Field(default_factory=list, description="module paths (prefixes) left untouched")
    round_to: int | None = Field(None, ge=1, description="default: the target profile's pruning.round_to")


@STAGES.register
class PruneStage(Stage):
    name = "prune"
    description = "structured channel + attention-head pruning (torch-pruning), per-tower ratios"
    config = PruneConfig
    consumes = produces = "torch"
    requires = ("torch_pruning",)

    def run(self, config: PruneConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        model = artifact.load()
        metrics = prune(model, config, config.round_to or ctx.profile.pruning.round_to)
        save_model(model, ctx.stage_dir)
        return Artifact("torch", ctx.stage_dir), metrics


def _tower_module(model: "torch.nn.Module", key: str) -> "torch.nn.Module":
    """A recipe's tower key: an input name (``towers.<name>`` in fusion models) or a module path."""
    modules = dict(model.named_modules())
    for path in (f"towers.{key}", key):
        if path in modules:
            return modules[path]
    raise ConfigError(f"prune.towers: {key!r} is neither an input's tower nor a module of the model",
                      f"use an input name or one of the module paths, e.g. {list(modules)[1:6]}")


def _attention_heads(model: "torch.nn.Module") -> dict["torch.nn.Linear", int]:
    """Attention modules that expose ``num_heads`` and a fused ``qkv`` Linear (timm/edgemm style)."""
    return {m.qkv: m.num_heads for m in model.modules()
            if isinstance(getattr(m, "num_heads", None), int) and isinstance(getattr(m, "qkv", None), torch.nn.Linear)}


def _ignored(model: "torch.nn.Module", config: PruneConfig) -> list["torch.nn.Module"]:
    """Layers whose outputs keep their width: the classifier, embeddings, each tower's output projection."""
    modules = dict(model.named_modules())
    linears = [m for m in modules.values() if isinstance(m, torch.nn.Linear)]
    ignored = [linears[-1]] if linears else []  # the task head's last layer fixes the class count
    ignored += [m for m in modules.values() if isinstance(m, torch.nn.Embedding)]
    # Tower embeddings keep their width: fusion and feature distillation rely on it.
    ignored += [m for name, m in modules.items() if name.startswith("towers.") and name.endswith(".proj")]
    for prefix in config.ignore:
        matched = [m for name, m in modules.items() if name == prefix or name.startswith(prefix + ".")]
        if not matched:
            raise ConfigError(f"prune.ignore: no module matches {prefix!r}", "give module paths of the model")
        ignored += matched
    return ignored


def prune(model: LoadedModel, config: PruneConfig, round_to: int | None) -> dict:
    """Prune ``model.module`` in place; return parameter counts and heads before/after."""
    module, spec = model.module, model.spec
    example = tuple(to_tensors(spec, spec.example_inputs({"batch": 2})))
    heads = _attention_heads(module)
    importance = {"l2": tp.importance.GroupMagnitudeImportance(p=2),
                  "l1": tp.importance.GroupMagnitudeImportance(p=1),
                  "random": tp.importance.RandomImportance()}[config.importance]
    before, heads_before = sum(p.numel() for p in module.parameters()), sum(heads.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning warns about every unwrapped nn.Parameter
        pruner = tp.pruner.MetaPruner(
            module, example, importance=importance, pruning_ratio=config.ratio,
            pruning_ratio_dict={_tower_module(module, k): r for k, r in config.towers.items()},
            global_pruning=config.global_pruning, ignored_layers=_ignored(module, config), round_to=round_to,
            num_heads=dict(heads), prune_num_heads=config.prune_heads and bool(heads), head_pruning_ratio=config.head_ratio)
        pruner.step()
    for attn in (m for m in module.modules() if getattr(m, "qkv", None) in heads):
        attn.num_heads = pruner.num_heads[attn.qkv]  # reshapes read it; torch-pruning leaves it stale
    module.eval()
    return {"parameters_before": before, "parameters_after": sum(p.numel() for p in module.parameters()),
            "heads_before": heads_before, "heads_after": sum(pruner.num_heads.get(q, 0) for q in heads)}
