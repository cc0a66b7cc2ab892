"""TensorBoard event files of a training run, written with tensorboardX (no TensorFlow,
and it encodes images with whatever PIL is installed: pillow-simd stays).

    OUT/runs/NAME/events.out.tfevents.*
        train/loss, train/lr, train/images_per_s, train/data_wait   every logged step
        val/top1_error, val/top5_error                                every epoch
        conv1_kernels                                                 an image, every epoch
        the run's settings and its best/last errors                  HParams, at the end

In the run folder itself, so `tensorboard --logdir OUT/runs` names each run by its
name (a `tensorboard/` folder inside made every run "NAME/tensorboard").

On resume the events after the checkpoint's step are dropped (`purge_step`), as
metrics.jsonl's lines are. Rank 0 writes them. To look at them, run the
`tensorboard` viewer from an environment of its own (it pulls in stock Pillow):
`tensorboard --logdir OUT/runs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter

SCALARS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "images_per_s": "train/images_per_s",
    "data_wait": "train/data_wait",
    "val_top1_error": "val/top1_error",
    "val_top5_error": "val/top5_error",
}


class Events:
    """The run's event writer: `log(entry)` for each metrics line, `image(...)`, `close()`."""

    def __init__(self, run_dir: Path, resume_step: int = 0) -> None:
        # Resuming after step S keeps what was logged at S and before (as metrics.jsonl)
        purge = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(logdir=str(run_dir), purge_step=purge, flush_secs=30)

    def log(self, entry: dict) -> None:
        for key, tag in SCALARS.items():
            value = entry.get(key)
            if value is not None:
                self.writer.add_scalar(tag, value, entry["step"])

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image."""
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def hparams(self, settings: dict, best_top1: float, last: dict) -> None:
        """The run's settings (flattened: `model.width`) and its results, for TensorBoard's
        HParams tab; in this run's own folder."""
        results = {
            "best_top1_error": best_top1,
            "last_top1_error": last["val_top1_error"],
            "last_top5_error": last["val_top5_error"],
            "epochs": last["epoch"],
        }
        flat = {}
        for key, value in settings.items():
            for k, v in value.items() if isinstance(value, dict) else [(None, value)]:
                name = f"{key}.{k}" if k is not None else key
                flat[name] = v if isinstance(v, bool | int | float | str) else str(v)
        self.writer.add_hparams(flat, {f"hparam/{k}": v for k, v in results.items()}, name=".")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
