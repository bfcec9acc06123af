"""README's "Compress your own model", followed word for word in a fresh directory."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_compress_your_own_model_as_the_readme_says(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # what a fresh clone has beside the README
    commands = readme_commands("Compress your own model")
    assert [c.split()[0] for c in commands] == ["python", "python", "edgemm", "edgemm", "edgemm"]
    for command in commands:
        argv = shlex.split(command)
        argv = [sys.executable, *argv[1:]] if argv[0] == "python" else [sys.executable, "-m", "edgemm.cli.main", *argv[1:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
    report = json.loads((tmp_path / "runs" / "own-bench" / "report.json").read_text())
    assert [set(r["accuracy"]) for r in report["results"]] == [{"test"}, {"test"}]  # the recorded data, unasked
    assert all(r["accuracy"]["test"] > 0.8 for r in report["results"])  # trained weights were used
    assert (tmp_path / "runs" / "own" / "final" / "model.onnx").is_file()


def test_the_readmes_expanded_default_recipe_is_the_shipped_one_with_every_key():
    """It drifted once (drop_layers: {} after the shipped recipe had {text: 0.5}); a key the README leaves out
    is a key a user cannot find there."""
    import yaml
    from edgemm.compress.recipe import load_recipe, recipe_model

    readme = (ROOT / "README.md").read_text()
    block = readme.split("backend validates its own keys", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    written = yaml.safe_load(block)
    shipped = load_recipe("prune-distill-int8").model_dump(mode="json")
    assert recipe_model().model_validate(written).model_dump(mode="json") == shipped
    assert set(written) == set(shipped) and set(written["gates"]) == set(shipped["gates"])
    for mine, theirs in zip(written["stages"], shipped["stages"], strict=True):
        assert set(mine) == set(theirs), f"{theirs['stage']}: README lacks {sorted(set(theirs) - set(mine))}"
