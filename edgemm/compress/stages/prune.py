"""The ``prune`` stage: structured, dependency-aware pruning with torch-pruning (channels, MLP widths,
attention heads). The pruned model is saved as factory + recorded layer shapes + safetensors and
rebuilt by replaying the shapes (ModelOpt-style), never pickled."""
from __future__ import annotations

import warnings
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from edgemm.compress.stage import STAGES, Artifact, Context, Stage, StageConfig
from edgemm.errors import ConfigError
from edgemm.lazy import lazy_import
from edgemm.models.registry import LoadedModel, save_model
from edgemm.models.structure import KEPT_ATTR
from edgemm.models.tower_map import trace_towers
from edgemm.runtime.convert import to_tensors

torch = lazy_import("torch")
tp = lazy_import("torch_pruning")


class PruneConfig(StageConfig):
    stage: Literal["prune"]
    ratio: float = Field(0.5, ge=0, lt=1, description="default channel ratio removed")
    towers: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=dict, description="per-tower ratio: a tower of the contract "
                                                                       "(traced from the model) or a module path")
    importance: Literal["l2", "l1", "random"] = "l2"
    global_pruning: bool = False
    prune_heads: bool = True
    head_ratio: float = Field(0.5, ge=0, lt=1)
    ignore: list[str] = Field(default_factory=list, description="module paths (prefixes) left untouched")
    prune_fusion: bool = Field(False, description="also narrow tower outputs and the fusion head (default: they "
                                                  "keep their width)")
    keep_residual: bool = Field(False, description=(
        "residual streams keep their width: only widths inside blocks are pruned (inverted-residual expansion "
        "channels, MLP widths, attention heads), as MobileNet/EfficientNet pruning often does. Measured on "
        "EfficientNet-Lite0 at image 0.5 with the same distillation: worse than pruning every group (82.7 vs 86.4 %)"))
    round_to: int | None = Field(None, ge=1, description="default: the target profile's pruning.round_to")
    drop_layers: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=dict, description=(
        "per tower (or module path): the share of its transformer layers removed, evenly spaced as "
        "DistilBERT was made (6 layers at 0.5 keep 0, 2, 4); done before channel pruning; distill after it"))
    drop_blocks: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict, description=(
        "per tower (or module path): how many blocks of its block lists to remove, those whose removal moves the "
        "model's output least on 256 train rows (a fixed random draw). Candidates are the entries that keep their input's shape: the "
        "residual blocks of a CNN (EfficientNet, MobileNet and ResNet train with stochastic depth, which makes "
        "them removable) or transformer layers. Done before channel pruning (for depth alone: ratio: 0, "
        "prune_heads: false); distill after it"))


@STAGES.register
class PruneStage(Stage):
    name = "prune"
    description = "structured channel + attention-head pruning (torch-pruning), per-tower ratios; layer dropping"
    config = PruneConfig
    consumes = produces = "torch"
    requires = ("torch_pruning",)
    gate_fix = "prune less (a lower ratio, or per-tower ratios), or add a distill stage after it"

    def splits_read(self, config: PruneConfig | None) -> list[str]:
        return ["train"] if config is not None and config.drop_blocks else []

    def check_model(self, config: PruneConfig | None, spec, dataset: str, split: str, module=None) -> None:
        """drop_blocks names towers with enough blocks to remove, before any stage runs."""
        if config is None or not config.drop_blocks or module is None:
            return
        example = tuple(to_tensors(spec, spec.example_inputs({"batch": 2})))
        for key, count in config.drop_blocks.items():
            _candidates(module, spec, key, count, example)

    def run(self, config: PruneConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        model = artifact.load()
        rows = None
        if config.drop_blocks:  # ranked on train rows (a fixed random draw), never on the gate split
            train = ctx.split("train", model.spec)
            picked = np.sort(np.random.default_rng(0).permutation(len(train))[:BLOCK_RANK_ROWS])
            rows = tuple(to_tensors(model.spec, train.take(picked).trimmed(model.spec)
                                    .for_inputs(model.spec.input_names).inputs))
        metrics = prune(model, config, config.round_to or ctx.profile.pruning.round_to, rows)
        save_model(model, ctx.stage_dir)
        return Artifact("torch", ctx.stage_dir), metrics


# Attention layouts whose heads torch-pruning can remove: (projection attributes, head-count attribute).
# edgemm/timm fuse q, k, v in one Linear; Hugging Face BERT/ViT and CLIP keep three.
ATTENTION_LAYOUTS = ((("qkv",), "num_heads"), (("query", "key", "value"), "num_attention_heads"),
                     (("q_proj", "k_proj", "v_proj"), "num_heads"))


def _attention(model: "torch.nn.Module") -> list[tuple["torch.nn.Module", list["torch.nn.Linear"], str]]:
    found = []
    for module in model.modules():
        for names, count in ATTENTION_LAYOUTS:
            projections = [getattr(module, n, None) for n in names]
            if isinstance(getattr(module, count, None), int) and all(isinstance(p, torch.nn.Linear) for p in projections):
                found.append((module, projections, count))
                break
    return found


def _set_heads(attention: list, head_dims: dict[int, int]) -> None:
    """Heads left = remaining width / head size (kept); reshapes read these attributes."""
    for module, projections, count in attention:
        per_projection = projections[0].out_features // (3 if len(projections) == 1 else 1)  # fused qkv: thirds
        heads = per_projection // head_dims[id(module)]
        setattr(module, count, heads)
        if hasattr(module, "all_head_size"):  # Hugging Face BERT/ViT
            module.all_head_size = per_projection
        if hasattr(module, "embed_dim") and len(projections) == 3:  # Hugging Face CLIP
            module.embed_dim = per_projection


def _output_layers(model: "torch.nn.Module", example: tuple) -> list["torch.nn.Module"]:
    """The modules whose output tensor is one of the model's outputs (the classifier): the class count or
    the embedding width is the contract, in single-tower models too (where there is no fusion to protect it)."""
    produced: dict[int, "torch.nn.Module"] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, out: produced.__setitem__(id(out), mod))
             for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            outputs = model(*example)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    return [produced[id(o)] for o in outputs if id(o) in produced]


