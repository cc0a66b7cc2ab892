"""AlexNet as the paper builds it: two columns, one per GPU.

Column i (its parameters and activations on `devices[i]`):

    input 3x227x227 ─ conv1 11x11/4, 48 ─ ReLU ─ LRN ─ maxpool 3/2   # (B, 48, 55, 55) -> 27
                     conv2 5x5/1 p2, 128 ─ ReLU ─ LRN ─ maxpool 3/2   # own column only -> 13
                     conv3 3x3 p1, 192 ─ ReLU                          # sees BOTH columns
                     conv4 3x3 p1, 192 ─ ReLU                          # own column only
                     conv5 3x3 p1, 128 ─ ReLU ─ maxpool 3/2            # own column only -> 6
                     fc6 2048 ─ ReLU ─ dropout                         # sees both (9216 inputs)
                     fc7 2048 ─ ReLU ─ dropout                         # sees both (4096 inputs)
                     fc8 half of the classes                           # sees both; halves joined

The columns exchange activations only at conv3, fc6, fc7 and fc8 (plus the
input, which both need). With 1000 classes: 60,965,224 parameters.

`GroupedAlexNet` is the same function on one device (groups=2 in conv2,
conv4, conv5, LRN within each group); `to_grouped` converts a two-column state
dict to it losslessly (every layer is the two columns' tensors concatenated
along the output dimension).

`norm="batch"` (the `smoke` preset, not the paper) puts BatchNorm between every
conv layer and fc6/fc7 and their ReLU; per channel, so each column's is its half
of the grouped net's.

Input is 227x227 by default: the paper's "224" cannot give its own 55x55 conv1
output with stride 4 and no padding; 227 is what cuda-convnet and Caffe used.
`input_size=224` takes the paper's text (or torchvision) at its word: conv1
gets a padding of 2, which gives the same 55x55 map, and every later layer
and the parameter count stay the same.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from training.architecture import CONV1_PADDING, CONV_SPEC, INPUT_SIZE, AlexNetConfig

_LRN_AFTER = ("conv1", "conv2")
# The paper: biases 1 in conv2, conv4, conv5, fc6, fc7 ("to feed the ReLUs positive inputs").
_BIAS_ONE = {"conv2", "conv4", "conv5", "fc6", "fc7"}


def local_response_norm(
    x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> torch.Tensor:
    """The paper's LRN across channels (dim 1), alpha NOT divided by n:

        b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2) ^ beta

    (torch.nn.LocalResponseNorm, Caffe and cuda-convnet2 divide alpha by n; pass
    alpha / size for theirs.)
    """
    if size % 2 != 1:
        raise ValueError(f"size must be odd, got {size}")
    sq = x.square().unsqueeze(1)  # (B, 1, C, H, W)
    # Zero padding over channels = the sum's limits at the edges.
    window_sum = (
        F.avg_pool3d(F.pad(sq, (0, 0, 0, 0, size // 2, size // 2)), (size, 1, 1), stride=1).squeeze(
            1
        )
        * size
    )
    return x / (k + alpha * window_sum).pow(beta)


class LRN(nn.Module):
    """`local_response_norm` within groups of channels (one group per column)."""

    def __init__(self, config: AlexNetConfig, groups: int = 1) -> None:
        super().__init__()
        c = config
        self.size, self.beta, self.k, self.groups = c.lrn_size, c.lrn_beta, c.lrn_k, groups
        self.alpha = c.lrn_alpha / c.lrn_size if c.lrn == "divided" else c.lrn_alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(self.groups, dim=1) if self.groups > 1 else (x,)
        out = [local_response_norm(p, self.size, self.alpha, self.beta, self.k) for p in parts]
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def extra_repr(self) -> str:
        s = self
        return f"size={s.size}, alpha={s.alpha:g}, beta={s.beta}, k={s.k}, groups={s.groups}"


def _activation(config: AlexNetConfig) -> nn.Module:
    return nn.ReLU(inplace=True) if config.activation == "relu" else nn.Tanh()


def _pool(config: AlexNetConfig) -> nn.Module:
    return nn.MaxPool2d(3, 2) if config.pool == "overlapping" else nn.MaxPool2d(2, 2)


def _conv_block(
    config: AlexNetConfig, name: str, in_ch: int, out_ch: int, groups: int, lrn_groups: int
) -> nn.Sequential:
    """conv [─ BatchNorm] ─ act [─ LRN] [─ pool], as the table says for layer `name`."""
    _, size, stride, pad, _ = CONV_SPEC[name]
    if name == "conv1":
        pad = CONV1_PADDING[config.input_size]
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, size, stride, pad, groups=groups)]
    if config.norm == "batch":  # per channel: the same in a column as in the grouped net
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(_activation(config))
    if name in _LRN_AFTER and config.lrn != "none":
        layers.append(LRN(config, groups=lrn_groups))
    if _pools_after(config, name):
        layers.append(_pool(config))
    return nn.Sequential(*layers)


def _pools_after(config: AlexNetConfig, name: str) -> bool:
    """Max-pooling follows conv1, conv2 and the last conv layer (conv5, unless removed)."""
    return name in ("conv1", "conv2") or name == config.convs[-1]


def _conv_inputs(config: AlexNetConfig) -> dict[str, tuple[int, bool]]:
    """Per conv layer: input channels per column and whether it sees both columns."""
    out, prev = {}, None
    for name in config.convs:
        sees_both = CONV_SPEC[name][4]
        if prev is None:
            out[name] = (3, False)
        else:
            per_col = config.channels(prev)
            out[name] = (2 * per_col if sees_both else per_col, sees_both)
        prev = name
    return out


def _fc6_inputs(config: AlexNetConfig) -> int:
    """Inputs of fc6 from both columns: 2 x last conv's kernels x 6 x 6."""
    return 2 * config.channels(config.convs[-1]) * 6 * 6


