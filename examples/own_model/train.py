"""Stand-in for your own training code: train the example model, save its state_dict as safetensors.

    python -m examples.own_model.train mydata own.safetensors
"""
import sys

import torch
from safetensors.torch import save_file

from edgemm.data.datasets import load_split
from examples.own_model.model import build


def main(data: str, out: str, epochs: int = 8) -> None:
    model, spec = build()
    train = load_split(data, "train", spec)  # the folder, read as the contract's preprocess says
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(epochs):
        for inputs, labels in train.take(torch.randperm(len(train)).numpy()).batches(16):
            loss = torch.nn.functional.cross_entropy(model(**{k: torch.from_numpy(v) for k, v in inputs.items()}),
                                                     torch.from_numpy(labels))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
