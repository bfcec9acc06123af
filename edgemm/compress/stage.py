"""What every compression stage shares: the artifact handed between stages, the run's context,
the stage interface and its registry (one module per stage in ``compress/stages/``)."""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from pydantic import Field

from edgemm.compress.gates import Gates
from edgemm.config import Strict
from edgemm.data.datasets import Split, load_split
from edgemm.errors import NonFiniteOutputs
from edgemm.export.profiles import ExportProfile
from edgemm.models.registry import LoadedModel, content_sha256, resolve_model
from edgemm.registry import Component, Registry
from edgemm.runtime import Session, accuracy, load_session
from edgemm.runtime.evaluate import correct
from edgemm.spec import ModelSpec

Log = Callable[[str], None]


@dataclass
class Artifact:
    """What one stage hands the next: a PyTorch model directory ("torch") or an ONNX file ("onnx")."""

    kind: str
    path: Path

    def sha256(self) -> str:
        return content_sha256(self.path)

    def load(self) -> LoadedModel:
        return resolve_model(str(self.path))


@dataclass
class Context:
    """The run a stage belongs to: the recipe's gates, target profile, teacher, data and where to write."""

    gates: Gates
    profile: ExportProfile
    teacher: LoadedModel
    dataset: str
    out_dir: Path
    threads: int | None
    log: Log
    progress: Callable | None = None
    reference_correct: np.ndarray | None = None  # per gate-split sample, for the final gate's paired statistics
    reference_blanked: dict[str, float] = field(default_factory=dict)  # gate-split accuracy with one tower blanked
    stage_dir: Path = field(default_factory=Path)

    @property
    def reference_accuracy(self) -> float:
        """The input model's accuracy on the gate split: every budget is measured from it."""
        return 0.0 if self.reference_correct is None else float(self.reference_correct.mean())

    def split(self, name: str | None = None, spec: ModelSpec | None = None) -> Split:
        """A split of the run's dataset (default: the one the gates read), read as ``spec`` says (default: the
        input model's contract; a stage may change it, e.g. the image size, so each artifact is scored on its own)."""
        return load_split(self.dataset, name or self.gates.split, spec or self.teacher.spec)

    def session_accuracy(self, session: Session, split: str | None = None) -> float:
        return accuracy(session, self.split(split, session.spec))

    def accuracy(self, artifact: Artifact, split: str | None = None) -> float:
        """Accuracy of an artifact on its default backend: the figure every gate reads."""
        return float(self.correct(artifact, split)[0].mean())

    def correct(self, artifact: Artifact, split: str | None = None,
                blanked: tuple[str, ...] = ()) -> list[np.ndarray | None]:
        """Per sample of the split, whether the artifact's top-1 is right: the final gate pairs it with the input's.
        With ``blanked`` towers: one array for the split as it is, then one per tower with that tower's inputs
        at their empty value (one session for all); None where the model's outputs on that input are not finite
        (a model may never have been meant to see a modality missing: that is reported, not a failed run)."""
        session = load_session(artifact.load(), threads=self.threads)
        data = self.split(split, session.spec)
        scores: list[np.ndarray | None] = [correct(session, data)]
        for tower in blanked:
            try:
                scores.append(correct(session, data.blanked(session.spec, tower)))
            except NonFiniteOutputs:
                scores.append(None)
        return scores

    def allowed_drop(self, stage_limit: float | None) -> float:
        """The recipe's accuracy budget (a fraction), tightened by a stage's own ``max_accuracy_drop``."""
        budget = self.gates.allowed_drop(self.reference_accuracy)
        return budget if stage_limit is None else min(budget, stage_limit / 100)


class StageConfig(Strict):
    """Keys every stage takes; a stage's own config class adds its keys and ``stage: Literal[name]``."""

    stage: str
    max_accuracy_drop: float | None = Field(None, ge=0, description="optional per-stage gate, in accuracy points")


class Stage(Component):
    """One compression step: reads an artifact of kind ``consumes``, writes one of kind ``produces``."""

    config: ClassVar[type[StageConfig]]
    in_recipes: ClassVar[bool] = True  # False: inserted by the planner (the ONNX export), not written in recipes
    resumable: ClassVar[bool] = False  # True: an interrupted run keeps its folder (checkpoints) for the next try
    uses_gates: ClassVar[bool] = False  # True: its output depends on the recipe's gates (part of its reuse key)
    recovers: ClassVar[bool] = False  # True: it trains, so accuracy lost before it may come back (distillation)
    gate_fix: ClassVar[str] = "compress less in this stage, or raise its max_accuracy_drop"

    def config_type(self) -> Any:
        """The type a recipe entry is validated against (a union when the stage has backends)."""
        return self.config

    def consumes_for(self, config: StageConfig | None) -> str:
        return self.consumes

    def check_usable(self, config: StageConfig | None) -> None:
        """Raise BackendUnavailable before any stage runs when this one could not run here."""
        STAGES.get(self.name)

    def check_model(self, config: StageConfig | None, spec: ModelSpec, dataset: str, split: str,
                    module: Any = None) -> None:
        """Raise before any stage runs when this one cannot work on this model (``module``: the input model's
        PyTorch module, when it has one) or data (default: nothing to check)."""

    def splits_read(self, config: StageConfig | None) -> list[str]:
        """Dataset splits the stage reads (checked against the dataset before anything runs)."""
        return []

    def data_read(self, config: StageConfig | None) -> list[str]:
        """Data references the stage reads besides the run's data (their fingerprints key its output)."""
        return []

    def produces_for(self, config: StageConfig | None) -> str:
        return self.produces

    @abstractmethod
    def run(self, config: StageConfig | None, artifact: Artifact, ctx: Context) -> tuple[Artifact, dict]:
        """Write the output artifact into ``ctx.stage_dir``; return it and the stage's metrics."""


STAGES: Registry[Stage] = Registry("stage", "edgemm.compress.stages", entry_points="edgemm.stages")


def artifact_chain(configs: list[StageConfig]) -> list[tuple[StageConfig, str, str]]:
    """Each stage config with the artifact kind it needs and the kind it hands on, in recipe order."""
    chain = []
    for config in configs:
        stage = STAGES.get(config.stage, usable=False)
        chain.append((config, stage.consumes_for(config), stage.produces_for(config)))
    return chain
