"""The bench report as typed values: :class:`BenchReport` holds :class:`Result` rows, each with its
:class:`~edgemm.bench.latency.Latency` per batch size. ``report.schema.json`` is generated from
these models (``python -m edgemm.bench.schema``); reports of schema 2 are upgraded on load.

A result's ``id`` is stable: the artifact's content hash plus the backend, so a baseline is
matched to the same artifact on the same backend, never to a row that merely shares a label;
a latency row is that id and its batch size.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgemm.bench.latency import Latency, TimingSettings
from edgemm.config import format_validation_error
from edgemm.errors import ConfigError

SCHEMA_VERSION = 3
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
Precision = Literal["fp32", "fp16", "int8"]


def result_id(artifact_sha256: str, backend: str) -> str:
    return f"{artifact_sha256[:12]}-{backend}"


class Breakdown(BaseModel):
    """Batch-1 latency of each step from raw sensor data to the task output (PyTorch models)."""

    model: str
    stages: dict[str, Latency]  # "preprocess:<input>", "tower:<input>", "fusion head", "end to end", "model only"

    @property
    def sum_of_parts_p50_ms(self) -> float:
        return sum(lat.p50_ms for name, lat in self.stages.items() if name not in ("end to end", "model only"))


class OpProfile(BaseModel):
    """ONNX Runtime's profiler over the graph it runs (``bench --profile``): kernel time per op type and tower."""

    batch_size: int
    runs: int
    kernel_ms: float = Field(description="mean kernel time per run, every node")
    by_op: dict[str, float] = Field(description="ms per run by op type, largest first")
    by_tower: dict[str, float] = Field(description="ms per run by tower of the contract ('fusion' where towers meet)")
    nodes: int = Field(description="nodes after ORT's graph optimisations")
    standalone_qdq_nodes: int = Field(description="QuantizeLinear/DequantizeLinear left after ORT's fusions")


class Result(BaseModel):
    """One artifact on one backend."""

    id: str = Field(description="artifact content hash (12 hex digits) + backend: stable across runs")
    name: str = Field(description="the artifact's display name, unique within the report")
    artifact: str
    artifact_sha256: str | None = Field(description="None only in reports upgraded from schema 2")
    kind: str = Field(description="zoo, factory, run (PyTorch) or onnx")
    model: str = Field(description="the model contract's name")
    backend: str
    precision: Precision
    parameters: int | None = None
    size_bytes: int | None = None
    trained: bool = True
    flops_per_item: int | None = None
    efficiency: float | None = Field(None, description="achieved throughput at the largest batch / peak_precision's GEMM peak")
    peak_precision: Precision | None = Field(None, description="which measured peak `efficiency` is relative to")
    memory: dict[str, float] = Field(default_factory=dict)
    power: dict[str, float] = Field(default_factory=dict, description="Jetson (tegrastats): mean mW and mJ per "
                                                                       "item, per batch size")
    accuracy: dict[str, float] = Field(default_factory=dict)
    fidelity: dict[str, float] = Field(default_factory=dict)
    latency: list[Latency] = Field(default_factory=list)
    breakdown: Breakdown | None = None
    profile: OpProfile | None = None
    runtime_options: dict[str, Any] = Field(default_factory=dict, description="backend options the session ran "
                                            "with (ONNX Runtime: optimisation level, spinning, memory pattern...)")
    engine_layers: dict[str, Any] | None = Field(None, description="TensorRT engines: the engine's own layer "
                                                 "information (IEngineInspector, JSON): kernels, precisions")

    def at(self, batch_size: int) -> Latency | None:
        return next((lat for lat in self.latency if lat.batch_size == batch_size), None)

    @property
    def label(self) -> str:
        return f"{self.name} on {self.backend}"


class Machine(BaseModel):
    """Where it was measured (see ``edgemm.environment.machine_info``)."""

    model_config = ConfigDict(extra="allow")  # machine facts grow (Jetson release, power mode...)

    cpu: str | None = None
    vector_isa: str | None = Field(None, description="widest x86 SIMD / int8 extension (e.g. AVX-512 VNNI)")
    logical_cores: int | None = None
    threads: int | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    gpu: dict[str, Any] | None = None
    peak_gops: dict[str, float] = Field(default_factory=dict, description="measured GEMM peak per precision")
    peak_rss_mb: float | None = None


