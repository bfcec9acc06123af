"""The runtime layer: one accuracy for every caller, sessions that own their model, threads restored."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemm.bench.cost import torch_flops
from edgemm.bench.latency import TimingSettings
from edgemm.bench.runner import run_bench
from edgemm.data.datasets import load_split
from edgemm.errors import ConfigError
from edgemm.models.registry import resolve_model
from edgemm.runtime import accuracy, fidelity, load_session, task_outputs
from edgemm.train import evaluate

from .conftest import FACTORY


def test_one_accuracy_for_torch_onnx_and_training(trained_demo, trained_onnx):
    val = load_split("edgemm-digits", "val")
    torch_model, onnx_model = resolve_model(trained_demo), resolve_model(str(trained_onnx))
    logits = task_outputs(load_session(torch_model, threads=1), val)
    by_hand = float((logits.argmax(1) == val.labels).mean())
    assert 0.3 < by_hand < 1.0  # a trained model, far above chance (0.1)
    assert accuracy(load_session(torch_model), val) == by_hand
    assert evaluate(torch_model.module, torch_model.spec, val) == by_hand  # training's early stopping
    assert accuracy(load_session(onnx_model), val) == pytest.approx(by_hand, abs=0.002)  # the export, on ORT


def test_accuracy_refuses_a_model_without_classes(tiny_onnx):
    import onnx

    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]  # a foreign ONNX: its inferred contract is an embedding model
    path = tiny_onnx.parent / "foreign.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ConfigError, match="embedding model: it has no accuracy"):
        accuracy(load_session(resolve_model(str(path))), load_split("edgemm-digits", "val"))


def test_fidelity_of_identical_and_different_outputs():
    ref = np.array([[2.0, 1.0], [0.0, 3.0]])
    assert fidelity(ref, ref) == {"cosine": pytest.approx(1.0), "top1_agreement": 1.0}
    assert fidelity(ref, ref[:, ::-1])["top1_agreement"] == 0.0


def test_a_session_on_another_device_owns_its_copy_of_the_model():
    """Bug: the CUDA session moved the shared module to the GPU; FLOP counting then ran it with CPU tensors."""
    model = resolve_model(FACTORY)
    on_cpu = load_session(model, "torch")
    elsewhere = load_session(model, "torch", options={"device": "meta"})  # any non-CPU device
    assert elsewhere.module is not model.module and next(elsewhere.module.parameters()).device.type == "meta"
    assert on_cpu.module is model.module and next(model.module.parameters()).device.type == "cpu"
    assert torch_flops(model.module, model.spec) > 0  # still runs on the CPU afterwards
    feed = model.spec.example_inputs({"batch": 2, "seq": 3})
    assert on_cpu.run(feed)["scores"].shape == (2, 5)


def test_unknown_backend_option_is_named():
    with pytest.raises(ConfigError, match="backend 'torch' options: devcie: Extra inputs"):
        load_session(resolve_model(FACTORY), "torch", options={"devcie": "cuda"})


def test_threads_are_restored_after_a_session_and_a_bench_run():
    """Bug: torch.set_num_threads was set for the whole process and never restored."""
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    model = resolve_model(FACTORY)
    session = load_session(model, "torch", threads=target)
    seen = []
    model.module.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    session.run(model.spec.example_inputs({"batch": 2}))
    assert seen == [target] and torch.get_num_threads() == before
    run_bench([FACTORY], batch_sizes=(1,), threads=target, splits=(),
              timing=TimingSettings(warmup=1, min_iterations=2, min_seconds=0, rounds=1))
    assert torch.get_num_threads() == before


def test_flop_counting_works_in_a_fresh_process():
    """Bug: the lazily imported torch did not load torch.utils.flop_counter; the suite's other imports hid it."""
    import subprocess
    import sys

    code = ("from edgemm.bench.cost import torch_flops; from edgemm.models.registry import resolve_model; "
            f"m = resolve_model({FACTORY!r}); print(torch_flops(m.module, m.spec))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert int(done.stdout.split()[-1]) > 0
