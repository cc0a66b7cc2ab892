"""Training configuration: one typed dataclass, two presets, a TOML file, overrides.

Resolution order: preset (`paper` or `smoke`) -> `--config FILE.toml` -> `--set
key=value` overrides (`model.width=0.5`, `epochs=3`). The resolved config is
saved in the run folder and in every checkpoint, so evaluation needs nothing else.

`paper` is exactly the paper: batch 128, lr 0.01 divided by 10 when validation
error stops improving (5 epochs without a 1% relative improvement; at most
three times), momentum 0.9, weight decay 5e-4,
N(0, 0.01²) weights with biases of 1 where the paper says, the raw 0-255
mean-subtracted input, PCA lighting with sigma 0.1, 90 epochs at most.

`smoke` is for a CPU demo in minutes and for small sets of one's own: a net that
learns from its first epochs on a few thousand images, which the paper's
recipe does not (on real 10-class sets it sat at chance for all 10 epochs on
one of six). Width 0.25; BatchNorm after every conv layer and fc6/fc7, no LRN
and no dropout; each image's own mean colour subtracted (so no PCA lighting,
which only shifts that colour); Kaiming init with fc8 at zero; inputs scaled by
1/64 (about unit spread); AdamW (lr 5e-4, weight decay 0.05), batch 32, a
cosine schedule over 10 epochs. What each change bought, measured on six real
sets over three seeds, is in benchmarks/README.md (`real_images.py`): the paper's N(0, 0.01²)
init holds a net this narrow at chance, Kaiming's init with the raw 0-255
input diverges, without BatchNorm and AdamW a set of coloured, noisy digits
stays at chance, and without the centring it stays there for two epochs.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from shards.settings import check_fields, rule
from training.architecture import AlexNetConfig


@dataclass(frozen=True)
class TrainConfig:
    model: AlexNetConfig = field(default_factory=AlexNetConfig)
    epochs: int = rule(90, minimum=1)  # at most; training also stops after the last lr drop
    batch_size: int = rule(128, minimum=1)
    # Under torchrun: batch_size is the global batch, split across the replicas (the paper's
    # 128 stays 128, and so does the learning rate); false: batch_size per replica.
    global_batch: bool = True
    lr: float = rule(0.01, above=0)
    momentum: float = rule(0.9, minimum=0, below=1)
    weight_decay: float = rule(5e-4, minimum=0)
    decay_biases: bool = False
    lr_factor: float = rule(0.1, above=0, maximum=1)
    # The plateau rule, for the paper's "divided by 10 when the validation error stopped
    # improving with the current rate", at most three times:
    # - patience 5: a single epoch that fails to improve is noise on a curve measured to
    #   0.1-0.5% (50,000 images), not a plateau; 5 bad epochs in a row are.
    # - threshold 1% (relative): an epoch improves when its error is below 99% of the best,
    #   so a curve creeping down by less than 1% per epoch counts as flat.
    lr_patience: int = rule(5, minimum=1)  # epochs without an improvement, then divide
    lr_threshold: float = rule(0.01, minimum=0)  # an improvement beats the best by this much
    max_lr_drops: int = rule(3, minimum=0)  # the paper's three; the next plateau ends training
    # Instead of the plateau rule: divide the rate after each of these epochs and run all
    # `epochs` (e.g. [30, 60, 80]: a schedule known in advance).
    lr_milestones: list[int] | None = None
    # "cosine": epoch e (from 0) trains at lr * (1 + cos(pi e / epochs)) / 2, all epochs
    # (lr_milestones, when given, is the schedule whatever this says)
    lr_schedule: str = rule("plateau", choices=("plateau", "cosine"))
    # "sgd": the paper's rule (training/optim.py); "adamw": torch's AdamW (lr, weight_decay
    # decoupled as AdamW decays; momentum unused)
    optimizer: str = rule("sgd", choices=("sgd", "adamw"))
    # "paper": N(0, 0.01²), biases 0/1; "kaiming": He normal, biases 0
    init: str = rule("paper", choices=("paper", "kaiming"))
    zero_fc8: bool = False  # fc8 starts at zero: every class equally likely at the first step
    input_scale: float = rule(1.0, above=0)  # multiplies the mean-subtracted 0-255 input
    crop: int = 227
    flip: bool = True
    # "paper": P (a*lambda); "stddev": P (a*sqrt(lambda)); "none"
    lighting: str = rule("paper", choices=("paper", "stddev", "none"))
    lighting_sigma: float = rule(0.1, minimum=0)
    shuffle_buffer: int = rule(1000, minimum=1)
    loader_workers: int = rule(2, minimum=0)
    seed: int = 0
    checkpoint_every: int = rule(10, minimum=1)  # epochs; last.pt, best.pt: every epoch
    log_every: int = rule(20, minimum=1)  # steps between metrics lines
    bf16: bool = False  # autocast on CUDA
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        if not isinstance(self.model, AlexNetConfig):
            raise ValueError(f"model must be a table of model settings, got {self.model!r}")
        milestones = self.lr_milestones
        if milestones is not None and (
            not isinstance(milestones, list)
            or not all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones
            )
            or milestones != sorted(set(milestones))
        ):
            raise ValueError(
                f"lr_milestones must be increasing epoch numbers >= 1, like [30, 60, 80]; "
                f"got {milestones!r}"
            )
        if self.crop != self.model.input_size:
            raise ValueError(
                f"crop {self.crop} and model.input_size {self.model.input_size} differ: the "
                "net takes the crops as they are (227, or 224 with conv1 padded by 2)"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise _unknown(sorted(unknown), "")
        model = data.pop("model", {})
        if isinstance(model, dict):
            bad = set(model) - {f.name for f in fields(AlexNetConfig)}
            if bad:
                raise _unknown(sorted(bad), "model.")
            model = AlexNetConfig(**model)
        return cls(model=model, **data)


def setting_names() -> list[str]:
    """Every setting's name as `--set` takes it (`epochs`, `model.width`, ...)."""
    top = [f.name for f in fields(TrainConfig) if f.name != "model"]
    return top + [f"model.{f.name}" for f in fields(AlexNetConfig)]


