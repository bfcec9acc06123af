"""Name a model: a zoo name, ``package.module:factory``, an edgemm run directory, or an ``.onnx`` file.

A factory returns ``(module, ModelSpec)`` (or a module with a ``spec``
attribute). A saved model is ``model.json`` (factory + keyword arguments +
spec) beside ``model.safetensors``: loading rebuilds the architecture by
calling the factory again and loads the tensors, so nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from edgemm.artifacts import sha256_file, write_json
from edgemm.config import error_text
from edgemm.data.datasets import choose_data
from edgemm.errors import USER_CODE_ERRORS, ModelLoadError
from edgemm.lazy import import_user_module, lazy_import
from edgemm.models.structure import record_structure, replay_structure
from edgemm.models.weights import load_weights, read_state_dict, save_weights
from edgemm.registry import Component, Registry
from edgemm.spec import AxisRange, InputSpec, ModelSpec, OutputSpec, TaskSpec
from edgemm.trust import require_trusted, trust

onnx = lazy_import("onnx")
torch = lazy_import("torch")

MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"


class ZooEntry(Component):
    """A built-in model: a factory and its keyword arguments (registered by a module in ``models/zoo/``)."""

    def __init__(self, name: str, factory: str, kwargs: dict[str, Any] | None = None, description: str = ""):
        self.name, self.factory, self.kwargs, self.description = name, factory, dict(kwargs or {}), description


ZOO: Registry[ZooEntry] = Registry("zoo model", "edgemm.models.zoo", entry_points="edgemm.zoo")


@dataclass
class LoadedModel:
    """A resolved model: a torch module (None for ONNX files), its spec and where it came from."""

    spec: ModelSpec
    source: str
    kind: str  # "zoo" | "factory" | "run" | "onnx"
    module: Any = None
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    onnx_path: Path | None = None
    weights: Path | None = None
    engine_path: Path | None = None  # a TensorRT engine (its contract is read from ENGINE.json beside it)

    @property
    def trained(self) -> bool:
        """Weights worth scoring: loaded from a file, an ONNX graph, or a factory that says it loads them."""
        return self.weights is not None or self.kind in ("onnx", "engine") or self.spec.trained

    @property
    def artifact_kind(self) -> str:
        """What a backend or stage consumes: "onnx" for ONNX files, "torch" for PyTorch models."""
        if self.engine_path is not None:
            return "engine"
        return "onnx" if self.onnx_path is not None else "torch"

    def sha256(self) -> str:
        """Content hash: the ONNX bytes, or the factory, its arguments and every tensor the module holds
        (weights a factory loads by itself included), so an edited model never passes for the old one."""
        if self.engine_path is not None or self.onnx_path is not None:
            return content_sha256(self.engine_path or self.onnx_path)
        factory = json.dumps({"factory": self.factory, "kwargs": self.kwargs}, sort_keys=True, default=str)
        return hashlib.sha256(f"{factory}|{module_sha256(self.module)}".encode()).hexdigest()

    def parameter_count(self) -> int | None:
        return None if self.module is None else sum(p.numel() for p in self.module.parameters())


def content_sha256(path: Path) -> str:
    """An artifact on disk: an ONNX file with its external data, or a model directory (model.json + weights)."""
    path = Path(path)
    files = [path / MODEL_JSON, path / WEIGHTS] if path.is_dir() else [path, Path(f"{path}.data")]
    parts = [sha256_file(f) for f in files if f.is_file()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def module_sha256(module: Any) -> str:
    """Every tensor of a module's state: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def call_factory(ref: str, kwargs: dict[str, Any] | None = None, source: str | None = None) -> tuple[Any, ModelSpec]:
    """Import ``package.module:factory`` and call it; whatever goes wrong is a ModelLoadError naming it."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"{ref!r} is not 'package.module:factory'", "e.g. mypkg.models:build")
    try:
        imported = import_user_module(module_name)
    except ModuleNotFoundError as err:
        raise ModelLoadError(f"cannot import {module_name!r} for {ref!r} ({err})",
                             "install the package or add its folder to PYTHONPATH") from None
    except USER_CODE_ERRORS as err:  # the user's module itself fails (or exits): its error is what helps
        raise ModelLoadError(f"importing {module_name!r} for {ref!r} failed: {_describe(err)}",
                             f"fix the module; `python -c 'import {module_name}'` shows the traceback") from None
    factory = getattr(imported, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"module {module_name!r} has no callable {attr!r}", "check the factory name")
    try:
        result = factory(**(kwargs or {}))
    except USER_CODE_ERRORS as err:
        called = f"{module_name}.{attr}(**{kwargs!r})" if kwargs else f"{module_name}.{attr}()"
        where = f" with the arguments {source} records ({kwargs!r})" if source and kwargs else ""
        raise ModelLoadError(f"factory {ref!r} raised {_describe(err)}{where}",
                             f"fix the factory{' or those arguments' if where else ''}; "
                             f"`python -c 'import {module_name}; {called}'` shows the traceback") from None
    if isinstance(result, tuple) and len(result) != 2:
        raise ModelLoadError(f"factory {ref!r} returned a tuple of {len(result)} items",
                             "return (module, edgemm.ModelSpec(...)) or a module with a .spec attribute")
    module, spec = result if isinstance(result, tuple) else (result, getattr(result, "spec", None))
    if not isinstance(spec, ModelSpec):
        raise ModelLoadError(f"factory {ref!r} returned no ModelSpec",
                             "return (module, edgemm.ModelSpec(...)) or set module.spec")
    if not callable(getattr(module, "eval", None)):
        raise ModelLoadError(f"factory {ref!r} returned a {type(module).__name__}, not a torch.nn.Module",
                             "return (module, spec) with the model first")
    return module.eval(), spec


def _describe(err: Exception) -> str:
    detail = error_text(err)
    return f"{type(err).__name__}: {detail[:400]}"


def resolve_model(ref: str | Path, weights: str | Path | None = None) -> LoadedModel:
    """Turn a model reference into a :class:`LoadedModel`; raise ModelLoadError with a fix if it cannot."""
    text = str(ref)
    if not text.strip():
        raise ModelLoadError("the model reference is empty", "give a zoo name, module:factory, run directory or .onnx file")
    path = Path(text)
    if text.endswith((".engine", ".plan")):
        return _load_engine(path)
    if text.endswith(".onnx"):
        if weights:
            raise ModelLoadError("--weights applies to PyTorch models, not ONNX files", "drop --weights")
        return _load_onnx(path)
    if path.is_dir():
        loaded = _load_run_dir(path)
    elif text in ZOO:
        entry = ZOO.get(text)
        module, spec = call_factory(entry.factory, entry.kwargs)
        loaded = LoadedModel(spec, text, "zoo", module, entry.factory, dict(entry.kwargs))
    elif ":" in text and not path.exists():
        trust(text)  # the user named it: run directories written from it may call it again
        module, spec = call_factory(text)
        loaded = LoadedModel(spec, text, "factory", module, text)
    else:
        raise ModelLoadError(f"unknown model {text!r}: not a zoo name, module:factory, run directory or .onnx file",
                             f"zoo names: {', '.join(ZOO.names())}")
    if weights:
        load_weights(loaded.module, weights)
        loaded.weights = Path(weights)
        loaded.spec = loaded.spec.model_copy(update={"trained": True})  # recorded in what is written from it
    return loaded


def with_data(model: LoadedModel, explicit: str | None) -> LoadedModel:
    """Record in the model's contract the data a command reads: ``--data``, else the data it records
    (code named in a run directory or ONNX file someone else wrote is not run: see ``choose_data``)."""
    dataset = choose_data(explicit, model.spec, trusted=model.kind in ("zoo", "factory"))
    if dataset != model.spec.dataset:
        model.spec = model.spec.model_copy(update={"dataset": dataset})
    return model


def _model_dir(path: Path) -> Path:
    """A run directory may hold the model directly or in ``model/``."""
    for candidate in (path, path / "model"):
        if (candidate / MODEL_JSON).is_file():
            return candidate
    raise ModelLoadError(f"{path} holds no {MODEL_JSON}: not an edgemm model directory",
                         "point at a directory written by `edgemm demo` / `edgemm compress`, or its model/ folder")


@dataclass
class RunRecord:
    """What a run directory's ``model.json`` records, checked for types (nothing in it has run yet)."""

    where: Path
    factory: str
    kwargs: dict[str, Any]
    structure: dict[str, dict[str, Any]]
    spec: ModelSpec | None


