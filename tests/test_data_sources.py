"""Your data, one mechanism for every command: a data folder (Hugging Face imagefolder layout), an .npz
and module:function, each read as the model contract says and recorded in the artifacts."""
from __future__ import annotations

import numpy as np
import pytest

from edgemm import api
from edgemm.bench.latency import TimingSettings
from edgemm.compress.recipe import recipe_model
from edgemm.data.datasets import load_split
from edgemm.errors import CodeNotTrusted, ConfigError
from edgemm.models.registry import LoadedModel, resolve_model, save_model
from edgemm.runtime import accuracy, load_session

from .conftest import FACTORY, OWN, edgemm_cli

FAST = TimingSettings(warmup=2, min_iterations=6, min_seconds=0.0, rounds=2)


def test_npz_data_scores_bench_and_compress(tmp_path):
    model = resolve_model(FACTORY)
    feed = model.spec.example_inputs({"batch": 40, "seq": 6}, seed=3)
    labels = load_session(model).run(feed)["scores"].argmax(1)
    labels[:10] = (labels[:10] + 1) % 5  # a quarter of the labels disagree with the model
    data = tmp_path / "mine.npz"
    np.savez(data, **{f"test/{k}": v for k, v in feed.items()}, **{"test/labels": labels})
    split = load_split(str(data), "test")
    assert accuracy(load_session(model), split) == pytest.approx(0.75)
    # a model whose contract names the file gets accuracy in bench, like the demo's dataset
    own = LoadedModel(model.spec.model_copy(update={"dataset": str(data)}), FACTORY, "factory", model.module, FACTORY)
    save_model(own, tmp_path / "run")
    report, _ = api.bench([str(tmp_path / "run")], batch_sizes=(2,), threads=1, splits=("test",), timing=FAST)
    assert report.results[0].accuracy == {"test": pytest.approx(0.75)}
    # compress on it: splits come from the data, not from the demo's names (it has no 'ood')
    splits = {name: model.spec.example_inputs({"batch": 40, "seq": 6}, seed=seed) for seed, name in enumerate(
        ("train", "val"), start=10)}
    np.savez(data, **{f"{s}/{k}": v for s, feed in {**splits, "test": feed}.items() for k, v in feed.items()},
             **{f"{s}/labels": labels for s in ("train", "val", "test")})
    quantize = {"name": "q", "gates": {"max_accuracy_drop": 100}, "stages": [{"stage": "quantize", "calibration_samples": 16}]}
    result = api.compress(FACTORY, recipe_model().model_validate(quantize), tmp_path / "c", data=str(data),
                          batch_sizes=(1,), timing=FAST, log=lambda _m: None)
    assert result.report.settings.splits == ["test"] and result.report.results[2].accuracy["test"] > 0
    holdout = {**quantize, "gates": {"split": "holdout"}}
    with pytest.raises(ConfigError, match="has no split 'holdout' \\(read by gates.split\\)"):
        api.compress(FACTORY, recipe_model().model_validate(holdout), tmp_path / "h", data=str(data))
    assert not (tmp_path / "h").exists()  # refused before any stage ran

def test_a_data_folder_is_read_as_the_contract_says(own_data):
    spec = resolve_model(OWN).spec
    from edgemm.data.datasets import find_source
    assert find_source(str(own_data)).splits_for(str(own_data)) == ("test", "train", "val")  # the split column
    val = load_split(str(own_data), "val", spec)
    assert len(val) == 30 and set(val.inputs) == {"pixel_values", "input_ids", "attention_mask"}
    spec.check_inputs(val.inputs)  # dtypes, shapes and token ids as the contract says
    assert val.inputs["pixel_values"].min() >= -1 and val.inputs["pixel_values"].max() <= 1  # (x - 0.5) / 0.5
    # ids and mask come from one tokenisation: padding ids exactly where the mask is 0
    assert ((val.inputs["input_ids"] == 0) == (val.inputs["attention_mask"] == 0)).all()
    assert val.inputs["input_ids"].shape[1] < spec.axes["seq"].max  # padded to the longest caption, not the axis max
    one = val.head(1).trimmed(spec)  # timed at its own length, not the split's longest caption
    assert one.inputs["input_ids"].shape[1] == max(int(val.inputs["attention_mask"][0].sum()), spec.axes["seq"].min)
    model = resolve_model(OWN)
    full, short = (load_session(model).run(s.inputs)["logits"] for s in (val.head(1), one))
    assert np.allclose(full, short, atol=1e-5)  # masked padding changes nothing but the time
    import csv
    names = [r["label"] for r in csv.DictReader(open(own_data / "metadata.csv")) if r["split"] == "val"]
    assert [spec.task.labels[i] for i in val.labels] == names  # class names mapped by the contract's labels


