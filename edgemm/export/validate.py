"""Check an exported artifact against the PyTorch reference on real and unseen-shape inputs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from pydantic import Field

from edgemm import metrics
from edgemm.data.datasets import load_split
from edgemm.errors import ConfigError
from edgemm.config import Strict
from edgemm.models.registry import LoadedModel
from edgemm.runtime import Session, fidelity, load_session
from edgemm.runtime.evaluate import run_checked
from edgemm.spec import ModelSpec


class ValidationSettings(Strict):
    """How an exported artifact is checked against the PyTorch reference."""

    split: str = Field("test", description="dataset split whose real samples are compared")
    samples: int = Field(256, ge=1)
    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)
    min_cosine: float = Field(0.9999, le=1)
    min_top1_agreement: float = Field(0.999, ge=0, le=1)


@dataclass
class OutputCheck:
    output: str
    max_abs_error: float
    max_rel_error: float
    mismatched_fraction: float
    cosine: float
    top1_agreement: float | None
    failures: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    passed: bool
    inputs: list[str]
    checks: list[OutputCheck]
    tolerances: dict[str, float]
    data: str | None = None  # the data its real samples came from; None: generated inputs only

    def to_dict(self) -> dict:
        return asdict(self)

    def failure_text(self) -> str:
        return "; ".join(f"output {c.output!r}: {', '.join(c.failures)}" for c in self.checks if c.failures)


def validation_feeds(spec: ModelSpec, settings: ValidationSettings) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Real held-out samples when the spec names a dataset, plus random inputs at odd, unseen sizes."""
    feeds = []
    if spec.dataset:
        split = load_split(spec.dataset, settings.split, spec).for_inputs(spec.input_names).head(settings.samples)
        feeds += [(f"{spec.dataset}/{settings.split}[{i}:{i + len(x[spec.input_names[0]])}]", x)
                  for i, (x, _) in zip(range(0, len(split), 64), split.batches(64))]
    # Odd sizes, away from the export example (batch 2, opt lengths), inside each axis range.
    unseen = {name: max(rng.min, min(rng.max, 3 if name == "batch" else rng.opt // 2 + 1))
              for name, rng in spec.axes.items()}
    feeds.append((f"random {unseen}", spec.example_inputs(unseen, seed=123)))
    return feeds


def compare(spec: ModelSpec, reference: Session, candidate: Session, settings: ValidationSettings) -> ValidationReport:
    mine, theirs = candidate.spec, reference.spec
    if sorted(mine.input_names) != sorted(theirs.input_names):
        raise ConfigError(f"the candidate takes inputs {mine.input_names} but the reference takes "
                          f"{theirs.input_names}: they are not the same model",
                          "validate an export against the model it was exported from")
    feeds = validation_feeds(spec, settings)
    ref_out: dict[str, list[np.ndarray]] = {n: [] for n in spec.output_names}
    cand_out: dict[str, list[np.ndarray]] = {n: [] for n in spec.output_names}
    for _, feed in feeds:
        # Each side honours its own contract (a stored one can lie); a NaN reference validates nothing.
        r, c = run_checked(reference, feed, finite=True), run_checked(candidate, feed)
        for name in spec.output_names:  # present on both sides: run_checked and the ONNX loader made sure
            ref_out[name].append(r[name].reshape(len(r[name]), -1))
            cand_out[name].append(c[name].reshape(len(c[name]), -1))
    checks = [_check(name, np.concatenate(ref_out[name]), np.concatenate(cand_out[name]), spec, settings)
              for name in spec.output_names]
    return ValidationReport(passed=not any(c.failures for c in checks), inputs=[label for label, _ in feeds],
                            checks=checks, tolerances=settings.model_dump(), data=spec.dataset)


def _check(name: str, ref: np.ndarray, cand: np.ndarray, spec: ModelSpec, s: ValidationSettings) -> OutputCheck:
    if ref.shape != cand.shape:
        return OutputCheck(name, float("inf"), float("inf"), 1.0, 0.0, None,
                           [f"shape {cand.shape} differs from the reference {ref.shape}"])
    bad = ~(np.abs(ref - cand) <= s.atol + s.rtol * np.abs(ref))  # NaN compares False: it counts as bad
    is_task = spec.task.kind == "classification" and spec.task.output == name
    agree = fidelity(ref, cand, classification=is_task)
    check = OutputCheck(name, metrics.max_abs_error(ref, cand), metrics.max_rel_error(ref, cand),
                        float(bad.mean()), agree["cosine"], agree.get("top1_agreement"))
    for side, values in (("exported model", cand), ("reference model", ref)):
        if count := metrics.non_finite_count(values):
            check.failures.append(f"the {side} outputs {count} NaN/inf value(s)")
    if bad.any():
        check.failures.append(f"{int(bad.sum())}/{bad.size} elements beyond atol={s.atol:g}+rtol={s.rtol:g}*|ref| "
                              f"(max abs error {check.max_abs_error:.3g}, max rel error {check.max_rel_error:.3g})")
    if not check.cosine >= s.min_cosine:  # NaN fails too
        check.failures.append(f"mean cosine {check.cosine:.6f} < {s.min_cosine}")
    if check.top1_agreement is not None and check.top1_agreement < s.min_top1_agreement:
        check.failures.append(f"top-1 agreement {check.top1_agreement:.4f} < {s.min_top1_agreement}")
    return check


def validate(reference: LoadedModel, candidate: LoadedModel, settings: ValidationSettings,
             threads: int | None = None) -> ValidationReport:
    """Run both on the same inputs (each on its default backend); the report says which output fails and by how much."""
    return compare(reference.spec, load_session(reference, threads=threads), load_session(candidate, threads=threads),
                   settings)