def read_contract(ref: str | Path) -> ModelSpec:
    """A model's contract without running any code: a run directory's is read from its model.json
    (``edgemm info`` on a downloaded run needs no trust); other references are resolved."""
    path = Path(str(ref))
    if str(ref).strip() and path.is_dir() and not str(ref).endswith(".onnx"):
        record = _read_record(_model_dir(path))
        if record.spec is not None:
            return record.spec
    return resolve_model(ref).spec


def _read_record(model_dir: Path) -> RunRecord:
    where = model_dir / MODEL_JSON
    try:
        meta = json.loads(where.read_bytes().decode())
        factory, kwargs = meta["factory"], meta.get("kwargs", {})
        if not isinstance(factory, str) or not isinstance(kwargs, dict):
            raise TypeError("'factory' must be a 'module:function' string and 'kwargs' an object")
        structure = meta.get("structure") or {}
        if not isinstance(structure, dict) or not all(isinstance(v, dict) for v in structure.values()):
            raise TypeError("'structure' must map layer names to their recorded shape attributes")
        spec = ModelSpec.model_validate(meta["spec"]) if "spec" in meta else None
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{where} is corrupt ({error_text(err)[:200]})", "re-create the run") from None
    return RunRecord(where, factory, kwargs, structure, spec)


def _load_run_dir(path: Path) -> LoadedModel:
    """Rebuild with the recorded factory, replay recorded layer shapes (pruning), load tensors."""
    model_dir = _model_dir(path)
    record = _read_record(model_dir)
    factory, kwargs, where = record.factory, record.kwargs, record.where
    # A zoo entry (edgemm's, or an installed package's) loads freely with its own arguments; arguments from a
    # file are code too (a path a factory loads, a flag it forwards), so anything else needs trust.
    if not any(entry.factory == factory and json.loads(json.dumps(entry.kwargs)) == kwargs for entry in ZOO):
        require_trusted(factory, str(where))  # before importing: importing a module runs it too
    module, factory_spec = call_factory(factory, kwargs, str(where))
    state = read_state_dict(model_dir / WEIGHTS)
    if record.structure:
        replay_structure(module, record.structure, state)
    load_weights(module, model_dir / WEIGHTS, state)
    return LoadedModel(record.spec or factory_spec, str(path), "run", module.eval(), factory, kwargs,
                       weights=model_dir / WEIGHTS)


