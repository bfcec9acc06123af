"""Will a batch fit in memory? Estimated before running it, so a huge ``--batch-size`` is refused with
the limit named instead of being killed by the kernel a minute later.

The estimate is the peak of live activations at batch 1, times the batch, plus the batch's inputs,
with a margin for allocators and arenas (measured: ``MARGIN``):

- ONNX: every value's size from shape inference (the contract's opt sizes), live from the node that
  makes it to the last node that reads it, in graph order;
- PyTorch: one real forward at batch 1 under a dispatch mode that adds each new tensor's storage
  and subtracts it when the last tensor on it is freed.

Activations scale with the batch for the layers that dominate (convolutions, attention); runtimes
add arenas and workspace on top, so the check refuses only what clearly cannot fit.
"""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgemm.errors import USER_CODE_ERRORS, InputError
from edgemm.lazy import lazy_import
from edgemm.spec import ModelSpec

if TYPE_CHECKING:
    from edgemm.models.registry import LoadedModel

onnx = lazy_import("onnx")
psutil = lazy_import("psutil")
torch = lazy_import("torch")

HEADROOM = 0.8  # of the memory available now: the runtime's own arenas and the OS need the rest
# The estimate was 0.77-1.34x the measured growth at batch 64 (benchmarks/memory_estimate.py,
# benchmarks/results/amd-epyc/memory_estimate.md): allocators and arenas add up to ~30 % on top.
MARGIN = 1.3


def one_item(spec: ModelSpec, which: str, **sizes: int) -> dict[str, int]:
    """Axis sizes for one sample (``sizes`` over the contract's ``which``): each input's leading named axis is
    its batch, whatever its name (an ONNX file edgemm did not write names it "N" or "batch_size")."""
    leading = {i.shape[0] for i in spec.inputs if i.shape and isinstance(i.shape[0], str)}
    return spec.sizes(which, **{**sizes, **{axis: 1 for axis in leading | {"batch"}}})


def input_bytes_per_item(spec: ModelSpec) -> int:
    """One sample of every input at the contract's largest sizes."""
    sizes = one_item(spec, "max")
    return sum(int(np.prod(i.concrete_shape(sizes))) * np.dtype(i.dtype).itemsize for i in spec.inputs)


def activation_bytes_per_item(model: "LoadedModel") -> int | None:
    """Peak bytes of live intermediate values for one sample; None when it cannot be worked out."""
    try:
        if model.onnx_path is not None:
            return _onnx_peak(str(model.onnx_path), model.spec)
        return _torch_peak(model.module, model.spec)
    except USER_CODE_ERRORS:  # an estimate: a model it cannot run here is checked when it runs
        return None


def check_batch_sizes(model: "LoadedModel", batch_sizes: Sequence[int], option: str = "--batch-size") -> None:
    """Before long work: every batch size inside the contract's batch axis, and small enough to fit here."""
    axis = model.spec.axes.get("batch")
    outside = [b for b in batch_sizes if axis and not axis.min <= b <= axis.max]
    if outside:
        raise InputError(f"batch size {outside[0]} is outside the batch axis of model {model.spec.name!r} "
                         f"[{axis.min}, {axis.max}]", f"give {option} values in [{axis.min}, {axis.max}] "
                         "(`edgemm info MODEL` shows the axes)")
    check_batch_fits(model, batch_sizes)


def check_batch_fits(model: "LoadedModel", batch_sizes: Sequence[int], available: int | None = None) -> None:
    """Refuse a batch whose estimated memory exceeds what is available on this machine now."""
    batch_size = max(batch_sizes)
    per_item = activation_bytes_per_item(model)
    if per_item is None:
        return
    per_item += 2 * input_bytes_per_item(model.spec)  # the feed, and the copy a runtime makes of it
    need = int(MARGIN * batch_size * per_item)
    free = int((available if available is not None else psutil.virtual_memory().available) * HEADROOM)
    if need > free:
        most = max(1, int(free / (MARGIN * per_item)))
        raise InputError(f"batch size {batch_size} of {model.spec.name!r} needs about {need / 2**30:.1f} GiB "
                         f"({per_item / 2**20:.1f} MiB per sample: activations and inputs), but only "
                         f"{free / 2**30:.1f} GiB of memory is available here",
                         f"use a batch size of at most {most} on this machine")


def inferred_graph(path: str | Path, spec: ModelSpec, sizes: dict[str, int] | None = None) -> Any:
    """The ONNX model with every value's shape inferred for one sample at ``sizes`` (default: the contract's
    opt sizes), weights left on disk; shared by this estimate and the FLOP count."""
    proto = onnx.load(str(path), load_external_data=False)
    sizes = sizes or one_item(spec, "opt")
    for value in proto.graph.input:
        if value.name in spec.input_names:
            for dim, want in zip(value.type.tensor_type.shape.dim, spec.input(value.name).concrete_shape(sizes)):
                dim.Clear()
                dim.dim_value = want
    return onnx.shape_inference.infer_shapes(proto, data_prop=True)


def _onnx_peak(path: str, spec: ModelSpec) -> int | None:
    graph = inferred_graph(path, spec).graph
    weights = {i.name for i in graph.initializer}
    nbytes = {v.name: _value_bytes(v) for v in [*graph.value_info, *graph.input, *graph.output]
              if v.name not in weights}
    last_use: dict[str, int] = {}
    for step, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = step
    live = {v.name: nbytes[v.name] for v in graph.input if v.name in nbytes}
    peak = sum(live.values())
    for step, node in enumerate(graph.node):
        live.update({name: nbytes.get(name, 0) for name in node.output})
        peak = max(peak, sum(live.values()))
        live = {name: size for name, size in live.items() if last_use.get(name, -1) > step}
    return peak or None


def _value_bytes(value: Any) -> int:
    tensor = value.type.tensor_type
    dims = [d.dim_value for d in tensor.shape.dim]
    if not dims and not tensor.HasField("shape"):
        return 0
    if any(d <= 0 for d in dims):  # a size shape inference could not work out: not counted
        return 0
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def _torch_peak(module: Any, spec: ModelSpec) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from edgemm.runtime.convert import to_tensors

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live = self.peak = 0
            self.refs: dict[int, int] = {}  # storage address -> tensors alive on it

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
            out = func(*args, **(kwargs or {}))
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                    self._track(tensor)
            return out

        def _track(self, tensor: Any) -> None:
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            if address not in self.refs:
                self.refs[address] = 0
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.refs[address] += 1
            weakref.finalize(tensor, self._release, address, storage.nbytes())

        def _release(self, address: int, size: int) -> None:
            self.refs[address] -= 1
            if not self.refs[address]:
                del self.refs[address]
                self.live -= size

    feed = to_tensors(spec, spec.example_inputs(one_item(spec, "opt")))
    counter = LiveBytes()
    with torch.no_grad(), counter:
        module(*feed)
    return counter.peak + sum(t.numel() * t.element_size() for t in feed)

