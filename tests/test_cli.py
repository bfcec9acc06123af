"""The command line: bad input gives a clear message and a non-zero exit, never a traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgemm.artifacts import sha256_file
from edgemm.cli.main import app
from edgemm.models.registry import resolve_model

from .conftest import FACTORY, edgemm_cli
from .test_export import _tamper

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def good_inputs(tmp_path):
    feed = resolve_model(FACTORY).spec.example_inputs({"batch": 2, "seq": 4})
    np.savez(tmp_path / "in.npz", **feed)
    return feed, tmp_path


def test_predict_runs_on_valid_inputs(good_inputs):
    _, folder = good_inputs
    result = _run("predict", FACTORY, "--inputs", str(folder / "in.npz"))
    assert result.exit_code == 0 and "scores: shape [2, 5]" in result.output


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("tokens"), "missing input(s): tokens (text)"),
    (lambda f: f.update(pixels=f["pixels"].astype(np.float64)), "dtype float64, expected float32"),
    (lambda f: f.update(pixels=f["pixels"][:, :1]), "size 1 on axis 1, expected 3"),
])
def test_predict_names_bad_inputs(good_inputs, change, message):
    feed, folder = good_inputs
    change(feed)
    np.savez(folder / "bad.npz", **feed)
    result = _run("predict", FACTORY, "--inputs", str(folder / "bad.npz"))
    assert result.exit_code == 2
    assert message in result.output and "fix:" in result.output and "Traceback" not in result.output


def test_a_file_that_is_not_an_npz(tmp_path):
    (tmp_path / "garbage.npz").write_text("not numbers")
    result = _run("predict", FACTORY, "--inputs", str(tmp_path / "garbage.npz"))
    assert result.exit_code == 2 and "is not an .npz file" in result.output


def test_unknown_model_name(tmp_path):
    result = _run("info", "resnet-9000")
    assert result.exit_code == 2 and "unknown model 'resnet-9000'" in result.output and "demo-fusion" in result.output


def test_pickled_checkpoint_refused_on_the_command_line(good_inputs):
    _, folder = good_inputs
    torch.save(resolve_model(FACTORY).module, folder / "pickled.pt")
    result = _run("predict", FACTORY, "--inputs", str(folder / "in.npz"), "--weights", str(folder / "pickled.pt"))
    assert result.exit_code == 2 and "refuses to unpickle" in result.output


def test_unknown_profile_and_unavailable_target(tmp_path):
    result = _run("export", FACTORY, "--profile", "jetson-nano-9", "-o", str(tmp_path))
    assert result.exit_code == 2 and "unknown export profile 'jetson-nano-9'" in result.output
    result = _run("export", FACTORY, "--target", "torch-tensorrt", "-o", str(tmp_path))
    assert result.exit_code == 2 and "needs torch_tensorrt" in result.output
    result = _run("export", FACTORY, "--target", "coreml", "-o", str(tmp_path))
    assert result.exit_code == 2 and "'coreml' is not one of" in result.output  # choices come from the registry


def test_invalid_profile_names_the_key(tmp_path):
    (tmp_path / "p.yaml").write_text("name: p\ntarget: onnx\nvalidation:\n  atol: lots\n  colour: red\n")
    result = _run("export", FACTORY, "--profile", str(tmp_path / "p.yaml"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "validation.atol" in result.output and "validation.colour" in result.output


def test_validate_command_fails_a_tampered_model(tiny_onnx, tmp_path):
    assert _run("validate", str(tiny_onnx), "--reference", FACTORY).exit_code == 0
    other = _run("validate", str(tiny_onnx), "--reference", "demo-text-only")
    assert other.exit_code == 2 and "not the same model" in other.output
    tampered = _tamper(tiny_onnx, tmp_path / "t.onnx")
    result = _run("validate", str(tampered), "--reference", FACTORY)
    assert result.exit_code == 3 and "output 'scores'" in result.output


def test_export_and_bench_end_to_end_on_a_user_model(tmp_path):
    result = _run("export", FACTORY, "-o", str(tmp_path / "onnx"))
    assert result.exit_code == 0 and "top-1 agreement 1.0000" in result.output
    result = _run("bench", FACTORY, str(tmp_path / "onnx" / "model.onnx"), *BENCH_FAST, "--batch-size", "4",
                  "--split", "test", "-o", str(tmp_path / "bench"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bench" / "report.json").is_file() and (tmp_path / "bench" / "report.md").is_file()


BENCH_FAST = ("--threads", "1", "--batch-size", "1", "--min-iterations", "5", "--min-seconds", "0", "--warmup", "1",
              "--rounds", "1")


def test_bench_baseline_gate_exits_5_on_a_regression(tiny_onnx, tmp_path):
    assert _run("bench", str(tiny_onnx), *BENCH_FAST, "--split", "test", "-o", str(tmp_path / "base")).exit_code == 0
    baseline = json.loads((tmp_path / "base" / "report.json").read_text())
    for lat in baseline["results"][0]["latency"]:  # plant a baseline ten times faster than this machine
        lat["samples_ms"] = [s / 10 for s in lat["samples_ms"]]
    (tmp_path / "fast.json").write_text(json.dumps(baseline))
    result = _run("bench", str(tiny_onnx), *BENCH_FAST, "-o", str(tmp_path / "now"), "--baseline",
                  str(tmp_path / "fast.json"), "--fail-on", "p50=50%")
    assert result.exit_code == 5, result.output
    assert "1 regression(s) against" in result.output and "p50_ms" in result.output
    verdict = (tmp_path / "now" / "regression.md").read_text()  # for the CI comment, beside report.md
    assert "**1 regression(s)**" in verdict and "| paired by |" in verdict and "| id |" in verdict
    result = _run("bench", str(tiny_onnx), *BENCH_FAST, "-o", str(tmp_path / "again"), "--baseline",
                  str(tmp_path / "base" / "report.json"), "--fail-on", "p50=1000%")
    assert result.exit_code == 0 and "no regression" in result.output and "1 result(s) compared" in result.output


def test_bad_baseline_fails_before_the_benchmark_runs(tiny_onnx, tmp_path):
    (tmp_path / "b.json").write_text("{not json")
    result = _run("bench", str(tiny_onnx), *BENCH_FAST, "-o", str(tmp_path / "out"), "--baseline", str(tmp_path / "b.json"))
    assert result.exit_code == 2 and "cannot read bench report" in result.output
    assert not (tmp_path / "out").exists()  # refused before any timing


def test_report_rerenders_and_compares_runs(tiny_onnx, tmp_path):
    for run in ("a", "b"):
        assert _run("bench", str(tiny_onnx), *BENCH_FAST, "--label", "tiny", "-o", str(tmp_path / run)).exit_code == 0
    result = _run("report", str(tmp_path / "a"), str(tmp_path / "b" / "report.json"), "-o", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert f"## {tmp_path / 'a'}" in markdown and "| tiny | ort-cpu |" in markdown
    assert f"vs {tmp_path / 'a'}" in markdown and (tmp_path / "r" / "latency.png").is_file()
    result = _run("report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "r2"))
    assert result.exit_code == 2 and "cannot read bench report" in result.output


def test_list_shows_registries_and_schemas():
    result = _run("list", "quantizers")
    assert result.exit_code == 0 and "ort" in result.output and "IncQuantizeConfig" in result.output
    result = _run("list", "--schema", "recipe")
    assert result.exit_code == 0 and "OrtQuantizeConfig" in result.output
    assert _run("list", "gizmos").exit_code == 2


def test_compress_over_its_memory_limit_stops_with_the_step_and_leaves_nothing_final(tmp_path):
    """In its own process: a limit below what Python holds trips at once, and if the main thread is then inside
    a long C call (loading a shared library from a cold disk, as on CI) the guard's hard stop ends the process.
    Run in pytest's process, that ended pytest itself (exit 137 half-way through the suite)."""
    result = edgemm_cli("compress", "demo-text-only", "--recipe", "int8", "-o", str(tmp_path / "run"),
                        "--max-memory", "64MB")
    output = result.stdout + result.stderr
    assert result.returncode == 137, output[-2000:]
    assert "stopped at" in output and "over --max-memory 0.06 GB" in output
    assert "calibration_samples" in output  # the fix names what bounds memory
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "manifest.json").exists()
    assert _run("compress", "demo-text-only", "--max-memory", "lots").exit_code == 2