def _ignored(model: "torch.nn.Module", config: PruneConfig, example: tuple) -> list["torch.nn.Module"]:
    """Layers whose outputs keep their width: the output layers, embeddings and what the recipe lists."""
    modules = dict(model.named_modules())
    linears = [m for m in modules.values() if isinstance(m, torch.nn.Linear)]
    ignored = _output_layers(model, example) + linears[-1:]  # the last Linear too: outputs may be reshaped
    ignored += [m for m in modules.values() if isinstance(m, torch.nn.Embedding)]
    for prefix in config.ignore:
        matched = [m for name, m in modules.items() if name == prefix or name.startswith(prefix + ".")]
        if not matched:
            raise ConfigError(f"prune.ignore: no module matches {prefix!r}", "give module paths of the model")
        ignored += matched
    return ignored


def _layer_stacks(root: "torch.nn.Module") -> list["torch.nn.ModuleList"]:
    """The innermost ModuleLists under ``root`` whose entries are transformer layers (each holds an
    attention): in a hierarchical model (Swin) the blocks of a stage, not the stages themselves."""
    stacks = [m for m in root.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1
              and all(_attention(layer) for layer in m)]
    return [s for s in stacks if not any(o is not s and any(o is m for m in s.modules()) for o in stacks)]


def drop_layers(module: "torch.nn.Module", towers, shares: dict[str, float]) -> dict[str, list[int]]:
    """Remove evenly spaced layers of each named tower's layer stacks in place; return the layers kept."""
    kept: dict[str, list[int]] = {}
    names = {id(m): n for n, m in module.named_modules()}
    for key, share in shares.items():
        stacks = list({id(s): s for root in towers.resolve(module, key, "prune.drop_layers")
                       for s in _layer_stacks(root)}.values())  # overlapping roots: each stack once
        if not stacks:
            raise ConfigError(f"prune.drop_layers: {key!r} has no stack of transformer layers",
                              "name a tower or module with a ModuleList of attention layers (BERT, ViT, CLIP)")
        for stack in stacks:
            count = max(1, round(len(stack) * (1 - share)))
            keep = sorted({round(i * len(stack) / count) for i in range(count)})
            kept[names[id(stack)]] = keep
            _remove(stack, [i for i in range(len(stack)) if i not in keep])
    return kept


BLOCK_RANK_ROWS = 256  # 64 rows gave another choice on each draw on the real model; 256 and all 488 agree


def _skip_module() -> "torch.nn.Module":
    """A stand-in for a removed block while its cost is measured: returns its input, whatever else it is given."""
    class Skip(torch.nn.Module):
        def forward(self, x, *args, **kwargs):
            return x
    return Skip()


