"""Bad input through the real CLI: each case must exit 2-5 with an `error:` and a `fix:` line, no traceback,
no complete-looking file left by the failed command, and no code run from a loaded file.

The cases are grouped by the class of bad input (README: "Reliability"). Most run in-process through
typer's runner; the few that need a real process (usage errors, Ctrl-C, two writers) run ``edgemm``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edgemm.cli.main import app
from edgemm.models.registry import resolve_model
from edgemm.models.weights import save_weights

from .conftest import FACTORY
from .fixtures.bad_models import SENTINEL
from .fixtures.user_models import TinyImageText

BAD = "tests.fixtures.bad_models"
ROOT = Path(__file__).parents[1]
COMPLETE_LOOKING = ("manifest.json", "model.onnx", "report.json", "report.md")


@dataclass
class Case:
    id: str
    args: Callable[[Path], list[str]]  # the command line, given the folder of prepared material
    code: int
    says: str  # part of the error message


@pytest.fixture(scope="module")
def material(tmp_path_factory, tiny_onnx) -> Path:
    """Every bad file the cases read, made once."""
    m = tmp_path_factory.mktemp("bad_material")
    spec = resolve_model(FACTORY).spec
    feed = spec.example_inputs({"batch": 2, "seq": 4})
    np.savez(m / "good.npz", **feed)
    np.savez(m / "nan.npz", **{**feed, "pixels": np.full_like(feed["pixels"], np.nan)})
    np.savez(m / "rank.npz", **{**feed, "pixels": feed["pixels"][0]})
    np.savez(m / "float64.npz", **{**feed, "pixels": feed["pixels"].astype(np.float64)})
    np.savez(m / "tokens-out-of-vocab.npz", **{**feed, "tokens": feed["tokens"] + 1000})
    (m / "text.npz").write_text("pixels,tokens\n1,2\n")
    (m / "empty.onnx").write_bytes(b"")
    shutil.copyfile(tiny_onnx, m / "tiny.onnx")
    (m / "random.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    (m / "folder.onnx").mkdir()
    proto = onnx.load(str(tiny_onnx))
    onnx.helper.set_model_props(proto, {"edgemm.spec": "{not json"})
    onnx.save(proto, str(m / "corrupt-spec.onnx"))
    _foreign_onnx(m / "foreign.onnx")
    lying = onnx.load(str(m / "foreign.onnx"))  # a foreign graph stamped with the fixture model's contract
    onnx.helper.set_model_props(lying, {"edgemm.spec": spec.to_json()})
    onnx.save(lying, str(m / "lying.onnx"))
    recorded = onnx.load(str(tiny_onnx))  # a contract whose data is code someone else named
    onnx.helper.set_model_props(recorded, {"edgemm.spec": spec.model_copy(
        update={"dataset": f"{BAD}:planted_data"}).to_json()})
    onnx.save(recorded, str(m / "planted-data.onnx"))
    numclasses = onnx.load(str(tiny_onnx))  # a stored contract that says 3 classes on a 5-class graph
    onnx.helper.set_model_props(numclasses, {"edgemm.spec": spec.model_copy(
        update={"task": spec.task.model_copy(update={"num_classes": 3})}).to_json()})
    onnx.save(numclasses, str(m / "num-classes.onnx"))
    (m / "latin1-folder" / "images").mkdir(parents=True)
    (m / "latin1-folder" / "metadata.csv").write_bytes("file_name,text,label,split\nimages/a.png,caf\xe9,0,test\n"
                                                      .encode("latin-1"))
    (m / "latin1.yaml").write_bytes("stages:\n  - stage: quantize  # d\xe9j\xe0 vu\n".encode("latin-1"))
    (m / "ratio.yaml").write_text("name: r\nstages:\n  - stage: prune\n    towers: {image: 1.5}\n")
    (m / "keep-float.yaml").write_text("name: k\nstages:\n  - stage: quantize\n    backend: ort\n"
                                       "    keep_float: [smell]\n")
    (m / "unknown-key.yaml").write_text("name: u\nstages:\n  - stage: quantize\n    colour: blue\n")
    (m / "wrong-schema.json").write_text(json.dumps({"schema_version": 3, "results": "many"}))
    (m / "not-a-report.json").write_text(json.dumps([1, 2, 3]))
    (m / "a-file").write_text("I am a file")
    _run_dir(m / "run-os-system", "os:system", {"command": f"touch {m / 'PWNED'}"}, spec)
    _run_dir(m / "run-edgemm-function", "edgemm.lazy:import_user_module", {"name": "os"}, spec)
    _run_dir(m / "run-planted", f"{BAD}:planted_factory", {}, spec)
    save_weights(TinyImageText(), m / "run-planted" / "model.safetensors")  # complete: only trust is missing
    _run_dir(m / "run-factory-number", 42, {}, spec)
    _run_dir(m / "run-garbage-structure", "edgemm.models.demo:demo_fusion", {}, spec)
    meta = json.loads((m / "run-garbage-structure" / "model.json").read_text())
    (m / "run-garbage-structure" / "model.json").write_text(json.dumps({**meta, "structure": "garbage"}))
    _run_dir(m / "run-bad-kwargs", "edgemm.models.demo:demo_fusion", {"colour": "blue"}, spec)
    (m / "weights-folder").mkdir()
    (m / "inputs-folder.npz").mkdir()
    (m / "random.pt").write_bytes(np.random.default_rng(0).bytes(512))
    (m / "op99.yaml").write_text((ROOT / "export_profiles" / "x86-cpu.yaml").read_text().replace("opset: 18",
                                                                                                  "opset: 99"))
    (m / "freeze.yaml").write_text("name: f\nstages:\n  - stage: distill\n    freeze: [smell]\n")
    (m / "run-not-json").mkdir()
    (m / "run-not-json" / "model.json").write_bytes(b"\xff\xfe{")
    return m


def _foreign_onnx(path: Path) -> None:
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "foreign",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))


def _run_dir(path: Path, factory, kwargs: dict, spec) -> None:
    path.mkdir()
    (path / "model.json").write_text(json.dumps({"factory": factory, "kwargs": kwargs,
                                                 "spec": spec.model_dump(mode="json")}))


def out(m: Path) -> str:
    return str(m / "out")


CASES = [
    # 1. exceptions from user code and the runtimes
    Case("factory raises", lambda m: ["info", "tests.fixtures.user_models:build_raises"], 2, "checkpoint store unreachable"),
    Case("factory returns a string", lambda m: ["info", "tests.fixtures.user_models:build_wrong_type"], 2,
         "not a torch.nn.Module"),
    Case("factory returns no spec", lambda m: ["info", "tests.fixtures.user_models:build_without_spec"], 2,
         "returned no ModelSpec"),
    Case("factory needs arguments", lambda m: ["info", f"{BAD}:needs_arguments"], 2, "missing 1 required"),
    Case("module fails to import", lambda m: ["info", "tests.broken_import:build"], 2, "libfoo.so.3"),
    Case("module does not exist", lambda m: ["info", "no_such_package.models:build"], 2, "cannot import"),
    Case("forward crashes in predict", lambda m: ["predict", f"{BAD}:crashing_forward", "--inputs",
                                                  str(m / "good.npz")], 2, "planted"),
    Case("forward crashes in bench", lambda m: ["bench", f"{BAD}:crashing_forward", "--batch-size", "1",
                                                "-o", out(m)], 2, "failed to run model"),
    Case("forward crashes in export", lambda m: ["export", f"{BAD}:crashing_forward", "-o", out(m)], 2,
         "raises on example inputs its contract allows"),
    Case("0-byte ONNX in info", lambda m: ["info", str(m / "empty.onnx")], 2, "not an ONNX model"),
    Case("0-byte ONNX in bench", lambda m: ["bench", str(m / "empty.onnx"), "-o", out(m)], 2, "not an ONNX model"),
    Case("random bytes as ONNX", lambda m: ["info", str(m / "random.onnx")], 2, "ONNX"),
    Case("folder named .onnx", lambda m: ["info", str(m / "folder.onnx")], 2, "is a folder, not an ONNX file"),
    Case("corrupt contract metadata", lambda m: ["info", str(m / "corrupt-spec.onnx")], 2, "is corrupt"),
    Case("foreign ONNX validated", lambda m: ["validate", str(m / "foreign.onnx"), "--reference", FACTORY], 2,
         "not the same model"),
    Case("lying contract on a foreign graph", lambda m: ["bench", str(m / "lying.onnx"), "-o", out(m)], 2,
         "belongs to another model"),
    Case("non-UTF-8 recipe", lambda m: ["compress", FACTORY, "--recipe", str(m / "latin1.yaml"), "-o", out(m)], 2,
         "not UTF-8"),
    Case("non-UTF-8 profile", lambda m: ["export", FACTORY, "--profile", str(m / "latin1.yaml"), "-o", out(m)], 2,
         "not UTF-8"),
    Case("baseline of the wrong schema", lambda m: ["bench", FACTORY, "--baseline", str(m / "wrong-schema.json"),
                                                    "-o", out(m)], 2, "not a valid bench report"),
    Case("report of the wrong schema", lambda m: ["report", str(m / "not-a-report.json"), "-o", out(m)], 2,
         "not a bench report"),
    Case("report that does not exist", lambda m: ["report", str(m / "missing.json"), "-o", out(m)], 2,
         "cannot read bench report"),
    Case("output is a file", lambda m: ["export", FACTORY, "-o", str(m / "a-file")], 2, "is a file, not a folder"),
    Case("output under a file", lambda m: ["export", FACTORY, "-o", str(m / "a-file" / "x")], 2, "is under"),
    Case("output cannot be created", lambda m: ["export", FACTORY, "-o", "/proc/edgemm-out/x"], 2,
         "cannot create output folder"),
    Case("demo into a file, before training", lambda m: ["demo", "-o", str(m / "a-file")], 2, "is a file"),
    Case("bench into a file, before timing", lambda m: ["bench", FACTORY, "-o", str(m / "a-file")], 2, "is a file"),
    Case("factory calls sys.exit", lambda m: ["info", f"{BAD}:exits"], 2, "SystemExit"),
    Case("forward calls sys.exit", lambda m: ["predict", f"{BAD}:exiting_forward", "--inputs", str(m / "good.npz")],
         2, "SystemExit"),
    Case("factory returns three items", lambda m: ["info", f"{BAD}:three_items"], 2, "a tuple of 3 items"),
    Case("forward returns two outputs", lambda m: ["predict", f"{BAD}:two_outputs", "--inputs", str(m / "good.npz")],
         2, "returned 2 output(s)"),
    Case("output narrower than the contract", lambda m: ["predict", f"{BAD}:narrow_head", "--inputs",
                                                         str(m / "good.npz")], 2, "has shape [2, 3]"),
    Case("output narrower than the contract, in export", lambda m: ["export", f"{BAD}:narrow_head", "-o", out(m)],
         2, "has shape"),
    Case("integer scores", lambda m: ["predict", f"{BAD}:integer_scores", "--inputs", str(m / "good.npz")], 2,
         "int64 scores"),
    Case("threads beyond reason", lambda m: ["predict", FACTORY, "--inputs", str(m / "good.npz"), "--threads",
                                             "100000"], 2, "100000 threads"),
    Case("weights path is a folder", lambda m: ["predict", FACTORY, "--inputs", str(m / "good.npz"), "--weights",
                                                str(m / "weights-folder")], 2, "is a folder"),
    Case("random bytes as a checkpoint", lambda m: ["predict", FACTORY, "--inputs", str(m / "good.npz"), "--weights",
                                                    str(m / "random.pt")], 2, "is not a PyTorch checkpoint"),
    Case("inputs path is a folder", lambda m: ["predict", FACTORY, "--inputs", str(m / "inputs-folder.npz")], 2,
         "is a folder, not an .npz file"),
    Case("empty model reference", lambda m: ["info", ""], 2, "the model reference is empty"),
    Case("run dir with a garbage structure", lambda m: ["info", str(m / "run-garbage-structure")], 2, "is corrupt"),
    Case("run dir with its own arguments for a zoo factory", lambda m: ["predict", str(m / "run-bad-kwargs"),
                                                                        "--inputs", str(m / "good.npz")], 2,
         "does not run code named in a file"),
    Case("trusted run dir with arguments its factory rejects", lambda m: ["--trust-code", "predict",
                                                                          str(m / "run-bad-kwargs"), "--inputs",
                                                                          str(m / "good.npz")], 2,
         "with the arguments"),
    Case("forward calls sys.exit(0) in bench", lambda m: ["bench", f"{BAD}:exiting_forward_zero", "--batch-size", "1",
                                                          "-o", out(m)], 2, "SystemExit"),
    Case("rows counted from the end", lambda m: ["predict", FACTORY, "--data", "tests.fixtures.user_models:data_splits",
                                                 "--rows", "-1"], 2, "counts from the end"),
    Case("opset the exporter cannot write", lambda m: ["export", FACTORY, "--profile", str(m / "op99.yaml"),
                                                       "-o", out(m)], 2, "opset 99"),
    Case("labels outside the classes", lambda m: ["bench", FACTORY, "--data", f"{BAD}:labels_out_of_range",
                                                  "--batch-size", "1", "-o", out(m)], 2, "labels [99]"),
    Case("fewer labels than rows", lambda m: ["bench", FACTORY, "--data", f"{BAD}:labels_too_few",
                                              "--batch-size", "1", "-o", out(m)], 2, "3 labels but inputs of"),
    Case("a threshold given twice", lambda m: ["bench", FACTORY, "--baseline", str(m / "wrong-schema.json"),
                                               "--fail-on", "p50=10%,p50=20%", "-o", out(m)], 2, "not a valid bench"),
    Case("freeze names no tower", lambda m: ["compress", FACTORY, "--data", "tests.fixtures.user_models:data_splits",
                                             "--recipe", str(m / "freeze.yaml"), "-o", out(m)], 2, "freeze names"),
    Case("stored contract with the wrong class count", lambda m: ["predict", str(m / "num-classes.onnx"), "--inputs",
                                                                   str(m / "good.npz")], 2, "num_classes=3"),
    Case("breakdown with no PyTorch model", lambda m: ["bench", str(m / "planted-data.onnx"), "--data",
                                                       "tests.fixtures.user_models:data_splits", "--breakdown",
                                                       "-o", out(m)], 2, "--breakdown times the towers"),
    Case("profile with no ONNX file", lambda m: ["bench", FACTORY, "--profile", "-o", out(m)], 2,
         "--profile runs ONNX Runtime's profiler"),
    Case("rows with --inputs", lambda m: ["predict", FACTORY, "--inputs", str(m / "good.npz"), "--rows", "5:2"], 2,
         "--split and --rows choose rows of --data"),
    Case("list a kind and a schema", lambda m: ["list", "stages", "--schema", "recipe"], 2, "does not combine"),
    Case("validate an ONNX against an ONNX", lambda m: ["validate", str(m / "tiny.onnx"), "--reference",
                                                        str(m / "tiny.onnx")], 2,
         "validate compares an exported .onnx file"),
    Case("validate a PyTorch model as the candidate", lambda m: ["validate", "demo-fusion", "--reference",
                                                                 "demo-fusion"], 2, "validate compares"),
    Case("data folder whose metadata is not UTF-8", lambda m: ["export", FACTORY, "--data", str(m / "latin1-folder"),
                                                               "-o", out(m)], 2, "metadata.csv is not UTF-8 text"),
    # 2. code named in loaded files
    Case("run dir naming os:system (export)", lambda m: ["export", str(m / "run-os-system"), "-o", out(m)], 2,
         "'os:system'"),
    Case("run dir naming os:system (bench)", lambda m: ["bench", str(m / "run-os-system"), "-o", out(m)], 2,
         "--trust-code"),
    Case("run dir naming an edgemm function", lambda m: ["export", str(m / "run-edgemm-function"), "-o", out(m)],
         2, "does not run code named in a file"),
    Case("run dir naming an untrusted factory", lambda m: ["predict", str(m / "run-planted"), "--inputs",
                                                           str(m / "good.npz")], 2, "planted_factory"),
    Case("run dir with a number as factory", lambda m: ["info", str(m / "run-factory-number")], 2, "is corrupt"),
    Case("run dir whose model.json is not text", lambda m: ["info", str(m / "run-not-json")], 2, "is corrupt"),
    Case("ONNX contract naming a data function", lambda m: ["bench", str(m / "planted-data.onnx"), "-o", out(m)],
         2, "data function"),
    # 3. nonsense that used to exit 0
    Case("NaN weights in export", lambda m: ["export", f"{BAD}:nan_weights", "-o", out(m)], 3, "NaN"),
    Case("NaN weights in predict", lambda m: ["predict", f"{BAD}:nan_weights", "--inputs", str(m / "good.npz")], 3,
         "NaN/inf"),
    Case("batch beyond the axis", lambda m: ["bench", FACTORY, "--batch-size", "2000", "-o", out(m)], 2,
         "outside [1, 32]"),
    Case("batch too big for memory", lambda m: ["bench", f"{BAD}:wide", "--batch-size", "100000", "-o", out(m)], 2,
         "of memory is available"),
    Case("compress batch beyond the axis", lambda m: ["compress", FACTORY, "--data",
                                                      "tests.fixtures.user_models:data_splits", "--batch-size",
                                                      "100000", "--recipe", "int8", "-o", out(m)], 2,
         "outside the batch axis"),
    Case("built-in recipe naming towers the model lacks", lambda m: ["compress", FACTORY, "--data",
                                                                     "tests.fixtures.user_models:data_splits",
                                                                     "-o", out(m)], 2, "towers names ['audio'"),
    Case("tower ratio 1.5", lambda m: ["compress", FACTORY, "--recipe", str(m / "ratio.yaml"), "-o", out(m)], 2,
         "towers.image: Input should be less than 1"),
    Case("keep_float names no tower", lambda m: ["compress", FACTORY, "--data", "tests.fixtures.user_models:data_splits",
                                                 "--recipe", str(m / "keep-float.yaml"), "-o", out(m)], 2, "smell"),
    Case("unknown recipe key", lambda m: ["compress", FACTORY, "--recipe", str(m / "unknown-key.yaml"),
                                          "-o", out(m)], 2, "colour"),
    Case("recipe file that does not exist", lambda m: ["compress", FACTORY, "--recipe", str(m / "recipes" / "my.yaml"),
                                                       "-o", out(m)], 2, "recipe file"),
    Case("rows stop before start", lambda m: ["predict", FACTORY, "--data", "tests.fixtures.user_models:data_splits",
                                              "--rows", "5:2"], 2, "empty"),
    Case("rows not numbers", lambda m: ["predict", FACTORY, "--data", "tests.fixtures.user_models:data_splits",
                                        "--rows", "abc"], 2, "not START:STOP"),
    # 4. inputs and messages
    Case("text file as .npz", lambda m: ["predict", FACTORY, "--inputs", str(m / "text.npz")], 2,
         "not an .npz file (not a zip archive)"),
    Case("NaN in the inputs", lambda m: ["predict", FACTORY, "--inputs", str(m / "nan.npz")], 2, "NaN"),
    Case("wrong rank keeps its shape text", lambda m: ["predict", FACTORY, "--inputs", str(m / "rank.npz")], 2,
         "expected [batch, 3, 16, 16] (rank 4)"),
    Case("wrong dtype", lambda m: ["predict", FACTORY, "--inputs", str(m / "float64.npz")], 2, "float64"),
    Case("token ids outside the vocabulary", lambda m: ["predict", FACTORY, "--inputs",
                                                        str(m / "tokens-out-of-vocab.npz")], 2, "token ids"),
    Case("markup-like path is printed as it is", lambda m: ["info", str(m / "runs[/]" / "[exp1]" / "x.onnx")], 2,
         "[/]/[exp1]/x.onnx"),
    Case("ort-cuda without a GPU", lambda m: ["bench", str(m / "planted-data.onnx"), "--data",
                                              "tests.fixtures.user_models:data_splits", "--backend", "ort-cuda",
                                              "-o", out(m)], 2, "CUDA"),
    Case("torch backend on an ONNX file", lambda m: ["predict", str(m / "planted-data.onnx"), "--inputs",
                                                     str(m / "good.npz"), "--backend", "torch"], 2, "cannot run"),
    Case("data that does not exist", lambda m: ["export", FACTORY, "--data", str(m / "no-such-folder"),
                                                "-o", out(m)], 2, "no-such-folder"),
    Case("unknown data name", lambda m: ["export", FACTORY, "--data", "imagenet-9000", "-o", out(m)], 2,
         "imagenet-9000"),
    Case("unknown profile", lambda m: ["export", FACTORY, "--profile", "jetson-nano-9000", "-o", out(m)], 2,
         "jetson-nano-9000"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_an_error_and_a_fix(case, material, monkeypatch):
    sentinel = material / "SENTINEL"
    monkeypatch.setenv(SENTINEL, str(sentinel))
    monkeypatch.chdir(material)
    for leftover in (material / "out").rglob("*") if (material / "out").exists() else []:
        leftover.unlink() if leftover.is_file() else None
    result = CliRunner().invoke(app, case.args(material))
    text = result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(result.exception)
    assert result.exit_code == case.code, text
    assert "error:" in text and "fix:" in text, text
    assert "Traceback" not in text
    assert case.says in " ".join(text.split()), text  # rich wraps long lines
    assert not sentinel.exists() and not (material / "PWNED").exists(), "code named in a file ran"
    if (material / "out").exists():
        left = [p.name for p in (material / "out").rglob("*") if p.name in COMPLETE_LOOKING]
        assert not left, f"a failed command left {left}"


def test_the_suite_covers_at_least_forty_bad_inputs():
    assert len({c.id for c in CASES}) >= 40


def test_trust_code_lets_a_named_factory_run(material, monkeypatch):
    """The refusal is a policy, not a crash: --trust-code runs the factory a run directory names."""
    sentinel = material / "TRUSTED"
    monkeypatch.setenv(SENTINEL, str(sentinel))
    feed = ["--inputs", str(material / "good.npz")]
    result = CliRunner().invoke(app, ["--trust-code", "predict", str(material / "run-planted"), *feed])
    assert result.exit_code == 0, result.output
    assert sentinel.read_text() == "planted_factory ran"
    CliRunner().invoke(app, ["info", "demo-fusion"])  # the flag lasts one command
    assert CliRunner().invoke(app, ["predict", str(material / "run-planted"), *feed]).exit_code == 2


def test_info_reads_a_run_directorys_contract_without_running_it(material, monkeypatch):
    monkeypatch.setenv(SENTINEL, str(material / "INFO"))
    result = CliRunner().invoke(app, ["info", str(material / "run-os-system")])
    assert result.exit_code == 0 and "tiny-image-text" in result.output and "pixels" in result.output
    assert not (material / "PWNED").exists()


# -- in a real process: usage errors, Ctrl-C, two writers -----------------------------------------
def _edgemm(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgemm.cli.main", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, **kwargs)


@pytest.mark.parametrize("args, says", [
    (["bench", "x.onnx", "--max-seconds", "1"], "No such option: --max-seconds"),
    (["export", "demo-fusion", "--target", "nope"], "Invalid value for '--target'"),
    (["info"], "Missing argument 'model'"),
])
def test_usage_errors_read_like_every_other_error(args, says, tmp_path):
    process = _edgemm(*args, cwd=tmp_path)
    text, _ = process.communicate(timeout=120)
    assert process.returncode == 2, text
    assert f"error: {says}" in text and "fix: see `edgemm" in text and "Traceback" not in text


def _error_raised_while_interrupted() -> AttributeError:
    """What a Ctrl-C inside a lazy import looks like afterwards: a `finally` touches the half-imported module
    and its AttributeError replaces the KeyboardInterrupt (seen in torch.onnx.export as "partially initialized
    module 'torch._inductor' has no attribute 'custom_graph_pass'")."""
    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise AttributeError("partially initialized module 'torch._inductor' has no attribute 'x'")
    except AttributeError as err:
        return err


def test_ctrl_c_that_surfaces_as_another_error_is_still_an_interruption(monkeypatch):
    from edgemm.errors import Interrupted, as_user_error
    from edgemm.export.profiles import load_profile
    from edgemm.export.targets import onnx as onnx_target
    assert isinstance(as_user_error(_error_raised_while_interrupted()), Interrupted)
    assert not isinstance(as_user_error(AttributeError("a bug")), Interrupted)

    def export(*args, **kwargs):
        raise _error_raised_while_interrupted()
    monkeypatch.setattr(onnx_target.torch.onnx, "export", export)
    settings = onnx_target.OnnxSettings.model_validate(load_profile("x86-cpu").onnx.model_dump())
    with pytest.raises(KeyboardInterrupt):  # not "torch.onnx.export failed": exit 130, not 2
        onnx_target.to_onnx_proto(resolve_model("demo-fusion"), settings)


def test_ctrl_c_during_export_leaves_nothing_complete(tmp_path):
    process = _edgemm("export", "demo-fusion", "-o", "out", cwd=tmp_path)
    lock = tmp_path / "out" / ".edgemm.lock"
    for _ in range(600):  # the command holds its output folder: it is past start-up, inside the export
        if lock.exists() and lock.read_text():
            break
        time.sleep(0.1)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    text, _ = process.communicate(timeout=120)
    assert process.returncode == 130, text
    assert "error: interrupted (Ctrl-C)" in text and "Traceback" not in text
    assert not [p.name for p in (tmp_path / "out").rglob("*") if p.name in COMPLETE_LOOKING]


def test_a_second_writer_into_the_same_folder_is_refused(tmp_path):
    """This test holds the folder as a first writer would; edgemm in another process must refuse it."""
    from edgemm.artifacts import run_directory
    with run_directory(tmp_path / "out"):
        second = _edgemm("export", FACTORY, "-o", "out", cwd=tmp_path)
        text, _ = second.communicate(timeout=120)
    assert second.returncode == 2, text
    assert "is being written by another edgemm command (pid" in " ".join(text.split()) and "fix:" in text
    assert not [p.name for p in (tmp_path / "out").rglob("*") if p.name in COMPLETE_LOOKING]
    after = _edgemm("export", FACTORY, "-o", "out", cwd=tmp_path)  # released: the next writer gets it
    assert after.wait(timeout=300) == 0 and (tmp_path / "out" / "manifest.json").is_file()


def test_an_edgemm_bug_is_reported_as_internal_with_the_way_to_the_traceback(monkeypatch):
    import edgemm.api

    def broken(kind=None):
        raise KeyError("planted bug")
    monkeypatch.setattr(edgemm.api, "components", broken)
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: internal error: KeyError: 'planted bug'" in result.output and "edgemm --debug" in result.output
    debug = CliRunner().invoke(app, ["--debug", "list"])
    assert isinstance(debug.exception, KeyError)  # --debug lets the traceback through



def test_what_foreign_exporters_write_is_not_refused(tmp_path):
    """No false alarms: an ONNX file with a fixed [1, 2] output on a dynamic batch (as many exporters write it),
    its batch axis named "N", runs at batch 4; its per-sample memory is counted at one row, not 256."""
    from edgemm import api
    from edgemm.runtime.memory import check_batch_fits, input_bytes_per_item
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("Slice", ["r", "s", "e", "a"], ["y"])],
                         "foreign", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
                         [onnx.numpy_helper.from_array(np.array(v, np.int64), n)
                          for n, v in (("s", [0]), ("e", [2]), ("a", [1]))])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    outputs = api.predict(str(tmp_path / "f.onnx"), {"x": np.ones((4, 4), np.float32)})
    assert outputs["y"].shape == (4, 2)
    model = resolve_model(str(tmp_path / "f.onnx"))
    assert input_bytes_per_item(model.spec) == 4 * 4  # one row of 4 float32 values
    check_batch_fits(model, [32], available=2**30)  # 32 rows fit in 1 GiB


def test_labels_written_as_whole_floats_are_class_indices(tmp_path):
    from edgemm.data.datasets import Split
    from edgemm.runtime import load_session
    from edgemm.runtime.evaluate import accuracy
    model = resolve_model(FACTORY)
    feed = model.spec.example_inputs({"batch": 6, "seq": 4})
    predicted = load_session(model).run(feed)["scores"].argmax(1)
    as_floats = Split("test", feed, predicted.astype(np.float64))
    assert accuracy(load_session(model), as_floats) == 1.0
