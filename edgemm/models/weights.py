"""Safe weight loading: safetensors, or ``torch.load(weights_only=True)``; never unpickle."""
from __future__ import annotations

import pickle
from pathlib import Path

from edgemm.artifacts import atomic_path
from edgemm.errors import ModelLoadError
from edgemm.lazy import lazy_import

torch = lazy_import("torch")
safetensors_torch = lazy_import("safetensors.torch")

PICKLE_HINT = ("re-save only the tensors: `safetensors.torch.save_file(model.state_dict(), 'model.safetensors')` "
               "or `torch.save(model.state_dict(), 'model.pt')`")


def read_state_dict(path: str | Path) -> dict[str, "torch.Tensor"]:
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"weights {path} is a folder, not a file", "give the .safetensors or .pt file inside it")
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist", "check the path")
    if path.suffix == ".safetensors":
        try:
            return safetensors_torch.load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError / OSError
            raise ModelLoadError(f"{path} is not a readable safetensors file ({err})",
                                 "the file is corrupt or truncated: re-export it") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = _first_line(err)
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # neither torch's zip nor a pickle
            raise ModelLoadError(f"{path} is not a PyTorch checkpoint or safetensors file (it starts with "
                                 f"{magic!r}, neither a zip archive nor a pickle)",
                                 "give a .safetensors file or a torch.save(state_dict) checkpoint") from None
        raise ModelLoadError(f"{path} holds pickled Python objects, which edgemm refuses to unpickle ({first})",
                             PICKLE_HINT) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ModelLoadError(f"{path} is not a readable checkpoint ({_first_line(err)})",
                             "the file is corrupt or not a PyTorch checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} is not a state dict (name -> tensor)", PICKLE_HINT)
    return state


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def load_weights(module: "torch.nn.Module", path: str | Path, state: dict[str, "torch.Tensor"] | None = None) -> None:
    """Load a state dict strictly; name missing, unexpected and mis-shaped keys."""
    state = read_state_dict(path) if state is None else state
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ModelLoadError(f"weights in {path} do not fit the model: " + "; ".join(parts),
                             "load weights saved from the same architecture")
    module.load_state_dict(state)


def save_weights(module: "torch.nn.Module", path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        safetensors_torch.save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    return Path(path)
