"""The learning-rate schedule: the paper's plateau rule, fixed milestones, or a cosine.

The paper divides the rate by 10 when the validation error stops improving,
three times. `Plateau` is torch's ReduceLROnPlateau (an epoch improves when its
error is below the best by more than `threshold` of it, relative) plus what
torch cannot say: after `max_drops` drops, the next plateau ends training.
`Milestones` divides after listed epochs; `Cosine` lowers the rate every epoch
along half a cosine (the `smoke` preset's). Each changes the optimizer's rate
itself and answers each epoch 'keep', 'drop' or 'stop'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from training.config import TrainConfig


class Plateau:
    """Divide the rate when validation error stops improving; stop after the last drop.

    An epoch improves when its error is below the best so far by more than
    `threshold` of the best (relative: 0.01 = 1%); `patience` epochs in a row
    without one divide the rate by 1/`factor` (torch counts the epochs after
    the first bad one, hence its `patience - 1`). After `max_drops` drops, the
    next plateau ends training and leaves the rate as it was.
    """

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        patience: int,
        threshold: float,
        max_drops: int,
        factor: float = 0.1,
    ) -> None:
        self.opt, self.max_drops, self.drops = opt, max_drops, 0
        self.lowest = math.inf  # the lowest error seen (best.pt), improvement or not
        self.rule = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, "min", factor, patience - 1, threshold, "rel", eps=0.0
        )

    @property
    def best(self) -> float:
        return self.rule.best

    def step(self, error: float) -> str:
        """'keep', 'drop' (the rate was divided) or 'stop'."""
        self.lowest = min(self.lowest, error)
        rates = [g["lr"] for g in self.opt.param_groups]
        self.rule.step(error)
        if [g["lr"] for g in self.opt.param_groups] == rates:
            return "keep"
        if self.drops >= self.max_drops:
            for g, lr in zip(self.opt.param_groups, rates, strict=True):
                g["lr"] = lr
            return "stop"
        self.drops += 1
        return "drop"

    def state_dict(self) -> dict:
        state = {"best": self.rule.best, "bad_epochs": self.rule.num_bad_epochs}
        return {**state, "drops": self.drops, "lowest": self.lowest}

    def load_state_dict(self, state: dict) -> None:
        self.rule.best, self.rule.num_bad_epochs = state["best"], state["bad_epochs"]
        self.drops, self.lowest = state["drops"], state.get("lowest", state["best"])


@dataclass
class Milestones:
    """A schedule you can predict: divide the rate after each epoch listed; never stop early.

    (torch's MultiStepLR does the same arithmetic but keeps its own epoch count and
    initial rates in the optimizer: these few lines resume from a checkpoint as they are.)
    """

    opt: torch.optim.Optimizer
    milestones: list[int]
    factor: float = 0.1
    epochs: int = 0  # epochs stepped so far
    drops: int = 0
    lowest: float = math.inf  # the lowest error seen (best.pt)

    def step(self, error: float) -> str:
        self.epochs += 1
        self.lowest = min(self.lowest, error)
        if self.epochs in self.milestones:
            self.drops += 1
            for g in self.opt.param_groups:
                g["lr"] *= self.factor
            return "drop"
        return "keep"

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "drops": self.drops, "lowest": self.lowest}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.drops, self.lowest = state["epochs"], state["drops"], state["lowest"]


@dataclass
class Cosine:
    """Epoch e (from 0) of `total` trains at lr (1 + cos(pi e / total)) / 2: the full rate
    first, then lower every epoch, near zero for the last; never stops early."""

    opt: torch.optim.Optimizer
    lr: float
    total: int
    epochs: int = 0  # epochs stepped so far
    lowest: float = math.inf  # the lowest error seen (best.pt)

    def step(self, error: float) -> str:
        self.epochs += 1
        self.lowest = min(self.lowest, error)
        for g in self.opt.param_groups:
            g["lr"] = self.lr * (1 + math.cos(math.pi * self.epochs / self.total)) / 2
        return "keep"

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "lowest": self.lowest}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.lowest = state["epochs"], state["lowest"]


Schedule = Plateau | Milestones | Cosine


def schedule(config: TrainConfig, opt: torch.optim.Optimizer) -> Schedule:
    """The config's learning-rate schedule over `opt`: fixed milestones if given, the
    cosine if asked, else the plateau rule."""
    if config.lr_milestones:
        return Milestones(opt, list(config.lr_milestones), config.lr_factor)
    if config.lr_schedule == "cosine":
        return Cosine(opt, config.lr, config.epochs)
    c = config
    return Plateau(opt, c.lr_patience, c.lr_threshold, c.max_lr_drops, c.lr_factor)
