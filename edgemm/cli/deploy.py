"""Deployment commands: ``edgemm profiles list|show`` and ``edgemm inspect`` (TensorRT compatibility)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from edgemm.artifacts import write_json
from edgemm.cli.common import handles_errors, out, say
from edgemm.errors import NotDeployable
from edgemm.lazy import lazy_import

api = lazy_import("edgemm.api")
tables = lazy_import("edgemm.cli.tables")

profiles_app = typer.Typer(help="Export profiles: one validated YAML per deployment target.", no_args_is_help=True)


@profiles_app.command("list")
@handles_errors
def list_profiles() -> None:
    """Every profile: target, precision, device, TensorRT major, power mode."""
    out.print(tables.profiles_table(api.profiles()))


@profiles_app.command("show")
@handles_errors
def show_profile(name: Annotated[str, typer.Argument(help="profile name or YAML path")]) -> None:
    """A profile as validated, defaults filled in."""
    profile = api.load_profile(name)
    out.print(yaml.safe_dump(profile.model_dump(mode="json", by_alias=True), sort_keys=False), markup=False,
              highlight=False)


@handles_errors
def inspect(model: Annotated[str, typer.Argument(help="an .onnx file")],
            profile: Annotated[str, typer.Option(help="TensorRT profile (`edgemm profiles list`)")] = "tensorrt-gpu",
            json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the findings here")] = None,
            ) -> None:
    """Will TensorRT take this graph? Operators, types, Q/DQ, dynamic axes, DLA: node, reason, fix."""
    report = api.inspect(model, profile=profile)
    if json_out:
        write_json(json_out, report.to_dict())
    out.print(tables.findings_table(report))
    errors = report.errors
    if errors:
        raise NotDeployable(f"{len(errors)} error(s): TensorRT {report.tensorrt_major} will not take {model} as is",
                            errors[0].fix)
    warned = len(report.findings)
    say("ok:", "green", f"no errors for TensorRT {report.tensorrt_major}" + (f" ({warned} warning(s))" if warned else ""),
        out)
