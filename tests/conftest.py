from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from edgemm.cli.common import quiet_libraries

FACTORY = "tests.fixtures.user_models:build"


def pytest_configure(config):
    quiet_libraries()
    warnings.simplefilter("ignore", UserWarning)


def pytest_collection_modifyitems(config, items):
    """GPU tests need CUDA and TensorRT; say so instead of failing on a CPU machine."""
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA); TensorRT tests also need pip install 'edgemm[tensorrt]'")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """The fixture user model exported once (validated) for the whole session."""
    from edgemm.export.onnx import export_onnx
    from edgemm.export.profiles import load_profile
    from edgemm.models.registry import resolve_model

    out = tmp_path_factory.mktemp("tiny_export")
    return export_onnx(resolve_model(FACTORY), out, load_profile("x86-cpu")).onnx_path