def _shape_keeping_entries(module: "torch.nn.Module", roots, example: tuple) -> list[tuple["torch.nn.ModuleList", int]]:
    """(list, index) of every block-list entry of the tower (its roots may be whole towers or the entries
    themselves) whose output has its input's shape."""
    inside = {id(m) for root in roots for m in root.modules()}
    entries = [(stack, i) for stack in module.modules() if isinstance(stack, torch.nn.ModuleList)
               for i in range(len(stack)) if id(stack[i]) in inside]
    keeps: dict[tuple[int, int], bool] = {}

    def watch(key):
        def hook(_module, args, output):
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            keeps[key] = isinstance(output, torch.Tensor) and first is not None and output.shape == first.shape
        return hook

    hooks = [stack[i].register_forward_hook(watch((id(stack), i))) for stack, i in entries]
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    return [(s, i) for s, i in entries if keeps.get((id(s), i))]


def _output(module: "torch.nn.Module", rows: tuple) -> "torch.Tensor":
    """The model's first output (a tensor, a tuple or a dict such as a Hugging Face ModelOutput), one row per
    sample."""
    with torch.no_grad():
        out = module(*rows)
    while isinstance(out, (dict, tuple, list)):
        out = next(iter(out.values())) if isinstance(out, dict) else out[0]
    return out.reshape(len(out), -1).float()


def drop_blocks(module: "torch.nn.Module", spec, counts: dict[str, int], example: tuple,
                rows: tuple | None) -> dict[str, dict]:
    """Remove, per named tower, the ``count`` shape-keeping blocks whose removal alone moves the model's output
    least (1 - mean cosine on ``rows``); return the removed indices and the drift measured for every candidate."""
    if not counts:
        return {}
    if rows is None:
        raise ConfigError("prune.drop_blocks ranks blocks on train rows, and this run has none",
                          "give data with a train split (--data)")
    reference = _output(module, rows)
    removed: dict[str, dict] = {}
    for key, count in counts.items():
        names = {id(m): n for n, m in module.named_modules()}  # again for each key: an earlier key's cut renumbers
        candidates = _candidates(module, spec, key, count, example)
        drift = _drift_without_each(module, candidates, rows, reference)
        chosen = sorted(candidates, key=lambda c: drift[(id(c[0]), c[1])])[:count]
        _check_not_emptied(key, chosen, names)
        label = {(id(s), i): f"{names[id(s)]}.{i}" for s, i in candidates}  # names before the removal
        in_order = sorted(chosen, key=lambda c: (names[id(c[0])], c[1]))
        removed[key] = {"removed": [label[(id(s), i)] for s, i in in_order],
                        "drift": {label[k]: round(d, 6) for k, d in drift.items()}}
        for stack in {id(s): s for s, _ in chosen}.values():
            _remove(stack, [i for s, i in chosen if s is stack])
    return removed


def _check_not_emptied(key: str, chosen: list, names: dict[int, str]) -> None:
    """A block list left empty would not reload (its factory build has entries, the saved weights none)."""
    for stack in {id(s): s for s, _ in chosen}.values():
        if sum(s is stack for s, _ in chosen) >= len(stack):
            raise ConfigError(f"prune.drop_blocks would remove every block of {names[id(stack)]!r} ({key!r})",
                              "ask fewer blocks: at least one must stay")


def _candidates(module: "torch.nn.Module", spec, key: str, count: int, example: tuple) -> list:
    """The tower's shape-keeping block-list entries (towers traced on the module as it is now), at least
    ``count`` of them."""
    roots = trace_towers(module, spec).resolve(module, key, "prune.drop_blocks")
    candidates = _shape_keeping_entries(module, roots, example)
    if len(candidates) < count:
        raise ConfigError(f"prune.drop_blocks asks {count} block(s) of {key!r}, which has {len(candidates)} "
                          "that keep their input's shape", "ask fewer, or name a tower with residual blocks or "
                          "transformer layers in a ModuleList")
    return candidates


def _drift_without_each(module, candidates: list, rows: tuple, reference: "torch.Tensor") -> dict[tuple, float]:
    """1 - mean cosine of the model's output to ``reference`` with each candidate block alone skipped."""
    drift = {}
    for stack, i in candidates:
        block, stack[i] = stack[i], _skip_module()
        try:
            drift[(id(stack), i)] = float(1 - torch.nn.functional.cosine_similarity(
                _output(module, rows), reference, dim=1).mean())
        finally:
            stack[i] = block
    return drift