def _init(module: nn.Module, name: str) -> None:
    """The paper: weights ~ N(0, 0.01²); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0."""
    nn.init.normal_(module.weight, 0.0, 0.01)
    nn.init.constant_(module.bias, 1.0 if name in _BIAS_ONE else 0.0)


def _init_layers(module: nn.Module) -> None:
    """The paper's init of each conv and fc layer among `module`'s children (a column, or a
    one-device net); BatchNorm keeps torch's."""
    for name, child in module.named_children():
        if name.startswith("conv"):
            _init(child[0], name)
        elif name in ("fc6", "fc7", "fc8"):
            _init(child, name)


class Column(nn.Module):
    """One column's layers (a GPU's half of the network)."""

    def __init__(self, config: AlexNetConfig, n_classes: int) -> None:
        super().__init__()
        for name, (in_ch, _) in _conv_inputs(config).items():
            out_ch = config.channels(name)
            self.add_module(name, _conv_block(config, name, in_ch, out_ch, groups=1, lrn_groups=1))
        fc = config.channels("fc6")
        self.fc6 = nn.Linear(_fc6_inputs(config), fc)
        self.fc7 = nn.Linear(2 * fc, fc)
        self.fc8 = nn.Linear(2 * fc, n_classes)
        _add_fc_norms(self, config, fc)
        self.act = _activation(config)
        self.drop = nn.Dropout(config.dropout)


