from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from edgemm.cli.common import quiet_libraries

FACTORY = "tests.fixtures.user_models:build"
OWN = "examples.own_model.model:build"  # README's own model: a CNN + a BERT tower, data in a folder


def edgemm_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The command line in its own process: for runs that may end the process itself (a hard memory stop)."""
    return subprocess.run([sys.executable, "-m", "edgemm.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def pytest_configure(config):
    quiet_libraries()
    warnings.simplefilter("ignore", UserWarning)


def pytest_collection_modifyitems(config, items):
    """GPU tests need a CUDA GPU visible to torch; say so instead of failing on a CPU machine."""
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU visible to torch (CUDA); this machine has none")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """The fixture user model exported once (validated) for the whole session."""
    from edgemm.export.profiles import load_profile
    from edgemm.export.targets.onnx import export_onnx
    from edgemm.models.registry import resolve_model

    out = tmp_path_factory.mktemp("tiny_export")
    return export_onnx(resolve_model(FACTORY), out, load_profile("x86-cpu")).path


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory) -> Path:
    """The demo fusion model after a short training run (~65 % val accuracy): a real teacher."""
    from edgemm.data.datasets import load_split
    from edgemm.models.registry import resolve_model, save_model
    from edgemm.train import TrainConfig, train_classifier

    model = resolve_model("demo-fusion")
    train, val = load_split("edgemm-digits", "train"), load_split("edgemm-digits", "val")
    train_classifier(model.module, model.spec, train, val, TrainConfig(epochs=1, max_steps=120))
    folder = tmp_path_factory.mktemp("teacher")
    save_model(model, folder)
    return folder


@pytest.fixture(scope="session")
def trained_onnx(trained_demo, tmp_path_factory) -> Path:
    from edgemm.export.profiles import load_profile
    from edgemm.export.targets.onnx import export_onnx
    from edgemm.models.registry import resolve_model

    return export_onnx(resolve_model(trained_demo), tmp_path_factory.mktemp("teacher_onnx"),
                       load_profile("x86-cpu")).path


@pytest.fixture(scope="session")
def trained_int8(trained_onnx, tmp_path_factory) -> Path:
    """The trained demo's ONNX export, statically quantized (x86 scheme) and stamped with its contract."""
    import onnx

    from edgemm.compress.calibration import calibration_feeds
    from edgemm.compress.quantizer import QUANTIZERS
    from edgemm.export.profiles import load_profile
    from edgemm.export.targets.onnx import save_onnx
    from edgemm.models.registry import resolve_model

    spec = resolve_model(str(trained_onnx)).spec
    folder = tmp_path_factory.mktemp("teacher_int8")
    ort_quantizer = QUANTIZERS.get("ort")
    out = ort_quantizer.quantize(trained_onnx, folder / "q.onnx", calibration_feeds(spec, spec.dataset, "train", 128),
                                 load_profile("x86-cpu").quantization, ort_quantizer.config(stage="quantize"), [])
    return save_onnx(onnx.load(str(out)), spec, folder / "model.onnx")


@pytest.fixture(scope="session")
def own_data(tmp_path_factory) -> Path:
    from examples.own_model.model import make_folder
    return make_folder(tmp_path_factory.mktemp("own_data"), n=150)


@pytest.fixture(scope="session")
def own_run(own_data, tmp_path_factory) -> Path:
    """The user's model trained on their folder (a few seconds), saved as a run directory."""
    from edgemm.data.datasets import load_split
    from edgemm.models.registry import resolve_model, save_model
    from edgemm.train import TrainConfig, train_classifier

    model = resolve_model(OWN)
    train, val = (load_split(str(own_data), s, model.spec) for s in ("train", "val"))
    train_classifier(model.module, model.spec, train, val, TrainConfig(epochs=6, batch_size=16, lr=3e-3))
    folder = tmp_path_factory.mktemp("own_run")
    save_model(model, folder)
    return folder