def save_model(loaded: LoadedModel, directory: str | Path) -> list[str]:
    """Write ``model.json`` + ``model.safetensors``; return the file names written."""
    if loaded.module is None or loaded.factory is None:
        raise ModelLoadError(f"{loaded.source} has no factory to record", "save PyTorch models built by a factory")
    directory = Path(directory)
    save_weights(loaded.module, directory / WEIGHTS)
    write_json(directory / MODEL_JSON, {"factory": loaded.factory, "kwargs": loaded.kwargs,
                                        "spec": loaded.spec.model_dump(mode="json"),
                                        "structure": record_structure(loaded.module)})
    return [WEIGHTS, MODEL_JSON]


# -- ONNX files ---------------------------------------------------------------------------
SPEC_METADATA_KEY = "edgemm.spec"


def _load_engine(path: Path) -> LoadedModel:
    """A TensorRT engine built by edgemm: its contract and build key are in ``ENGINE.json`` beside it."""
    sidecar = path.with_name(path.name + ".json")
    if not path.is_file():
        raise ModelLoadError(f"engine {path} does not exist", "check the path")
    try:
        spec = ModelSpec.model_validate(json.loads(sidecar.read_text(encoding="utf-8"))["spec"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{path} has no readable contract beside it ({sidecar.name}: {type(err).__name__})",
                             "use an engine built by edgemm (the bundle's build_on_device.py or export --target "
                             "tensorrt), which writes ENGINE.json with the contract and the build key") from None
    return LoadedModel(spec, str(path), "engine", engine_path=path)


def has_contract(model: LoadedModel) -> bool:
    """True unless ``model`` is an ONNX file without edgemm's contract (whose axis ranges were guessed)."""
    if model.onnx_path is None:
        return True
    proto = onnx.load(str(model.onnx_path), load_external_data=False)
    return any(p.key == SPEC_METADATA_KEY for p in proto.metadata_props)


def _load_onnx(path: Path) -> LoadedModel:
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not an ONNX file", "give the .onnx file inside it, "
                             "or the folder without the .onnx suffix if it is a run directory")
    if not path.is_file():
        raise ModelLoadError(f"ONNX file {path} does not exist", "check the path")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and friends
        raise ModelLoadError(f"{path} is not a readable ONNX model ({str(err)[:200]})", "re-export it") from None
    if not proto.graph.output:  # protobuf parses an empty or foreign file as an empty model
        raise ModelLoadError(f"{path} is not an ONNX model (no graph outputs; {path.stat().st_size} bytes)",
                             "re-export it; the file may be empty or truncated")
    meta = {p.key: p.value for p in proto.metadata_props}
    if SPEC_METADATA_KEY not in meta:
        return LoadedModel(spec_from_onnx(proto, path.stem), str(path), "onnx", onnx_path=path)
    try:
        spec = ModelSpec.from_json(meta[SPEC_METADATA_KEY])
    except (ValueError, TypeError) as err:  # JSONDecodeError, pydantic's ValidationError
        detail = error_text(err)
        raise ModelLoadError(f"the model contract stored in {path} ({SPEC_METADATA_KEY!r} metadata) is corrupt: "
                             f"{detail[:300]}", "re-export the model with `edgemm export`") from None
    _check_contract_matches_graph(spec, proto, path)
    return LoadedModel(spec, str(path), "onnx", onnx_path=path)