class _FcBatchNorm(nn.BatchNorm1d):
    """BatchNorm over fc units. A training batch of one image (a loader worker's last may
    be) has no spread to normalise by: it is normalised by the running statistics, as at
    evaluation, so every replica still takes the step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, eps=self.eps
            )
        return super().forward(x)


def _add_fc_norms(module: nn.Module, config: AlexNetConfig, units: int) -> None:
    """fc6_norm and fc7_norm: BatchNorm over `units` outputs, or nothing (no parameters,
    so a net without them keeps the state dict it always had)."""
    for name in ("fc6_norm", "fc7_norm"):
        norm = _FcBatchNorm(units) if config.norm == "batch" else nn.Identity()
        module.add_module(name, norm)


def default_devices(
    local_rank: int | None = None, local_world: int | None = None, n_gpus: int | None = None
) -> list[torch.device]:
    """The two columns' devices for replica `local_rank` of `local_world` on this machine.

    Defaults: $LOCAL_RANK and $LOCAL_WORLD_SIZE (torchrun sets them), else 0 and 1;
    `n_gpus`: the GPUs torch sees. With two GPUs per replica, replica r gets GPUs
    2r and 2r+1 (one column on each, as in the paper); with one, GPU r for both
    columns; with fewer GPUs than replicas, the CPU.
    """
    r = int(os.environ.get("LOCAL_RANK", 0)) if local_rank is None else local_rank
    w = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if local_world is None else local_world
    n = torch.cuda.device_count() if n_gpus is None else n_gpus
    if n >= 2 * w:
        return [torch.device("cuda", 2 * r), torch.device("cuda", 2 * r + 1)]
    if n >= w:
        return [torch.device("cuda", r)] * 2
    return [torch.device("cpu")] * 2


class AlexNet(nn.Module):
    """The two-column, model-parallel AlexNet. Logits come back on `devices[0]`.

    Dropout is inverted (scaled by 1/(1-p) at training time), which is the
    paper's "multiply the outputs by 0.5 at test time" moved to training.
    """

    def __init__(
        self,
        config: AlexNetConfig | None = None,
        devices: Sequence[str | torch.device] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or AlexNetConfig()
        if self.config.columns != 2:
            raise ValueError(
                "AlexNet is the two-column net; the paper's one-GPU net is OneGpuAlexNet "
                "(`build(config)` picks by `columns`)"
            )
        self.devices = (
            [torch.device(d) for d in devices] if devices is not None else default_devices()
        )
        if len(self.devices) != 2:
            raise ValueError(f"need one device per column, got {self.devices}")
        self.columns = nn.ModuleList(Column(self.config, n) for n in self.config.class_split())
        for column, device in zip(self.columns, self.devices, strict=True):
            column.to(device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for column in self.columns:
            _init_layers(column)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, fc7): fc7 is the last hidden layer, (B, 4096), both columns, on devices[0]."""
        d0, d1 = self.devices
        c0, c1 = self.columns
        x = _centred(self.config, x)
        h = [x.to(d0, non_blocking=True), x.to(d1, non_blocking=True)]  # both columns see the image
        for name in self.config.convs:
            if CONV_SPEC[name][4]:  # conv3: each column sees both columns' maps
                h = [_join(h, d0), _join(h, d1)]
            h = [getattr(c0, name)(h[0]), getattr(c1, name)(h[1])]  # (B, 48|128|192, S, S) each
        h = [t.flatten(1) for t in h]  # (B, 128*6*6) each
        for layer in ("fc6", "fc7"):
            joined = [_join(h, d0), _join(h, d1)]  # each column sees both: (B, 9216|4096)
            h = [_fc(c, layer, j) for c, j in zip((c0, c1), joined, strict=True)]
        fc7 = _join(h, d0)
        logits = [c0.fc8(fc7), c1.fc8(_join(h, d1))]  # each column: half of the classes
        return torch.cat([logits[0], logits[1].to(d0)], 1), fc7


def _centred(config: AlexNetConfig, x: torch.Tensor) -> torch.Tensor:
    """The input, less each image's mean colour when `centre_images` (a constant shift of an
    image's colour, PCA lighting's included, then changes nothing)."""
    return x - x.mean((2, 3), keepdim=True) if config.centre_images else x