def test_folder_problems_name_the_row_and_the_fix(own_data, tmp_path):
    import shutil
    from edgemm.errors import InputError
    spec = resolve_model(OWN).spec
    broken = tmp_path / "broken"
    shutil.copytree(own_data, broken)
    (broken / "images" / "0003.png").write_bytes(b"not a png")  # row 3 is in 'val'
    with pytest.raises(InputError, match="cannot read image .*0003.png"):
        load_split(str(broken), "val", spec)
    no_text = tmp_path / "no_text"
    shutil.copytree(own_data, no_text)
    (no_text / "metadata.csv").write_text((own_data / "metadata.csv").read_text().replace(",text,", ",caption,", 1))
    with pytest.raises(InputError, match="no column\\(s\\) \\['text'\\]"):
        load_split(str(no_text), "val", spec)
    # datasets infers splits from file names: a picture called toy_train.png must stay an ordinary row
    named = tmp_path / "named"
    shutil.copytree(own_data, named)
    (named / "images" / "0003.png").rename(named / "images" / "toy_train.png")
    (named / "metadata.csv").write_text((own_data / "metadata.csv").read_text().replace("images/0003.png", "images/toy_train.png"))
    assert len(load_split(str(named), "val", spec)) == 30 and len(load_split(str(named), "train", spec)) == 90
    strange = tmp_path / "strange"
    shutil.copytree(own_data, strange)
    (strange / "metadata.csv").write_text((own_data / "metadata.csv").read_text().replace(",red,", ",purple,"))
    with pytest.raises(InputError, match="'purple'.* not among the model's classes"):
        load_split(str(strange), "train", spec)


def test_folder_data_follows_the_artifacts_across_processes(own_run, own_data, tmp_path):
    """Export validates on the folder and records it; bench in another process scores on it unasked."""
    export = edgemm_cli("--trust-code", "export", str(own_run), "--data", str(own_data), "-o", str(tmp_path / "exp"))
    assert export.returncode == 0, export.stderr[-2000:]
    validation = (tmp_path / "exp" / "validation.json").read_text()
    assert f"{own_data}/test[0:30]" in validation  # real samples of the folder, not random inputs
    bench = edgemm_cli("bench", str(tmp_path / "exp" / "model.onnx"), "--batch-size", "2", "--min-iterations", "5",
                 "--min-seconds", "0", "-o", str(tmp_path / "bench"), cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-2000:]
    import json
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    expected = accuracy(load_session(resolve_model(str(own_run))), load_split(str(own_data), "test",
                                                                              resolve_model(str(own_run)).spec))
    assert report["results"][0]["accuracy"]["test"] == pytest.approx(expected, abs=1e-6) and expected > 0.6




DATA_CODE = "tests.fixtures.user_models:data_splits"


def test_data_from_code_runs_only_when_named_on_the_command_line(tiny_onnx, tmp_path):
    from edgemm.data.datasets import choose_data
    from edgemm.export.targets.onnx import save_onnx
    import onnx
    model = resolve_model(FACTORY)
    expected = accuracy(load_session(model), load_split(DATA_CODE, "test", model.spec))
    report, _ = api.bench([str(tiny_onnx)], batch_sizes=(2,), threads=1, splits=("test",), timing=FAST, dataset=DATA_CODE)
    assert report.results[0].accuracy == {"test": pytest.approx(expected)}
    # an ONNX someone else wrote, whose contract records code as its data: not run unless named (trust.py)
    planted = "tests.fixtures.bad_models:planted_data"  # named by no test, so never trusted in this process
    shared = save_onnx(onnx.load(str(tiny_onnx)), model.spec.model_copy(update={"dataset": planted}),
                       tmp_path / "shared.onnx")
    with pytest.raises(CodeNotTrusted, match="names the data function .*edgemm does not run code named in a file"):
        api.bench([str(shared)], batch_sizes=(2,), threads=1, timing=FAST)
    spec = model.spec.model_copy(update={"dataset": DATA_CODE})
    assert choose_data(None, spec, trusted=True) == DATA_CODE  # the user's own factory: their code
    assert choose_data(DATA_CODE, spec, trusted=False) == DATA_CODE  # named on the command line
    assert choose_data(None, spec, trusted=False) == DATA_CODE  # ... and so trusted in this process


