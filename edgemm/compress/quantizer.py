"""Quantizers behind one interface, registered by name (one module each in ``compress/quantizers/``).

Two families share the ``quantize`` stage:

- :class:`OnnxQuantizer` works on the exported ONNX graph; edgemm's accuracy-aware
  fallback (``fallback.py``) drives it, keeping towers or nodes in float until the gate holds;
- :class:`TorchQuantizer` works on the PyTorch model with its library's own tuning loop,
  is scored by the same runtime accuracy as every gate, and is exported to ONNX Q/DQ.

Each declares its config class (``backend: Literal[name]`` plus its own keys), which the
recipe schema is built from.
"""
from __future__ import annotations

import shutil
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edgemm.compress.calibration import calibration_feeds
from edgemm.compress.fallback import FallbackSettings, quantize_with_fallback
from edgemm.compress.speed import SpeedSettings, batch_feeds, keep_int8_where_it_pays, ort_time_pair
from edgemm.compress.speed import to_dict as speed_to_dict
from edgemm.compress.stage import Artifact, Context, StageConfig
from edgemm.errors import GateFailed
from edgemm.export.profiles import QuantizationSettings
from edgemm.export.targets.onnx import save_onnx, to_onnx_proto
from edgemm.lazy import lazy_import
from edgemm.models.graph_towers import nodes_by_tower
from edgemm.models.registry import LoadedModel
from edgemm.registry import Component, Registry
from edgemm.runtime.backends.pytorch import TorchSession

onnx = lazy_import("onnx")
Feeds = list[dict[str, np.ndarray]]


class QuantizeConfig(StageConfig):
    """Keys every quantizer takes; each quantizer's config narrows ``backend`` to its name."""

    stage: Literal["quantize"]
    backend: str
    calibration_samples: int = Field(512, ge=1)
    calibration_split: str = "train"
    keep_float: list[str] = Field(default_factory=list, description="towers kept in float (the contract's tower "
                                                                 "names: an input's name unless it sets tower)")
    fallback: FallbackSettings = FallbackSettings()
    speed: SpeedSettings = SpeedSettings()

    @model_validator(mode="after")
    def _speed_batches_fit_calibration(self):
        if self.speed.enabled and max(self.speed.batch_sizes) > self.calibration_samples:
            raise ValueError(f"speed.batch_sizes times batch {max(self.speed.batch_sizes)} on calibration samples, "
                             f"and calibration_samples is {self.calibration_samples}: lower one or raise the other")
        return self