def test_compress_gate_failure_exits_4_with_a_report(tmp_path):
    """An unreachable speed gate; a zero accuracy budget makes the fallback score the float input on the way."""
    (tmp_path / "fast.yaml").write_text(
        "name: fast\ngates:\n  max_accuracy_drop: 0\n  min_speedup: 1000\n"
        "stages:\n  - stage: quantize\n    calibration_samples: 64\n"
        "    fallback: {max_tries: 2, granularity: [tower]}\n")
    result = _run("compress", "demo-text-only", "--recipe", str(tmp_path / "fast.yaml"), "-o", str(tmp_path / "run"),
                  "--warmup", "1", "--min-iterations", "5", "--min-seconds", "0", "--rounds", "1")
    assert result.exit_code == 4, result.output
    assert "missed its gates" in result.output and "speed-up over ORT fp32 is" in result.output
    assert "required 1000" in result.output
    run = tmp_path / "run"
    assert not (run / "final").exists() and not (run / "manifest.json").exists()  # nothing looks deployable
    assert sorted(p.name for p in run.glob("0*")) == ["00-input", "01-export", "02-quantize"]  # the reference
    # export is what a quantize-only recipe quantizes: no second export
    gates = json.loads((run / "gate_report.json").read_text())["gates"]
    assert not gates["passed"] and "FAILED" in (run / "report.md").read_text()
    assert json.loads((run / "report.json").read_text())["settings"]["timing"]["min_iterations"] == 5
    # Bug: scoring the float input during the fallback re-stamped it in place, so the previous stage's
    # artifact no longer matched its manifest (and later runs redid the stage).
    export = json.loads((run / "01-export" / "manifest.json").read_text())
    assert export["artifacts"]["model.onnx"] == sha256_file(run / "01-export" / "model.onnx")


def test_compress_rejects_a_bad_recipe_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nstages:\n  - stage: distill\n    temprature: 4\n")
    result = _run("compress", "demo-text-only", "--recipe", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2 and "stages.0.distill.temprature" in result.output