def test_an_audio_folder_becomes_log_mel_features(tmp_path):
    """audiofolder layout: clips at other sample rates, resampled and turned into log-mel as AudioFrom says.
    A class called "None" is a class, not a missing label (pandas' default reading of a CSV)."""
    import csv
    import soundfile
    from edgemm.spec import AudioFrom, AxisRange, InputSpec, ModelSpec, OutputSpec, TaskSpec
    rng = np.random.default_rng(0)
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "label", "split"])
        for i in range(6):
            rate = (8000, 22050)[i % 2]
            soundfile.write(tmp_path / f"clip{i}.wav", rng.normal(0, 0.1, int(rate * (0.5 + 0.1 * i))).astype(np.float32), rate)
            writer.writerow([f"clip{i}.wav", ("yes", "None")[i % 2], ("train", "test")[i // 3]])
    spec = ModelSpec(name="kws", inputs=(InputSpec(name="mel", modality="audio", dtype="float32",
                                                   shape=("batch", 40, "frames"),
                                                   preprocess=AudioFrom(sample_rate=16000, seconds=1.0)),),
                     outputs=(OutputSpec(name="logits", shape=("batch", 2)),),
                     task=TaskSpec(kind="classification", output="logits", num_classes=2, labels=("yes", "None")),
                     axes={"batch": AxisRange(min=1, opt=4, max=8), "frames": AxisRange(min=10, opt=101, max=200)})
    test = load_split(str(tmp_path), "test", spec)
    assert test.inputs["mel"].shape == (3, 40, 101) and test.labels.tolist() == [1, 0, 1]  # 1 s at hop 160 -> 101
    spec.check_inputs(test.inputs)
    with open(tmp_path / "metadata.csv", "w", newline="") as f:  # numbered classes: there NA is a missing label
        csv.writer(f).writerows([["file_name", "label", "split"], *([f"clip{i}.wav", ("0", "NA", "1")[i % 3], "test"]
                                                                   for i in range(6))])
    numbered = spec.model_copy(update={"task": spec.task.model_copy(update={"labels": None})})
    assert load_split(str(tmp_path), "test", numbered).labels.tolist() == [0, -1, 1, 0, -1, 1]


def test_edited_data_changes_the_fingerprint_stages_are_reused_by(own_data, tmp_path):
    """Stage reuse keys on the data's fingerprint, not only its name: an edited folder or .npz is new data."""
    import os
    import shutil
    from edgemm.data.datasets import data_fingerprint
    folder = tmp_path / "data"
    shutil.copytree(own_data, folder)
    before = data_fingerprint(str(folder))
    meta = folder / "metadata.csv"
    meta.write_text(meta.read_text().replace(",train\n", ",val\n", 1))
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 10**9))
    assert data_fingerprint(str(folder)) != before
    arrays = tmp_path / "d.npz"
    np.savez(arrays, **{"test/labels": np.zeros(3)})
    first = data_fingerprint(str(arrays))
    np.savez(arrays, **{"test/labels": np.zeros(4)})
    assert data_fingerprint(str(arrays)) != first and data_fingerprint("edgemm-digits") == "edgemm-digits"


def test_predict_reads_rows_of_the_data_as_the_contract_says(own_run, own_data):
    from typer.testing import CliRunner
    from edgemm.cli.main import app
    result = CliRunner().invoke(app, ["predict", str(own_run), "--data", str(own_data), "--split", "val", "--rows", "0:4"])
    assert result.exit_code == 0, result.output
    assert "logits: shape [4, 3]" in result.output
    expected = load_session(resolve_model(str(own_run))).run(
        load_split(str(own_data), "val", resolve_model(str(own_run)).spec).head(4).inputs)["logits"].argmax(1)
    assert f"top-1 {expected.tolist()}" in result.output
    neither = CliRunner().invoke(app, ["predict", str(own_run)])
    assert neither.exit_code == 2 and "give --inputs FILE.npz or --data REF" in neither.output
