"""The learning-rate schedule: the paper's plateau rule, or fixed milestones.

The paper divides the rate by 10 when the validation error stops improving, three
times. `Plateau` says when: an epoch improves when its error is below the best by
more than `threshold` of it (relative); `patience` epochs in a row without one
divide the rate; after `max_drops` drops the next plateau ends training (which
torch's ReduceLROnPlateau cannot say). `Milestones` divides after listed epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from training.config import TrainConfig


@dataclass
class Plateau:
    """Divide the rate when validation error stops improving; stop after the last drop.

    An epoch improves when its error is below the best so far by more than
    `threshold` of the best (relative: 0.01 = 1%); `patience` epochs in a row
    without one divide the rate. After `max_drops` drops, the next plateau ends
    training.
    """

    patience: int
    threshold: float
    max_drops: int
    best: float = math.inf
    bad_epochs: int = 0
    drops: int = 0

    lowest: float = math.inf  # the lowest error seen (best.pt), improvement or not

    def step(self, error: float) -> str:
        """'keep', 'drop' (divide the rate now) or 'stop'."""
        self.lowest = min(self.lowest, error)
        if error < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = error, 0
            return "keep"
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return "keep"
        if self.drops >= self.max_drops:
            return "stop"
        self.drops, self.bad_epochs = self.drops + 1, 0
        return "drop"

    def state_dict(self) -> dict:
        state = {"best": self.best, "bad_epochs": self.bad_epochs, "drops": self.drops}
        return {**state, "lowest": self.lowest}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs, self.drops = state["best"], state["bad_epochs"], state["drops"]
        self.lowest = state.get("lowest", self.best)


@dataclass
class Milestones:
    """A schedule you can predict: divide the rate after each epoch listed; never stop early."""

    milestones: list[int]
    epochs: int = 0  # epochs stepped so far
    drops: int = 0
    lowest: float = math.inf  # the lowest error seen (best.pt)

    def step(self, error: float) -> str:
        self.epochs += 1
        self.lowest = min(self.lowest, error)
        if self.epochs in self.milestones:
            self.drops += 1
            return "drop"
        return "keep"

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "drops": self.drops, "lowest": self.lowest}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.drops, self.lowest = state["epochs"], state["drops"], state["lowest"]


def schedule(config: TrainConfig) -> Plateau | Milestones:
    """The config's learning-rate schedule: fixed milestones if given, else the plateau rule."""
    if config.lr_milestones:
        return Milestones(list(config.lr_milestones))
    return Plateau(config.lr_patience, config.lr_threshold, config.max_lr_drops)
