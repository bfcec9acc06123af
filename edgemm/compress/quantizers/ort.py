"""onnxruntime.quantization: static Q/DQ calibrated on real samples with the target's scheme, dynamic int8,
or both in one graph, chosen per tower (static for CNN towers, dynamic for transformer text towers, whose
activations static int8 ranges fit badly: ../shared/NOTES.md measured MiniLM at cosine 0.94 static vs
0.993 dynamic)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from functools import lru_cache
from typing import Literal, get_args

from pydantic import Field

from edgemm.artifacts import atomic_path, sha256_file, write_text
from edgemm.compress.placement import CHAIN_OPS, chain_nodes, float_tensors
from edgemm.models.graph_towers import node_towers
from edgemm.compress.quantizer import QUANTIZERS, Feeds, OnnxQuantizer, QuantizeConfig
from edgemm.export.profiles import QuantizationSettings
from edgemm.errors import ConfigError, EdgemmError, LibraryFailed
from edgemm.lazy import lazy_import
from edgemm.models.registry import resolve_model
from edgemm.spec import Modality

onnx = lazy_import("onnx")
quantization = lazy_import("onnxruntime.quantization")
shape_inference = lazy_import("onnxruntime.quantization.shape_inference")

PREPROCESSED = "fp32.pre.onnx"


Mode = Literal["static", "dynamic"]


# Percentile/entropy calibration keeps every intermediate tensor of every batch until the end (no bound in
# onnxruntime 1.32): 256 samples of a 224x224 image + text model passed 18 GB. They calibrate on this many.
HISTOGRAM_SAMPLES = 64


# The caches below are keyed by the files' sha256, not their modification time: a graph replaced by another
# with the same time (a copy that keeps it, a coarse clock) must be read again. Hashing costs ~0.1 s a try.
@lru_cache(maxsize=1)
def _load_graph(graph: str, digest: str):
    """The preprocessed graph, read once per fallback run rather than once per try (and per use)."""
    return onnx.load(graph, load_external_data=False)


@lru_cache(maxsize=1)
def _float_tensors(graph: str, digest: str) -> set[str]:
    return float_tensors(_load_graph(graph, digest))


@lru_cache(maxsize=2)
def _graph_towers(graph: str, fp32: str,
                  digests: tuple[str, str]) -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    """Node -> tower, tower -> modality and the tower names: read once per graph, not once per fallback try."""
    spec = resolve_model(fp32).spec  # the contract the ONNX carries
    modality = {tower: spec.input(inputs[0]).modality for tower, inputs in spec.towers.items()}
    towers = node_towers(_load_graph(graph, digests[0]), {i.name: i.tower_name for i in spec.inputs})
    return towers, modality, tuple(spec.towers)


def batches_in_memory(batches: int) -> int | None:
    """How many batches of every intermediate tensor calibration keeps before folding them into ranges
    (unbounded, a 26 M-parameter image + text model peaked at 6.5 GB RSS). Not a divisor of the batch
    count: onnxruntime 1.32 raises "No data is collected" when the last fold leaves nothing behind."""
    return next((k for k in range(2, batches) if batches % k), None)


class OrtQuantizeConfig(QuantizeConfig):
    backend: Literal["ort"] = "ort"
    mode: Mode = "static"
    tower_modes: dict[str, Mode] = Field(default_factory=dict, description="per tower (the contract's tower names) "
                                         "or per modality (text, image...): static or dynamic int8; others use mode")
    placement: Literal["auto", "narrow"] = Field("auto", description=(
        "auto: the Add/Mul/Concat/pooling/Relu/Reshape/Transpose between int8 Conv/MatMul/Gemm are quantized "
        "too where that leaves fewer int8<->float transitions (a residual CNN block becomes one int8 chain; "
        "a transformer's residual Add between LayerNorms stays float; compress/placement.py); narrow: Q/DQ on "
        "the scheme's op types only (onnxruntime's own default)"))
    calibration_method: Literal["minmax", "percentile", "entropy"] | None = Field(None, description=(
        "default: the target profile's; percentile and entropy calibrate on the first 64 samples (their "
        "histograms hold every activation in memory)"))


def calibration_reader(feeds: Feeds):
    """An onnxruntime CalibrationDataReader over a list of feeds."""

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's recommended pre-pass (shape inference + optimisation) before quantizing, done once per source:
    the fallback's tries reuse it, but only while a stamp beside it names the same source bytes (another model
    quantized into the same folder, or a pass cut short, gets a new one)."""
    digest, stamp = sha256_file(fp32), out.with_name(out.name + ".source-sha256")
    if out.exists() and stamp.exists() and stamp.read_text() == digest:
        return out
    stamp.unlink(missing_ok=True)  # never a stamp beside a graph it does not describe
    with atomic_path(out) as partial:
        # Symbolic shape inference fails on dynamo-exported graphs (shared notes): skip it.
        shape_inference.quant_pre_process(str(fp32), str(partial), skip_symbolic_shape=True)
    write_text(stamp, digest)
    return out


