"""A tiny regression task for testing the shared training loop: learn y = W x + b from noisy pairs."""

from __future__ import annotations

import torch


class ToyRegression(torch.utils.data.Dataset):
    """64 pairs (x, y) with y = x @ W_true.T + b_true + noise; fixed by a generator seed."""

    def __init__(self, size: int = 64, poison_step: int | None = None):
        generator = torch.Generator().manual_seed(1234)
        self.true_weight = torch.randn(3, 4, generator=generator)
        self.x = torch.randn(size, 4, generator=generator)
        self.y = self.x @ self.true_weight.T + 0.5 + 0.01 * torch.randn(size, 3, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index]}


class ToyTask:
    """TrainTask for the toy regression; `nan_at_step` makes the loss NaN from that step on."""

    name = "toy"

    def __init__(self, nan_at_step: int | None = None):
        self.nan_at_step = nan_at_step

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

    def build_dataset(self) -> torch.utils.data.Dataset:
        return ToyRegression()

    def training_loss(self, model, batch, step):
        # dropout-like noise drawn from torch's RNG, so exact resume also needs the RNG state restored
        noise = 0.01 * torch.randn_like(batch["x"])
        loss = torch.nn.functional.mse_loss(model(batch["x"] + noise), batch["y"])
        if self.nan_at_step is not None and step >= self.nan_at_step:
            loss = loss * float("nan")
        return loss, {"mse": loss.item()}

    def preview(self, model, batch):
        return torch.rand(3, 8, 8)

    def artifact(self, model):
        return {"outputs": 3}