def _unknown(names: list[str], prefix: str) -> ValueError:
    """An error naming unknown settings, with the nearest known name of each, and where
    the list of settings is."""
    known = setting_names()
    said = []
    for name in names:
        close = difflib.get_close_matches(prefix + name, known, n=1, cutoff=0.6)
        said.append(f"{prefix}{name}" + (f" (did you mean {close[0]}?)" if close else ""))
    return ValueError(
        f"unknown setting{'s' if len(said) > 1 else ''}: {', '.join(said)}; `alexnet config` "
        f"lists them with their values ({', '.join(known[:6])}, ...)"
    )


def to_toml(config: TrainConfig) -> str:
    """The settings as a TOML file `--config` reads back (a setting that is unset, None,
    as a comment): what `alexnet config` and `train --print-config` print."""
    data = config.to_dict()
    model = data.pop("model")
    lines = [_toml_line(k, v) for k, v in data.items()]
    lines += ["", "[model]", *(_toml_line(k, v) for k, v in model.items())]
    return "\n".join(lines) + "\n"


def _toml_line(key: str, value: Any) -> str:
    if value is None:
        return f"# {key} = (unset)"
    return f"{key} = {json.dumps(value)}"  # JSON's bools, numbers, strings, lists are TOML's


# The preset `alexnet pipeline`, `alexnet reprocess --train` and the flows use unless told.
PIPELINE_PRESET = "smoke"
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "smoke": {
        "model": {
            "width": 0.25,
            "norm": "batch",
            "lrn": "none",
            "dropout": 0.0,
            "centre_images": True,
        },
        "epochs": 10,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 5e-4,
        "weight_decay": 0.05,
        "lr_schedule": "cosine",
        "init": "kaiming",
        "zero_fc8": True,
        "input_scale": 1 / 64,
        "lighting": "none",  # centre_images takes out any shift of an image's colour
        "checkpoint_every": 5,
        "log_every": 5,
    },
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: list[str]) -> dict:
    """`["model.width=0.5", "epochs=3"]` -> `{"model": {"width": 0.5}, "epochs": 3}`."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        node = out
        *parents, leaf = key.strip().split(".")
        _check_groups(key.strip(), parents)
        for p in parents:
            node = node.setdefault(p, {})
        parsed = _parse_value(value.strip())
        if parsed is None and "None" not in _annotation(key.strip()):
            parsed = value.strip()  # `lrn=none` is the string "none", not a missing value
        node[leaf] = parsed
    return out


# What a resumed run may change: how long it goes on, and how it reports and reads. The
# rest (the model, the optimizer, the data's treatment) would make the run another one.
RESUMABLE = ("epochs", "checkpoint_every", "log_every", "loader_workers")


def resume_with(saved: TrainConfig, overrides: list[str]) -> tuple[TrainConfig, list[str]]:
    """The saved settings of a run being resumed with `--set` overrides applied, and a
    line per change; a ValueError for a setting a resumed run cannot change."""
    changes = parse_overrides(overrides)
    fixed = sorted(k for k in changes if k not in RESUMABLE)
    if fixed:
        raise ValueError(
            f"--resume continues the run with its saved settings; {', '.join(fixed)} cannot "
            f"change in the middle of a run (only {', '.join(RESUMABLE)} can): start a new "
            "--run to train with other settings"
        )
    config = TrainConfig.from_dict(_merge(saved.to_dict(), changes))  # checked as it is built
    was = saved.to_dict()
    return config, [f"{k}={v!r} (was {was[k]!r})" for k, v in changes.items() if was[k] != v]


def _check_groups(key: str, parents: list[str]) -> None:
    """`epochs.x=1` names a part of a setting that has none: an error saying so (it was a
    TypeError traceback). Unknown names are left to the check of unknown settings."""
    cls: Any = TrainConfig
    for i, part in enumerate(parents):
        kinds = {f.name: f for f in fields(cls)}
        if part not in kinds:
            return
        factory = kinds[part].default_factory
        if not dataclasses.is_dataclass(factory):
            groups = [f.name for f in fields(cls) if dataclasses.is_dataclass(f.default_factory)]
            raise ValueError(
                f"--set {key}: {'.'.join(parents[: i + 1])} is a setting, not a group of "
                f"settings (groups: {', '.join(groups) or 'none'})"
            )
        cls = factory


def _annotation(key: str) -> str:
    """The declared type of a dotted setting (`model.lrn` -> "str"), or "" if unknown."""
    cls: Any = TrainConfig
    *parents, leaf = key.split(".")
    for part in parents:
        types = {f.name: f.default_factory for f in fields(cls)}
        cls = types.get(part)
        if not dataclasses.is_dataclass(cls):
            return ""
    annotations = {f.name: str(f.type) for f in fields(cls)}
    return annotations.get(leaf, "")


def resolve(
    preset: str = "paper", config_file: str | Path | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """Preset, then the TOML file, then `key=value` overrides; checked."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    given = dict(PRESETS[preset])
    if config_file:
        given = _merge(given, read_config_file(config_file))
    given = _merge(given, parse_overrides(overrides or []))
    if "crop" in given and "input_size" not in given.get("model", {}):
        given = _merge(given, {"model": {"input_size": given["crop"]}})  # the net takes the crop
    return TrainConfig.from_dict(_merge(asdict(TrainConfig()), given))


def read_config_file(path: str | Path) -> dict:
    """Settings from a TOML file (for people), or a JSON one (`TrainConfig.to_dict()`
    written out: how the pipeline hands a resolved config to a launched training)."""
    from shards import storage

    if storage.is_url(path):  # handed to the nodes of a launch from a bucket
        text = storage.read_bytes(storage.check_url(str(path))).decode()
    else:
        text = Path(path).read_text()
    try:
        return json.loads(text) if Path(path).suffix == ".json" else tomllib.loads(text)
    except ValueError as err:  # both parsers' errors are ValueErrors
        raise ValueError(f"{path}: not a valid settings file ({err})") from None
