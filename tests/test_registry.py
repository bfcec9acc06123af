"""Registries: entries found by discovery, names that clash or are unknown, unusable entries,
lazy imports of optional libraries, schemas derived from what is registered."""
from __future__ import annotations

import pytest
from pydantic import BaseModel

from edgemm.compress.quantizer import QUANTIZERS
from edgemm.compress.recipe import available_recipes, load_recipe, recipe_model
from edgemm.compress.stage import STAGES
from edgemm.data.datasets import DATASETS
from edgemm.errors import BackendUnavailable, ConfigError
from edgemm.export.profiles import load_profile, profile_model
from edgemm.export.target import EXPORT_TARGETS
from edgemm.lazy import lazy_import
from edgemm.models.registry import ZOO
from edgemm.registry import Component, Registry
from edgemm.runtime import BACKENDS


def test_built_in_components_are_discovered_from_their_packages():
    assert {"prune", "distill", "quantize", "export"} <= set(STAGES.names())
    assert {"ort", "inc", "modelopt", "fp16"} <= set(QUANTIZERS.names())
    assert {"onnx", "tensorrt", "torch-tensorrt"} <= set(EXPORT_TARGETS.names())
    assert {"torch", "torch-compile", "torch-cuda", "ort-cpu", "ort-cuda"} <= set(BACKENDS.names())
    assert {"demo-fusion", "demo-text-only"} <= set(ZOO.names())
    assert "edgemm-digits" in DATASETS.names()
    for registry in (STAGES, QUANTIZERS, EXPORT_TARGETS, BACKENDS):
        for entry in registry:
            assert entry.name and entry.description, entry
            assert entry.config is None or issubclass(entry.config, BaseModel)


class _Thing(Component):
    name = "thing"
    description = "a test component"


def test_registry_names_problems_and_fixes():
    registry: Registry[Component] = Registry("widget", "tests.fixtures")  # a package that registers nothing
    registry.register(_Thing)
    with pytest.raises(ConfigError, match="unknown widget 'gadget'") as err:
        registry.get("gadget")
    assert "thing" in err.value.hint

    class Other(Component):
        name = "thing"
    with pytest.raises(ConfigError, match="two widgets are called 'thing'"):
        registry.register(Other)

    class NeedsAbsentLibrary(Component):
        name = "absent"
        requires = ("no_such_library_xyz",)
        extra = "absent"
    registry.register(NeedsAbsentLibrary)
    assert "absent" in registry  # listed, but refused for use with the install command
    with pytest.raises(BackendUnavailable, match=r"needs no_such_library_xyz \(pip install 'edgemm\[absent\]'\)"):
        registry.get("absent")
    assert registry.get("absent", usable=False).name == "absent"


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_new_files_and_entry_point_plugins_are_found_and_a_broken_plugin_is_listed_not_fatal(tmp_path, monkeypatch):
    """A component is one new file in the registry's package, or one module named by an installed
    package's entry point; a plugin that fails to import is named, and everything else still works."""
    _write(tmp_path / "widgets_pkg" / "__init__.py",
           "from edgemm.registry import Registry\nWIDGETS = Registry('widget', 'widgets_pkg', 'widgets_pkg.plugins')\n")
    _write(tmp_path / "widgets_pkg" / "gear.py", "from edgemm.registry import Component\nfrom widgets_pkg import WIDGETS\n"
           "@WIDGETS.register\nclass Gear(Component):\n    name = 'gear'\n")
    _write(tmp_path / "cog_plugin.py", "from edgemm.registry import Component\nfrom widgets_pkg import WIDGETS\n"
           "@WIDGETS.register\nclass Cog(Component):\n    name = 'cog'\n")
    _write(tmp_path / "bad_plugin.py", "raise RuntimeError('boom')\n")
    # what `pip install` of a package declaring the entry points leaves on the path
    _write(tmp_path / "widget_plugins-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: widget-plugins\nVersion: 1.0\n")
    _write(tmp_path / "widget_plugins-1.0.dist-info" / "entry_points.txt",
           "[widgets_pkg.plugins]\ncog = cog_plugin\nbad = bad_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets_pkg

    registry = widgets_pkg.WIDGETS
    assert registry.names() == ["gear", "cog"]
    assert "RuntimeError: boom" in registry.broken()["bad"]
    with pytest.raises(BackendUnavailable, match="widget 'bad' is not usable here: plugin 'bad_plugin' failed"):
        registry.get("bad")
    assert registry.get("cog").name == "cog"  # the working plugin is unaffected


def test_lazy_imports_cost_nothing_until_used_and_name_the_install_command(tmp_path, monkeypatch):
    missing = lazy_import("no_such_library_xyz", "pip install 'edgemm[xyz]'")
    assert not missing.available
    with pytest.raises(BackendUnavailable, match="no_such_library_xyz is not installed") as err:
        missing.anything
    assert err.value.hint == "pip install 'edgemm[xyz]'"
    (tmp_path / "broken_lib.py").write_text("raise ImportError('libcudnn.so.9: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailable, match="broken_lib is installed but fails to import .*libcudnn"):
        lazy_import("broken_lib").anything
    math = lazy_import("math")
    assert "not imported yet" in repr(math) and math.sqrt(9) == 3 and "(imported)" in repr(math)


def test_unusable_target_and_backend_are_refused_with_the_reason():
    with pytest.raises(BackendUnavailable, match="export target 'torch-tensorrt' is not usable here: needs "
                                                 "torch_tensorrt \\(pip install 'edgemm\\[torch-tensorrt\\]'\\)"):
        EXPORT_TARGETS.get("torch-tensorrt")
    reason = BACKENDS.find("torch-cuda").unavailable_reason()
    if reason:
        with pytest.raises(BackendUnavailable, match="backend 'torch-cuda' is not usable here"):
            BACKENDS.get("torch-cuda")


def test_recipe_schema_is_derived_from_stages_and_quantizers():
    schema = recipe_model().model_json_schema()
    text = str(schema)
    for name in ("PruneConfig", "DistillConfig", "OrtQuantizeConfig", "IncQuantizeConfig", "Fp16Config"):
        assert name in text
    assert "ExportConfig" not in text  # the planner inserts exports; recipes do not list them
    saved = QUANTIZERS.find("fp16")
    QUANTIZERS.unregister("fp16")
    try:  # the schema follows the registry: without fp16, a recipe asking for it is refused
        with pytest.raises(ValueError, match="unknown quantize backend; registered: inc, modelopt, ort"):
            recipe_model().model_validate({"name": "r", "stages": [{"stage": "quantize", "backend": "fp16"}]})
    finally:
        QUANTIZERS.register(saved)
    assert recipe_model().model_validate({"name": "r", "stages": [{"stage": "quantize", "backend": "fp16"}]})


def test_profile_sections_belong_to_their_targets():
    profile = load_profile("x86-cpu")
    assert profile.section("onnx").opset == 18 and profile.target == "onnx"
    assert "onnx" in profile_model().model_json_schema(by_alias=True)["properties"]


def test_every_shipped_recipe_and_profile_loads():
    assert set(available_recipes()) >= {"prune-distill-int8", "int8", "inc-int8", "fp16"}
    for name in available_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name and load_profile(recipe.target).name == recipe.target
