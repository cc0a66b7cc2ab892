"""The network's settings and the paper's layer table, without torch (so that the CLI,
the config and `alexnet --help` never import it); training/model.py builds the layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shards.settings import check_types

INPUT_SIZE = 227
CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# Per column at width 1: kernels, size, stride, padding; whether it sees both columns.
CONV_SPEC = {
    "conv1": (48, 11, 4, 0, False),
    "conv2": (128, 5, 1, 2, False),
    "conv3": (192, 3, 1, 1, True),
    "conv4": (192, 3, 1, 1, False),
    "conv5": (128, 3, 1, 1, False),
}
FC_WIDTH = 2048  # per column
# conv1's padding for each input size: both give 55x55 maps ((224 + 4 - 11) // 4 + 1 = 55)
CONV1_PADDING = {227: 0, 224: 2}


@dataclass(frozen=True)
class AlexNetConfig:
    """Every setting of the network; stored in checkpoints so the model can be rebuilt."""

    num_classes: int = 1000
    width: float = 1.0  # multiplies every layer's kernels and units (small CPU runs)
    activation: str = "relu"  # or "tanh" (Figure 1's comparison)
    # "paper": alpha as printed; "divided": alpha/n (torch, Caffe, cuda-convnet2); "none"
    lrn: str = "paper"
    lrn_size: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_k: float = 2.0
    pool: str = "overlapping"  # z=3, s=2; "non-overlapping": z=2, s=2
    dropout: float = 0.5
    remove_conv: str | None = None  # "conv3", "conv4" or "conv5": the paper's depth ablation
    columns: int = 2  # GroupedAlexNet only: 1 = a plain one-column net (no groups)
    input_size: int = 227  # or 224, with conv1 padded by 2 (the same 55x55 map)

    def __post_init__(self) -> None:
        check_types(self, "model.")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, got {self.activation!r}")
        if self.lrn not in ("paper", "divided", "none"):
            raise ValueError(f"lrn must be paper, divided or none, got {self.lrn!r}")
        if self.lrn_size % 2 != 1:
            raise ValueError(
                f"lrn_size must be odd (the window is i-n/2..i+n/2), got {self.lrn_size}"
            )
        if self.pool not in ("overlapping", "non-overlapping"):
            raise ValueError(f"pool must be overlapping or non-overlapping, got {self.pool!r}")
        if self.remove_conv not in (None, "conv3", "conv4", "conv5"):
            raise ValueError(f"remove_conv must be conv3, conv4 or conv5, got {self.remove_conv!r}")
        if self.columns not in (1, 2) or self.num_classes < 2 or self.width <= 0:
            raise ValueError("columns must be 1 or 2, num_classes >= 2 and width > 0")
        if self.input_size not in CONV1_PADDING:
            raise ValueError(f"input_size must be 227 or 224, got {self.input_size}")
        if self.lrn_size < 1 or self.lrn_alpha < 0 or self.lrn_k < 0 or not 0 <= self.dropout < 1:
            raise ValueError("need lrn_size >= 1, lrn_alpha >= 0, lrn_k >= 0, 0 <= dropout < 1")

    def channels(self, layer: str) -> int:
        """Kernels per column of a conv layer, or units per column of fc6/fc7."""
        base = FC_WIDTH if layer in ("fc6", "fc7") else CONV_SPEC[layer][0]
        return max(1, round(base * self.width))

    @property
    def convs(self) -> tuple[str, ...]:
        return tuple(c for c in CONVS if c != self.remove_conv)

    def class_split(self) -> tuple[int, int]:
        """How many of the classes each column's half of fc8 produces."""
        first = (self.num_classes + 1) // 2
        return first, self.num_classes - first

    def to_dict(self) -> dict:
        return asdict(self)
