"""The paper's SGD rule, with the learning rate inside the velocity.

    v <- momentum * v - weight_decay * lr * w - lr * grad
    w <- w + v

`torch.optim.SGD` keeps `v <- momentum * v + grad + weight_decay * w` and
steps `w <- w - lr * v`: the same while lr is constant, different right after
every learning-rate change (torch rescales the whole accumulated velocity by
the new rate at once; the paper lets the old velocity decay at the old rate).
The paper divides the rate by 10 three times, so the difference is real.

Biases are not decayed by default, as in Krizhevsky's cuda-convnet layer
definitions, where weight decay (`wc`) is a property of a layer's weights
only; decaying the biases that the paper starts at 1 would only pull them
back towards 0. `decay_biases=True` decays every parameter.

`make_optimizer` gives the config's: this rule, or torch's AdamW (the `smoke`
preset's), whose decay spares the same parameters (biases, and BatchNorm's
scales and shifts: every parameter of one dimension).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer

from training.config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> Optimizer:
    """The config's optimizer over `model`'s parameters."""
    if config.optimizer == "sgd":
        return PaperSGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            decay_biases=config.decay_biases,
        )
    groups = [{"params": []}, {"params": [], "weight_decay": 0.0}]  # decayed, spared
    for p in model.parameters():
        groups[0 if config.decay_biases or p.ndim > 1 else 1]["params"].append(p)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


class PaperSGD(Optimizer):
    """SGD with momentum and weight decay, exactly as the AlexNet paper writes it."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        decay_biases: bool = False,
    ) -> None:
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                "need lr >= 0, 0 <= momentum < 1, weight_decay >= 0; "
                f"got lr={lr}, momentum={momentum}, weight_decay={weight_decay}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "decay_biases": decay_biases,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            velocity = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocity.append(state["velocity"])
            grads = [p.grad for p in params]
            torch._foreach_mul_(velocity, m)  # v <- m v
            decayed = [
                (v, p)
                for v, p in zip(velocity, params, strict=True)
                if group["decay_biases"] or p.ndim > 1
            ]
            if wd and decayed:
                vs, ps = zip(*decayed, strict=True)
                torch._foreach_add_(list(vs), list(ps), alpha=-wd * lr)  # - wd lr w
            torch._foreach_add_(velocity, grads, alpha=-lr)  # - lr grad
            torch._foreach_add_(params, velocity)  # w <- w + v
        return loss