def _fc(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """fc6 or fc7 of a column or a one-device net: linear [─ BatchNorm] ─ act ─ dropout."""
    norm = getattr(module, f"{layer}_norm")
    return module.drop(module.act(norm(getattr(module, layer)(x))))


def _join(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.cat([p.to(device) for p in parts], 1)


class _OneDevice(nn.Module):
    """Conv blocks, then fc6-fc8, on one device: what GroupedAlexNet and OneGpuAlexNet share."""

    config: AlexNetConfig

    def _add_classifier(
        self, fc6_inputs: int, num_classes: int, device: str | torch.device
    ) -> None:
        """fc6-fc8 (fc6 reading `fc6_inputs`), the paper's init of every layer, `device`."""
        c = self.config
        fc = 2 * c.channels("fc6")
        self.fc6 = nn.Linear(fc6_inputs, fc)
        self.fc7 = nn.Linear(fc, fc)
        self.fc8 = nn.Linear(fc, num_classes)
        _add_fc_norms(self, c, fc)
        self.act = _activation(c)
        self.drop = nn.Dropout(c.dropout)
        _init_layers(self)
        self.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, fc7), as AlexNet.forward_features."""
        x = _centred(self.config, x.to(self.fc6.weight.device, non_blocking=True))
        for name in self.config.convs:
            x = getattr(self, name)(x)
        x = x.flatten(1)
        x = _fc(self, "fc7", _fc(self, "fc6", x))
        return self.fc8(x), x


class GroupedAlexNet(_OneDevice):
    """The same function on one device: groups=2 in conv2, conv4, conv5; LRN per group.

    With `columns=1` it is a plain one-column AlexNet with the same layer sizes
    and no groups (the benchmark's baseline): not the paper's one-GPU net, which
    is `OneGpuAlexNet`.
    """

    def __init__(
        self, config: AlexNetConfig | None = None, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__()
        self.config = c = config or AlexNetConfig()
        first = c.convs[0]
        for name, (in_per_column, sees_both) in _conv_inputs(c).items():
            in_ch = 3 if name == first else in_per_column * (1 if sees_both else 2)
            groups = 1 if (name == first or sees_both) else c.columns
            block = _conv_block(c, name, in_ch, 2 * c.channels(name), groups, lrn_groups=c.columns)
            self.add_module(name, block)
        self._add_classifier(_fc6_inputs(c), c.num_classes, device)


class OneGpuAlexNet(_OneDevice):
    """The paper's one-GPU net (`columns=1`): the comparison of its Section 4.

    One column, no groups: conv1-conv4 have one column's kernels (48, 128, 192,
    192), while the last convolutional layer (256 kernels) and the fully-connected
    layers (4096, 4096) keep the two-column net's full size. As the paper's
    footnote says, most parameters are in fc6, which reads the last conv layer,
    so the two nets have about the same number: 59,798,312 against 60,965,224
    for 1000 classes. `width` scales every layer of it, as for the two-column net.
    """

    def __init__(
        self,
        config: AlexNetConfig | None = None,
        devices: Sequence[str | torch.device] | None = None,
    ) -> None:
        super().__init__()
        self.config = c = dataclasses.replace(config or AlexNetConfig(), columns=1)
        device = torch.device((devices or default_devices())[0])
        self.devices = [device, device]  # as AlexNet's, for the training loop
        in_ch, last = 3, c.convs[-1]
        for name in c.convs:
            out_ch = c.channels(name) * (2 if name == last else 1)
            self.add_module(name, _conv_block(c, name, in_ch, out_ch, groups=1, lrn_groups=1))
            in_ch = out_ch
        self._add_classifier(in_ch * 6 * 6, c.num_classes, device)


def build(
    config: AlexNetConfig, devices: Sequence[str | torch.device] | None = None
) -> AlexNet | OneGpuAlexNet:
    """The net a training config describes: the two-column net, or (columns=1) the one-GPU net."""
    if config.columns == 1:
        return OneGpuAlexNet(config, devices)
    return AlexNet(config, devices)


def to_grouped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two-column state dict -> GroupedAlexNet state dict (on the CPU): every tensor of a
    column (weights, biases, BatchNorm's statistics) is the two columns' joined along the
    output dimension; a count (BatchNorm's batches seen) is the first column's."""
    out = {}
    for name in state:
        if name.startswith("columns.0."):
            key = name.removeprefix("columns.0.")
            parts = [state[f"columns.{i}.{key}"].cpu() for i in (0, 1)]
            out[key] = torch.cat(parts, 0) if parts[0].ndim else parts[0]
    return out


def flops_per_image(config: AlexNetConfig) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass; a training step is about 3x."""
    total, size = 0, INPUT_SIZE
    inputs = _conv_inputs(config)
    for name in config.convs:
        _, k, stride, pad, _ = CONV_SPEC[name]
        size = (size + 2 * pad - k) // stride + 1
        in_ch, sees_both = inputs[name]
        if config.columns == 1 and name != config.convs[0] and not sees_both:
            in_ch *= 2  # one column: no groups, every kernel sees all maps
        total += 2 * 2 * config.channels(name) * in_ch * k * k * size * size
        if _pools_after(config, name):
            z, s = (3, 2) if config.pool == "overlapping" else (2, 2)
            size = (size - z) // s + 1
    fc = config.channels("fc6")
    total += (
        2 * 2 * fc * _fc6_inputs(config) + 2 * 2 * fc * 2 * fc + 2 * 2 * fc * config.num_classes
    )
    return total


def kaiming_init(model: nn.Module) -> None:
    """He-normal weights and zero biases (the `smoke` preset's init, `init=kaiming`)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def zero_fc8(model: nn.Module) -> None:
    """fc8's weights and biases at zero (`zero_fc8`): every class equally likely at first,
    the loss ln(classes), and no large random logits for the first steps to undo."""
    for name, m in model.named_modules():
        if name == "fc8" or name.endswith(".fc8"):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
