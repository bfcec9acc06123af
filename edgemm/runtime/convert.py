"""Between the contract's numpy feeds and PyTorch: inputs in the spec's order, outputs by name."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgemm.errors import ModelRunFailed
from edgemm.lazy import lazy_import
from edgemm.spec import ModelSpec

torch = lazy_import("torch")


def to_tensors(spec: ModelSpec, inputs: dict[str, np.ndarray], device: str = "cpu") -> list[Any]:
    """Inputs in the spec's order: the contract's positional calling convention."""
    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in spec.input_names]
    return tensors if device == "cpu" else [t.to(device, non_blocking=True) for t in tensors]


def named_outputs(spec: ModelSpec, out: Any) -> dict[str, np.ndarray]:
    """A forward's return value (tensor, tuple, list or dict) as numpy arrays keyed by the spec's output names."""
    if isinstance(out, dict):
        values = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = list(out)
    else:
        values = [out]
    if len(values) != len(spec.output_names):
        raise ModelRunFailed(f"model {spec.name!r} returned {len(values)} output(s) but its contract declares "
                             f"{spec.output_names}", "return exactly the contract's outputs, in its order")
    # Half-precision outputs become float32 (numpy has no bfloat16); integer outputs stay what they are.
    return {name: (t.detach().float() if t.is_floating_point() else t.detach()).cpu().numpy()
            for name, t in zip(spec.output_names, values)}