@QUANTIZERS.register
class OrtQuantizer(OnnxQuantizer):
    name = "ort"
    description = "onnxruntime.quantization: static Q/DQ (target's scheme, Conv/MatMul/Gemm) or dynamic int8"
    config = OrtQuantizeConfig
    requires = ("onnxruntime",)
    supports = ("int8", "cpu", "cuda", "tensorrt")

    def prepare(self, fp32: Path, work_dir: Path) -> Path:
        return preprocess(fp32, work_dir / PREPROCESSED)  # beside the output, never in the input's stage

    def scheme(self, config: OrtQuantizeConfig, ctx) -> QuantizationSettings:
        scheme = ctx.profile.quantization
        if config.calibration_method:
            scheme = scheme.model_copy(update={"calibration_method": config.calibration_method})
        return scheme

    def quantize(self, fp32, out, feeds, scheme, config: OrtQuantizeConfig, exclude):
        try:
            return self._quantize(fp32, out, feeds, scheme, config, exclude)
        except EdgemmError:
            raise
        except Exception as err:  # onnxruntime.quantization raises plain ValueError/RuntimeError on odd graphs
            raise LibraryFailed(f"onnxruntime's quantizer failed on {fp32.name}: {type(err).__name__}: {str(err)[:300]}",
                                "try mode: dynamic, keep the tower it names in float (keep_float), or "
                                "backend: modelopt") from None

    def _quantize(self, fp32, out, feeds, scheme, config: OrtQuantizeConfig, exclude):
        source = self.prepare(fp32, out.parent)
        dynamic = self.dynamic_nodes(source, fp32, config)
        static_part = out.with_suffix(".static.onnx") if dynamic else out
        if config.mode == "static" or set(config.tower_modes.values()) & {"static"}:
            static_scheme, static_exclude = scheme, sorted(set(exclude) | dynamic)
            if config.placement == "auto":
                static_scheme, static_exclude = self.with_chains(source, scheme, static_exclude)
            self.quantize_static(source, static_part, feeds, static_scheme, config, static_exclude)
        else:
            static_part = source
        if dynamic - set(exclude):  # the dynamic towers' MatMuls, on the graph whose other towers are static
            quantization.quantize_dynamic(
                str(static_part), str(out), per_channel=scheme.per_channel, weight_type=quantization.QuantType.QInt8,
                reduce_range=scheme.reduces_range(),
                op_types_to_quantize=[t for t in scheme.op_types if t in ("MatMul", "Gemm")],
                nodes_to_quantize=sorted(dynamic - set(exclude)))
            if static_part != source:
                static_part.unlink(missing_ok=True)
        elif static_part != out:
            out.write_bytes(static_part.read_bytes())
        return out

    @staticmethod
    def with_chains(graph: Path, scheme, exclude: list[str]) -> tuple[QuantizationSettings, list[str]]:
        """The scheme with the chain ops added, and every chain op placement did not choose excluded."""
        digest = sha256_file(graph)
        model = _load_graph(str(graph), digest)
        int8 = {n.name for n in model.graph.node if n.op_type in scheme.op_types} - set(exclude)
        chained = chain_nodes(model, int8, exclude, _float_tensors(str(graph), digest))
        others = [n.name for n in model.graph.node if n.op_type in CHAIN_OPS and n.name not in chained]
        extended = scheme.model_copy(update={"op_types": list(dict.fromkeys([*scheme.op_types, *CHAIN_OPS]))})
        return extended, sorted(set(exclude) | set(others))

    @staticmethod
    def dynamic_nodes(graph: Path, fp32: Path, config: OrtQuantizeConfig) -> set[str]:
        """Nodes of the towers quantized dynamically (the tower of a node: ``models/graph_towers.py``)."""
        if config.mode == "static" and "dynamic" not in config.tower_modes.values():
            return set()
        towers, modality, names = _graph_towers(str(graph), str(fp32), (sha256_file(graph), sha256_file(fp32)))
        unknown = set(config.tower_modes) - set(names) - set(get_args(Modality)) - {"fusion"}  # modalities: any model
        if unknown:
            raise ConfigError(f"quantize.tower_modes names {sorted(unknown)}, which are neither towers nor modalities "
                              "of the model", f"its towers: {sorted(names)} (and fusion); modalities: "
                                             f"{sorted(set(modality.values()))}")
        modes = config.tower_modes
        return {node for node, tower in towers.items()
                if modes.get(tower, modes.get(modality.get(tower, ""), config.mode)) == "dynamic"}

    @staticmethod
    def quantize_static(source: Path, out: Path, feeds, scheme, config: OrtQuantizeConfig, exclude: list[str]) -> None:
        q = quantization
        if scheme.calibration_method != "minmax":  # histogram calibrators hold every activation of every batch
            rows = max(1, len(next(iter(feeds[0].values()))))
            feeds = feeds[:max(1, HISTOGRAM_SAMPLES // rows)]
        method = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
                  "entropy": q.CalibrationMethod.Entropy}[scheme.calibration_method]
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress lines of their own
            q.quantize_static(
                str(source), str(out), calibration_reader(feeds), quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=scheme.op_types, per_channel=scheme.per_channel, nodes_to_exclude=exclude,
                calibrate_method=method, reduce_range=scheme.reduces_range(),
                activation_type=q.QuantType.QUInt8 if scheme.activations == "uint8" else q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8,
                extra_options={"ActivationSymmetric": scheme.symmetric_activations, "WeightSymmetric": True,
                               "CalibPercentile": 99.99, "CalibMaxIntermediateOutputs": batches_in_memory(len(feeds))})

