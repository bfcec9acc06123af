"""The ``tensorrt`` bench backend: a TensorRT engine built by edgemm, run with torch CUDA tensors as
device buffers (no pycuda) and timed with CUDA events [TRT §2]. Before TensorRT sees the plan, its
build key (TensorRT version, compute capability, Jetson release, precision) is checked against this
machine: a foreign engine is refused with the rebuild command instead of an obscure deserialize error."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgemm.errors import InputError, ModelLoadError
from edgemm.lazy import lazy_import
from edgemm.runtime.session import BACKENDS, Backend, DeviceStats, Session, file_bytes
from edgemm.tensorrt.engine_key import EngineKey, check_engine_key, current_key

trt = lazy_import("tensorrt", "pip install 'edgemm[tensorrt]' (TensorRT from NVIDIA's index; JetPack ships it)")
torch = lazy_import("torch")

TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
                "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


class TensorRTSession(Session):
    run_failure_hint = "the shapes must lie inside the engine's optimization profile (its build.json shapes)"

    def __init__(self, model: Any, device: str = "cuda"):
        self.spec, self.backend, self.device = model.spec, "tensorrt", device
        path: Path = model.engine_path
        sidecar = json.loads(path.with_name(path.name + ".json").read_text())
        built = EngineKey.from_dict(sidecar.get("key") or {})
        check_engine_key(path, built, current_key(built.precision),
                         f"python3 build_on_device.py in the bundle {path.parent} (or edgemm export --target tensorrt)")
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        if sidecar.get("dla_core") is not None:  # set before deserialising a DLA engine [TRT §2]
            runtime.DLA_core = sidecar["dla_core"]
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"TensorRT could not load {path} (see its log above)", "rebuild the engine here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = torch.cuda.Stream(device=device)
        self.artifact_bytes = file_bytes(path)
        self._events: list[tuple[Any, Any]] | None = None

    def _dtype(self, name: str) -> Any:
        kind = self.engine.get_tensor_dtype(name).name
        if kind not in TORCH_DTYPES:
            raise ModelLoadError(f"engine tensor {name!r} is {kind}, which edgemm cannot feed or read",
                                 "export the model with float32/float16/int64 inputs and outputs")
        return getattr(torch, TORCH_DTYPES[kind])

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = []  # device buffers live until the stream is done with them
        for name in self.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device, self._dtype(name))
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                raise InputError(f"input {name!r} of shape {tuple(tensor.shape)} lies outside the engine's "
                                 f"optimization profile {tuple(low)} .. {tuple(high)}",
                                 "feed shapes inside the profile, or rebuild with wider tensorrt.shapes")
            self.context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = {}
        for name in self.outputs:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name), device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the copies above ran on that stream
        with torch.cuda.stream(self.stream):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("execute_async_v3 returned False")
            end.record(self.stream)
        self.stream.synchronize()
        if self._events is not None:
            self._events.append((start, end))
        return {name: (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).cpu().numpy()
                for name, t in outputs.items()}

    def start_timing(self) -> None:
        torch.cuda.synchronize(self.device)
        self._events = []

    def stop_timing(self) -> DeviceStats:
        torch.cuda.synchronize(self.device)
        events, self._events = self._events or [], None
        return {"device_ms": [s.elapsed_time(e) for s, e in events]}

    def layer_information(self) -> dict[str, Any]:
        """The engine's own per-layer information (IEngineInspector), as JSON."""
        inspector = self.engine.create_engine_inspector()
        return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


@BACKENDS.register
class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "TensorRT engine (built by edgemm): torch CUDA buffers, CUDA-event times, build key checked"
    consumes = "engine"
    requires = ("tensorrt", "torch")
    extra = "tensorrt"
    supports = ("cuda", "jetson", "fp32", "fp16", "int8")
    needs_gpu = True


    def load(self, model, threads=None, options=None) -> Session:
        return TensorRTSession(model)