class Quantizer(Component):
    config: ClassVar[type[QuantizeConfig]]
    produces = "onnx"

    @abstractmethod
    def run(self, config: QuantizeConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        """Quantize ``artifact`` under the run's accuracy gate; write ``ctx.stage_dir/model.onnx``."""

    def feeds(self, config: QuantizeConfig, model: LoadedModel, ctx: Context) -> Feeds:
        return calibration_feeds(model.spec, ctx.dataset, config.calibration_split, config.calibration_samples)


class OnnxQuantizer(Quantizer):
    """Quantizes an ONNX file; the fallback loop calls :meth:`quantize` with more nodes excluded each try."""

    consumes = "onnx"

    def prepare(self, fp32: Path, work_dir: Path) -> Path:
        """The graph this quantizer really quantizes (a pre-pass may rewrite the input); the fallback reads
        node names and towers from it. Default: the input itself."""
        return fp32

    def scheme(self, config: QuantizeConfig, ctx: Context) -> QuantizationSettings:
        return ctx.profile.quantization

    @abstractmethod
    def quantize(self, fp32: Path, out: Path, feeds: Feeds, scheme: QuantizationSettings, config: QuantizeConfig,
                 exclude: list[str]) -> Path: ...

    def run(self, config: QuantizeConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        model = artifact.load()
        scheme = self.scheme(config, ctx)
        work = ctx.stage_dir / "work"
        work.mkdir(parents=True, exist_ok=True)

        def evaluate(path: Path) -> float:
            if path == artifact.path:  # the input carries its contract already; never rewrite another stage's file
                return ctx.accuracy(artifact)
            return ctx.accuracy(Artifact("onnx", save_onnx(onnx.load(str(path)), model.spec, path)))  # a candidate

        feeds = self.feeds(config, model, ctx)

        def quantize(out: Path, keep_float: list[str]) -> Path:
            return self.quantize(artifact.path, out, feeds, scheme, config, keep_float)

        min_accuracy = ctx.reference_accuracy - ctx.allowed_drop(config.max_accuracy_drop)
        prepared, tower_of = self.prepare(artifact.path, work), {i.name: i.tower_name for i in model.spec.inputs}
        outcome = quantize_with_fallback(artifact.path, prepared, work, quantize, scheme.op_types, config.keep_float,
                                         config.fallback, feeds, evaluate, min_accuracy, log=ctx.log,
                                         tower_of=tower_of)
        chosen, speed = outcome.path, []
        if config.speed.enabled:
            groups = nodes_by_tower(onnx.load(str(prepared)), scheme.op_types, tower_of)
            timer = ort_time_pair(batch_feeds(feeds, config.speed.batch_sizes, model.spec), config.speed.seconds)
            chosen, _, speed = keep_int8_where_it_pays(outcome.path, outcome.kept_float, groups, quantize, work,
                                                       config.speed, timer, log=ctx.log)
            if chosen != outcome.path and evaluate(chosen) < min_accuracy:  # more float, yet worse: keep the first
                ctx.log("speed: the faster placement misses the accuracy gate; keeping the accuracy fallback's")
                chosen = outcome.path
        final = save_onnx(onnx.load(str(chosen)), model.spec, ctx.stage_dir / "model.onnx")
        shutil.rmtree(work, ignore_errors=True)
        scheme_used = {**scheme.model_dump(), "reduce_range": scheme.reduces_range()}  # "auto" as resolved here
        return Artifact("onnx", final), {"scheme": scheme_used, "backend": self.name, **outcome.to_dict(),
                                         "speed": speed_to_dict(speed)}


# Measured on the real model: INC's graph scored 90.0 % with ONNX Runtime's fusions off, 80.9 % with its kernels.
SATURATION_HINT = ("on this x86 CPU without VNNI, ONNX Runtime's u8 x s8 int8 kernels saturate with 8-bit weights, "
                   "which PyTorch's simulated int8 does not show: use backend: ort (7-bit weights here, "
                   "reduce_range: auto), or run the graph on a CPU with VNNI")


class TorchQuantizer(Quantizer):
    """Quantizes the PyTorch model with its library's own tuning, then exports ONNX Q/DQ."""

    consumes = "torch"

    @abstractmethod
    def tune(self, model: LoadedModel, feeds: Feeds, evaluate: Callable[[Any], float], config: QuantizeConfig,
             tolerable_relative_loss: float) -> Any:
        """Return the quantized module (e.g. a PT2E GraphModule) whose forward takes the contract's inputs;
        ``evaluate(module)`` is the gate's accuracy, ``tolerable_relative_loss`` the budget over the reference."""

    def run(self, config: QuantizeConfig, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        model = artifact.load()
        budget = ctx.allowed_drop(config.max_accuracy_drop)
        min_accuracy = ctx.reference_accuracy - budget

        def evaluate(module: Any) -> float:  # the same accuracy as every gate, on the tuned graph
            return ctx.session_accuracy(TorchSession(module, model.spec, threads=ctx.threads))

        tuned = self.tune(model, self.feeds(config, model, ctx), evaluate, config,
                          budget / max(ctx.reference_accuracy, 1e-9))
        onnx_path = save_onnx(to_onnx_proto(model, ctx.profile.section("onnx"), module=tuned), model.spec,
                              ctx.stage_dir / "model.onnx")
        accuracy = ctx.accuracy(Artifact("onnx", onnx_path))
        if accuracy < min_accuracy:  # libraries' tuners return their best model even when it missed
            onnx_path.rename(ctx.stage_dir / "model.rejected.onnx")
            raise GateFailed(f"{self.name} int8, exported to ONNX, misses its accuracy gate: {100 * accuracy:.2f} % < "
                             f"required {100 * min_accuracy:.2f} % (its tuning, at most {config.fallback.max_tries + 1} "
                             "trials, scores the PyTorch graph; the gate scores the exported one)",
                             SATURATION_HINT if ctx.profile.quantization.reduces_range() else
                             "raise fallback.max_tries, try backend: ort, or loosen the gate")
        ops = [n.op_type for n in onnx.load(str(onnx_path)).graph.node]
        return Artifact("onnx", onnx_path), {"backend": self.name, "quantize_linear_nodes": ops.count("QuantizeLinear")}


QUANTIZERS: Registry[Quantizer] = Registry("quantizer", "edgemm.compress.quantizers", entry_points="edgemm.quantizers")
