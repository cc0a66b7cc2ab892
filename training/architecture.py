"""The network's settings and the paper's layer table, without torch (so that the CLI,
the config and `alexnet --help` never import it); training/model.py builds the layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shards.settings import check_fields, rule

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

    num_classes: int = rule(1000, minimum=2)
    width: float = rule(1.0, above=0)  # multiplies every layer's kernels and units (CPU runs)
    activation: str = rule("relu", choices=("relu", "tanh"))  # tanh: Figure 1's comparison
    # "paper": alpha as printed; "divided": alpha/n (torch, Caffe, cuda-convnet2); "none"
    lrn: str = rule("paper", choices=("paper", "divided", "none"))
    lrn_size: int = rule(5, minimum=1)
    lrn_alpha: float = rule(1e-4, minimum=0)
    lrn_beta: float = 0.75
    lrn_k: float = rule(2.0, minimum=0)
    # "batch": BatchNorm after every conv layer and fc6/fc7, before the activation (not the
    # paper's; what lets a small set learn in a few epochs: the `smoke` preset)
    norm: str = rule("none", choices=("none", "batch"))
    # Each image's own mean colour (per channel, over the crop) subtracted before conv1 (not
    # the paper's; what lets a set whose colours say nothing of the class learn at once)
    centre_images: bool = False
    # "overlapping": z=3, s=2; "non-overlapping": z=2, s=2
    pool: str = rule("overlapping", choices=("overlapping", "non-overlapping"))
    dropout: float = rule(0.5, minimum=0, below=1)
    # the paper's depth ablation: without conv3, conv4 or conv5
    remove_conv: str | None = rule(None, choices=("conv3", "conv4", "conv5"))
    columns: int = rule(2, choices=(1, 2))  # GroupedAlexNet only: 1 = one column, no groups
    input_size: int = rule(
        227, choices=tuple(CONV1_PADDING)
    )  # 224: conv1 padded by 2 (same 55x55 map)

    def __post_init__(self) -> None:
        check_fields(self, "model.")
        if self.lrn_size % 2 != 1:
            raise ValueError(
                f"lrn_size must be odd (the window is i-n/2..i+n/2), got {self.lrn_size}"
            )

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