class BenchSettings(BaseModel):
    batch_sizes: list[int]
    threads: int
    splits: list[str]
    timing: TimingSettings


class BenchReport(BaseModel):
    schema_version: Literal[3] = SCHEMA_VERSION
    tool: str = "edgemm bench"
    created: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    machine: Machine
    settings: BenchSettings
    results: list[Result]
    warnings: list[str] = Field(default_factory=list)

    def result(self, result_id: str) -> Result | None:
        return next((r for r in self.results if r.id == result_id), None)

    def for_artifact(self, artifact: str, backend: str | None = None) -> Result:
        """The result of the artifact given to the run as ``artifact`` (on ``backend`` when it ran on several)."""
        found = [r for r in self.results if r.artifact == artifact and backend in (None, r.backend)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} results for {artifact!r}" + (f" on {backend}" if backend else ""))
        return found[0]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "BenchReport":
        """A ``report.json`` (or a folder holding one); schema 2 reports are upgraded."""
        path = Path(path)
        path = path / "report.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read bench report {path} ({err})",
                              "give a report.json written by edgemm bench") from None
        if not isinstance(data, dict) or "schema_version" not in data:
            raise ConfigError(f"{path} is not a bench report (it has no schema_version)",
                              "give a report.json written by edgemm bench")
        version = data["schema_version"]
        if version not in (2, SCHEMA_VERSION):
            raise ConfigError(f"{path} has schema_version {version!r}; this edgemm reads 2 and {SCHEMA_VERSION}",
                              "re-run `edgemm bench` with this version to get a comparable report")
        try:
            return cls.model_validate(upgrade_v2(data) if version == 2 else data)
        except ValidationError as err:
            raise ConfigError(f"{path} is not a valid bench report: {format_validation_error(err)[:500]}",
                              "give a report.json written by edgemm bench") from None
        except (KeyError, TypeError, AttributeError) as err:  # a schema-2 file missing what schema 2 had
            raise ConfigError(f"{path} is not a valid schema-2 bench report ({type(err).__name__}: {err})",
                              "give a report.json written by edgemm bench") from None


def upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 -> 3: ids (from the artifact path: v2 kept no content hash), precision, per-precision peaks."""
    machine = dict(data.get("machine", {}))
    peak = machine.pop("peak_gflops_fp32", None)
    machine["peak_gops"] = {"fp32": peak} if peak else {}
    results, dropped = [], []
    for r in data.get("results", []):
        path_hash = hashlib.sha256(f"{r['artifact']}".encode()).hexdigest()
        precision = "int8" if r.get("int8") else "fp32"
        if r.get("breakdown"):
            dropped.append(r["model"])
        results.append({
            "id": result_id(path_hash, r["backend"]), "name": r["model"], "artifact": r["artifact"],
            "artifact_sha256": None, "kind": r.get("kind", "onnx"), "model": r["model"].split(" (")[0],
            "backend": r["backend"], "precision": precision, "parameters": r.get("parameters"),
            "size_bytes": r.get("size_bytes"), "trained": r.get("trained", True),
            "flops_per_item": r.get("flops_per_item"), "efficiency": r.get("efficiency"),
            "peak_precision": "fp32" if r.get("efficiency") is not None else None,  # v2 used the fp32 peak for all
            "memory": r.get("memory", {}), "accuracy": r.get("accuracy", {}), "fidelity": r.get("fidelity", {}),
            "latency": r.get("latency", [])})
    warnings = list(data.get("warnings", []))
    if dropped:
        warnings.append(f"upgraded from schema 2: the per-modality breakdown of {', '.join(dropped)} kept no raw "
                        "samples and is not carried over")
    settings = dict(data.get("settings", {}))
    settings["timing"] = {**settings.get("timing", {}), "rounds": settings.get("rounds", 1)}
    settings.pop("rounds", None)
    return {**data, "schema_version": SCHEMA_VERSION, "machine": machine, "settings": settings, "results": results,
            "warnings": warnings}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json``, generated from the models (as written, with statistics)."""
    schema = BenchReport.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


if __name__ == "__main__":  # python -m edgemm.bench.schema > edgemm/bench/report.schema.json
    print(json.dumps(json_schema(), indent=2))
