"""A recipe's gates: the budgets the compressed model must meet against the input model, and the check."""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from edgemm.bench.schema import BenchReport
from edgemm.config import Strict


class Gates(Strict):
    """Budgets the final model must meet, measured against the input model."""

    split: str = Field("val", description="split the gates are measured on (test stays for reporting)")
    max_accuracy_drop: float | None = Field(1.0, ge=0, description="absolute, in accuracy points (0-100)")
    max_relative_drop: float | None = Field(None, ge=0, le=1, description="fraction of the reference accuracy")
    min_speedup: float | None = Field(None, gt=0, description="batch-1 latency of ORT fp32 / compressed (ORT)")
    decision: Literal["observed", "confident"] = Field(
        "observed", description="observed: the drop measured on the gate split must be within budget; confident: "
        "the upper end of its 95 % interval must be (the split must show the loss is small, not only happen to "
        "measure it small). Stage gates read the observed drop either way")
    ablation: Literal["off", "warn", "gate"] = Field(
        "warn", description="score the gate split again with each tower's inputs blanked (models with two or more "
        "towers), input vs compressed: a tower that lost what another modality covers on this split shows there. "
        "warn: a warning; gate: the run fails; off: not scored. It reads the observed drop, whatever 'decision' says")

    @field_validator("ablation", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare off (no, false) as false

    def allowed_drop(self, reference: float) -> float:
        """Allowed accuracy drop as a fraction (0-1); the tighter of the two budgets."""
        limits = [x for x in (None if self.max_accuracy_drop is None else self.max_accuracy_drop / 100,
                              None if self.max_relative_drop is None else self.max_relative_drop * reference)
                  if x is not None]
        return min(limits) if limits else 1.0

    def resolution_warning(self, samples: int) -> str | None:
        """A budget smaller than two samples of the gate split: the gate would pass or fail on sampling noise.
        A relative budget is read at its largest (a reference accuracy of 100 %): it is never looser."""
        one_sample = 100 / samples
        budgets = {"gates.max_accuracy_drop": self.max_accuracy_drop,
                   "gates.max_relative_drop": None if self.max_relative_drop is None else 100 * self.max_relative_drop}
        key, points = min(((k, v) for k, v in budgets.items() if v is not None), key=lambda kv: kv[1],
                          default=(None, None))
        if points is None or points >= 2 * one_sample:
            return None
        two = math.ceil(20 * one_sample) / 10
        suggestion = (f"gates.max_accuracy_drop to at least {two:.1f}" if key == "gates.max_accuracy_drop" else
                      f"gates.max_relative_drop to at least {two / 100:.3f} divided by the model's accuracy")
        return (f"gates split {self.split!r} has {samples} samples: one sample is {one_sample:.2f} accuracy points, so "
                f"a budget of {points:.1f} points ({key}) lets {int(points / one_sample)} sample(s) change and the "
                f"gate passes or fails on noise. Give the split more rows, or set {suggestion} (two samples)")


BOOTSTRAP_RESAMPLES = 10_000


def paired_drop(reference_correct: np.ndarray, final_correct: np.ndarray) -> dict[str, Any]:
    """The accuracy drop between two models scored on the same samples, with what it rests on: how many
    samples got worse (right -> wrong) and better, and a 95 % percentile-bootstrap interval of the drop in
    points. Each sample's change is -1, 0 or +1, so a resample of the split is one multinomial draw of the
    three counts: exact and cheap for any split size. The draws add half a sample to each cell of the
    paired 2x2 table (Agresti and Min's adjustment), so a split on which nothing changed still says how
    large a loss it could have missed instead of [0, 0]."""
    ref, fin = np.asarray(reference_correct, bool), np.asarray(final_correct, bool)
    if ref.shape != fin.shape or ref.ndim != 1 or not len(ref):
        raise ValueError(f"paired scores need one flag per sample of one split (got {ref.shape} and {fin.shape})")
    n, worse, better = len(ref), int((ref & ~fin).sum()), int((~ref & fin).sum())
    p_worse, p_better = (worse + 0.5) / (n + 2), (better + 0.5) / (n + 2)
    draws = np.random.default_rng(0).multinomial(n, [p_worse, p_better, 1 - p_worse - p_better],
                                                 size=BOOTSTRAP_RESAMPLES)
    drops = 100 * (draws[:, 0] - draws[:, 1]) / n
    low, high = np.percentile(drops, [2.5, 97.5])
    return {"samples": n, "worse": worse, "better": better, "drop_points": 100 * (worse - better) / n,
            "drop_ci95_points": [float(low), float(high)]}


def accuracy_failures(g: Gates, reference: float, final: float, paired: dict[str, Any]) -> list[str]:
    """The accuracy gate: the observed drop within budget, and under ``decision: confident`` the upper end of
    its 95 % interval too (a 110-sample split that saw two samples get worse cannot rule out a 4-point loss)."""
    allowed, high = g.allowed_drop(reference), paired["drop_ci95_points"][1]
    if reference - final > allowed + 1e-9:
        return [f"{g.split} accuracy dropped {100 * (reference - final):.2f} points (allowed {100 * allowed:.2f})"]
    if g.decision == "confident" and high > 100 * allowed + 1e-9:
        return [f"{g.split} accuracy dropped {100 * (reference - final):.2f} points, but its 95 % interval reaches "
                f"{high:.2f} (allowed {100 * allowed:.2f}; {paired['worse']} of {paired['samples']} samples got "
                f"worse, {paired['better']} better): the split cannot show the loss is within budget. A larger gate "
                f"split narrows the interval; decision: observed gates on the measured drop alone"]
    return []


def ablation_findings(g: Gates, allowed: float, reference: dict[str, float], final: dict[str, float]) -> list[str]:
    """Towers whose absence costs the compressed model more than the input model, beyond the budget. Measured on
    the real model: with the caption blanked, a pruned + distilled image tower scored 19-20 points below the
    unpruned model while the val split with captions showed 0.9-1.8: the English caption carried what the image
    tower lost, and before this check only a split whose captions carried nothing (another language) saw it.
    The other cause, also measured: at 192 px, EfficientNet-Lite0's embedding of a blank (all-zero) image is
    another vector than at 224 px (cosine 0.0), and the head, trained on the 224 px one, lost 26 points."""
    return [f"with {tower} blanked, {g.split} accuracy fell {100 * (reference[tower] - acc):.1f} points "
            f"({100 * reference[tower]:.1f} → {100 * acc:.1f} %), beyond the {100 * allowed:.1f} the gate allows: "
            f"inputs where {tower} is missing or unhelpful will show it. Either the rest of the model lost what it "
            f"knew without {tower}, which {tower} covers on this split (prune the other towers less or distil them "
            f"longer), or {tower}'s own output for a blank input moved, as a resized or pruned {tower} does (distil "
            f"with distill.modality_dropout: {{{tower}: 0.3}} so the head learns the new one)"
            + ("" if g.ablation == "gate" else " (gates.ablation: gate makes this fail the run)")
            for tower, acc in sorted(final.items())
            if tower in reference and reference[tower] - acc > allowed + 1e-9]


def check_gates(g: Gates, reference_correct: np.ndarray, final_correct: np.ndarray, report: BenchReport,
                torch_id: str, ort_id: str, final_id: str, reference_blanked: dict[str, float] | None = None,
                final_blanked: dict[str, float] | None = None) -> dict[str, Any]:
    """Accuracy drop against the input model (the same gate-split samples, per sample) and batch-1 speed-up
    against its ORT fp32 export (rows by id)."""
    reference, final = float(np.mean(reference_correct)), float(np.mean(final_correct))
    paired = paired_drop(reference_correct, final_correct)
    allowed = g.allowed_drop(reference)
    batch = min(report.settings.batch_sizes)
    torch_b1, ort_b1, final_b1 = (report.result(i).at(batch).p50_ms for i in (torch_id, ort_id, final_id))
    speedup = ort_b1 / final_b1
    failures = accuracy_failures(g, reference, final, paired)
    if g.min_speedup and speedup < g.min_speedup:
        failures.append(f"batch-{batch} speed-up over ORT fp32 is {speedup:.2f}x (required {g.min_speedup}x)")
    ablation = ablation_findings(g, allowed, reference_blanked or {}, final_blanked or {})
    if g.ablation == "gate":
        failures += ablation
    return {"passed": not failures, "failures": failures, "split": g.split, "reference_accuracy": reference,
            "final_accuracy": final, "allowed_drop": allowed, "decision": g.decision, "paired": paired,
            "speedup_vs_ort_fp32": speedup,
            "speedup_vs_torch_eager": torch_b1 / final_b1, "batch_size": batch,
            "ablation": {t: {"reference": reference_blanked[t], "final": final_blanked[t]}
                         for t in (final_blanked or {}) if t in (reference_blanked or {})},
            "warnings": held_out_warnings(g, allowed, report.result(ort_id).accuracy, report.result(final_id).accuracy)
            + (ablation if g.ablation == "warn" else [])}


def held_out_warnings(g: Gates, allowed: float, reference: dict[str, float], final: dict[str, float]) -> list[str]:
    """Report splits (test, ood) that lost more than the gate's budget. They warn and do not fail: a held-out
    split that steered the run would stop being held out. A gate split unlike the one that lost is the cause
    (an English val split cannot see a Spanish ood split), and the fix is a gate split like it."""
    return [f"{split} accuracy fell {100 * (reference[split] - acc):.1f} points ({100 * reference[split]:.1f} → "
            f"{100 * acc:.1f} %), beyond the {100 * allowed:.1f} the gate allowed on {g.split!r}: the gate split does "
            f"not cover this one. Gate on a split like it (gates.split), or train less of the model (distill.freeze)"
            for split, acc in sorted(final.items())
            if split != g.split and split in reference and reference[split] - acc > allowed + 1e-9]