def _check_contract_matches_graph(spec: ModelSpec, proto: Any, path: Path) -> None:
    """A contract whose inputs are not the graph's, or that names outputs the graph lacks, was written for
    another model (a graph may have more outputs than the contract scores)."""
    initialisers = {i.name for i in proto.graph.initializer}
    graph_inputs = {v.name for v in proto.graph.input if v.name not in initialisers}
    graph_outputs = {v.name for v in proto.graph.output}
    if set(spec.input_names) != graph_inputs:
        _lying_contract(path, "inputs", spec.input_names, graph_inputs)
    if not set(spec.output_names) <= graph_outputs:
        _lying_contract(path, "outputs", spec.output_names, graph_outputs)


def _lying_contract(path: Path, kind: str, named: list[str], present: set[str]) -> None:
    raise ModelLoadError(f"the contract stored in {path} names {kind} {sorted(named)} but the graph has "
                         f"{sorted(present)}: the metadata belongs to another model",
                         "re-export the model with `edgemm export`")


_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 2: "uint8", 9: "bool"}


def spec_from_onnx(proto: Any, name: str) -> ModelSpec:
    """Infer a generic spec for an ONNX file edgemm did not write (modality 'tensor', no task)."""
    def dims(value_info: Any) -> tuple[int | str, ...]:
        out = []
        for i, d in enumerate(value_info.type.tensor_type.shape.dim):
            out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{value_info.name}_dim{i}"))
        return tuple(out)

    initialisers = {i.name for i in proto.graph.initializer}
    inputs, axes = [], {}
    for vi in (v for v in proto.graph.input if v.name not in initialisers):
        elem = vi.type.tensor_type.elem_type
        if elem not in _ONNX_DTYPES:
            raise ModelLoadError(f"input {vi.name!r} of {name} has ONNX element type {elem}, which edgemm cannot feed",
                                 "use float32/float16/int64/int32/uint8/bool inputs")
        shape = dims(vi)
        for pos, d in enumerate(shape):
            if isinstance(d, str):
                axes[d] = AxisRange(min=1, opt=1 if pos == 0 else 16, max=256 if pos == 0 else 1024)
        inputs.append(InputSpec(name=vi.name, modality="tensor", dtype=_ONNX_DTYPES[elem], shape=shape))
    outputs = tuple(OutputSpec(name=o.name, shape=dims(o)) for o in proto.graph.output)
    return ModelSpec(name=name, inputs=tuple(inputs), outputs=outputs, axes=axes,
                     task=TaskSpec(kind="embedding", output=outputs[0].name))
