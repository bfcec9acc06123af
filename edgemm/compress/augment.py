"""Input augmentation for distillation: the student learns the teacher's function on inputs the
training split does not hold exactly.

Distillation needs no labels, so each epoch can show teacher and student new views of the same
samples: with a few hundred real images that is what lets a pruned CNN tower relearn its teacher's
embedding instead of memorising the split. Both models see the *same* augmented batch, so the
targets stay exact. Only image inputs are transformed (random resized crop + horizontal flip, one
vectorised ``grid_sample``); other modalities pass unchanged.

Modality dropout blanks whole towers in some samples: the contract's empty value (zeros, all pad ids)
in every input of that tower, as a dead sensor or a missing caption would arrive. The teacher's answer
on the rest is the target, so a student whose pruned image tower got weaker cannot lean on the
caption instead: that shift passes an English val gate and fails on captions in another language.
"""
from __future__ import annotations

import math

from edgemm.lazy import lazy_import
from edgemm.spec import ModelSpec

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

MIN_AREA = 0.6  # smallest crop, as a share of the image: small enough to vary, large enough to keep the object


def augment_images(images: "torch.Tensor", generator: "torch.Generator | None" = None,
                   min_area: float = MIN_AREA) -> "torch.Tensor":
    """A square random crop of each image (``min_area``..1 of its area, anywhere inside it), flipped
    left-right with probability 1/2, resized back to the input size (bilinear). Without a generator
    the draws come from torch's global RNG, which training checkpoints and restores on resume."""
    n = images.shape[0]
    scale = torch.empty(n).uniform_(math.sqrt(min_area), 1.0, generator=generator)
    shift_x = (torch.rand(n, generator=generator) * 2 - 1) * (1 - scale)
    shift_y = (torch.rand(n, generator=generator) * 2 - 1) * (1 - scale)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = scale * flip, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale, shift_y
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_inputs(spec: ModelSpec, inputs: list["torch.Tensor"],
                   generator: "torch.Generator | None" = None) -> list["torch.Tensor"]:
    """The model's inputs (in ``spec.input_names`` order) with each 4-D image input augmented."""
    return [augment_images(tensor, generator) if spec.input(name).modality == "image" and tensor.dim() == 4
            and tensor.is_floating_point() else tensor
            for name, tensor in zip(spec.input_names, inputs)]


def drop_modalities(spec: ModelSpec, inputs: list["torch.Tensor"], rates: dict[str, float],
                    generator: "torch.Generator | None" = None) -> list["torch.Tensor"]:
    """The model's inputs with each tower in ``rates`` blanked in a random share of the samples (one draw
    per sample and tower, shared by the tower's inputs: ids and mask vanish together). Blank is the
    contract's empty value: the pad id of token inputs, zeros elsewhere."""
    unknown = sorted(set(rates) - set(spec.towers))
    if unknown:
        raise ValueError(f"modality_dropout names {unknown}: not a tower of model {spec.name!r} ({sorted(spec.towers)})")
    out = list(inputs)
    batch = inputs[0].shape[0]
    for tower, rate in sorted(rates.items()):
        if rate <= 0:
            continue
        dropped = torch.rand(batch, generator=generator) < rate
        for i, name in enumerate(spec.input_names):
            spec_input = spec.input(name)
            if spec_input.tower_name != tower:
                continue
            tensor = out[i]
            empty = torch.full_like(tensor, spec_input.empty_value)
            where = dropped.view(-1, *([1] * (tensor.dim() - 1))).to(tensor.device)
            out[i] = torch.where(where, empty, tensor)
    return out