def _remove(stack: "torch.nn.ModuleList", indices: list[int]) -> None:
    """Remove entries of a block list in place, remembering which entries of the factory's build remain
    (``models/structure.py`` records them, and a reload keeps those)."""
    kept = getattr(stack, KEPT_ATTR, list(range(len(stack))))
    survivors = [i for i in range(len(stack)) if i not in indices]
    blocks = [stack[i] for i in survivors]
    del stack[:]
    stack.extend(blocks)
    setattr(stack, KEPT_ATTR, [kept[i] for i in survivors])


def _residual(group) -> bool:
    """Whether a torch-pruning group's channels run through an addition: a residual stream."""
    return any(isinstance(item.dep.target.module, tp.ops._ElementWiseOp)
               and "AddBackward" in str(item.dep.target.module._grad_fn) for item in group)


def _prune_channels(module, config: PruneConfig, towers, example: tuple, attention: list, round_to: int | None,
                    fusion: set[int]) -> tuple[int, int]:
    """torch-pruning's channel and head removal; return the groups kept whole (fusion) and kept residual."""
    num_heads = {p: getattr(m, count) for m, projections, count in attention for p in projections}
    importance = {"l2": tp.importance.GroupMagnitudeImportance(p=2),
                  "l1": tp.importance.GroupMagnitudeImportance(p=1),
                  "random": tp.importance.RandomImportance()}[config.importance]
    ratios = {m: r for key, r in config.towers.items() for m in towers.resolve(module, key, "prune.towers")}
    kept_whole = kept_residual = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning warns about every unwrapped nn.Parameter
        pruner = tp.pruner.MetaPruner(
            module, example, importance=importance, pruning_ratio=config.ratio, pruning_ratio_dict=ratios,
            global_pruning=config.global_pruning, ignored_layers=_ignored(module, config, example), round_to=round_to,
            num_heads=num_heads, prune_num_heads=config.prune_heads and bool(num_heads),
            prune_head_dims=False, head_pruning_ratio=config.head_ratio)
        for group in pruner.step(interactive=True):
            # A group that reaches a fusion layer would narrow a tower's output or the head: keep it whole.
            if not config.prune_fusion and any(id(item.dep.target.module) in fusion for item in group):
                kept_whole += 1
                continue
            if config.keep_residual and _residual(group):
                kept_residual += 1
                continue
            group.prune()
    return kept_whole, kept_residual


def prune(model: LoadedModel, config: PruneConfig, round_to: int | None, rows: tuple | None = None) -> dict:
    """Prune ``model.module`` in place; return parameter counts, heads before/after and groups kept whole.
    ``rows`` (model inputs from the train split) rank the blocks ``drop_blocks`` removes."""
    module, spec = model.module, model.spec
    towers = trace_towers(module, spec)
    before = sum(p.numel() for p in module.parameters())
    example = tuple(to_tensors(spec, spec.example_inputs({"batch": 2})))
    layers_kept = drop_layers(module, towers, config.drop_layers)
    blocks_dropped = drop_blocks(module, spec, config.drop_blocks, example, rows)
    if layers_kept or blocks_dropped:  # the tower roots traced above may name removed entries
        towers = trace_towers(module, spec)
    modules = dict(module.named_modules())
    fusion = {id(modules[path]) for path in towers.fusion}
    attention = _attention(module)
    head_dims = {id(m): (ps[0].out_features // (3 if len(ps) == 1 else 1)) // getattr(m, c) for m, ps, c in attention}
    heads_before = sum(getattr(m, c) for m, _, c in attention)
    channels = config.ratio > 0 or any(config.towers.values()) or (config.prune_heads and config.head_ratio > 0
                                                                    and bool(attention))
    # Nothing to remove by channel or head (ratio 0 and prune_heads false, say: depth alone): no torch-pruning.
    kept_whole, kept_residual = (_prune_channels(module, config, towers, example, attention, round_to, fusion)
                                 if channels else (0, 0))
    _set_heads(attention, head_dims)
    module.eval()
    return {"parameters_before": before, "parameters_after": sum(p.numel() for p in module.parameters()),
            "heads_before": heads_before, "heads_after": sum(getattr(m, c) for m, _, c in attention),
            "towers": {t: roots for t, roots in towers.roots.items()}, "groups_kept_whole": kept_whole,
            "residual_groups_kept": kept_residual,
            "layers_kept": layers_kept, "blocks_dropped": blocks_dropped}
