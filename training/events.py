"""TensorBoard event files of a training run, written with tensorboardX (no TensorFlow,
and it encodes images with whatever PIL is installed: pillow-simd stays).

    OUT/runs/NAME/tensorboard/events.out.tfevents.*
        train/loss, train/lr, train/images_per_s, train/data_wait   every logged step
        val/top1_error, val/top5_error                                every epoch
        conv1_kernels                                                 an image, every epoch

On resume the events after the checkpoint's step are dropped (`purge_step`), as
metrics.jsonl's lines are. Rank 0 writes them. To look at them, run the
`tensorboard` viewer from an environment of its own (it pulls in stock Pillow):
`tensorboard --logdir OUT/runs`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter

FOLDER = "tensorboard"
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
        self.writer = SummaryWriter(
            logdir=str(Path(run_dir) / FOLDER), purge_step=purge, flush_secs=30
        )

    def log(self, entry: dict) -> None:
        for key, tag in SCALARS.items():
            value = entry.get(key)
            if value is not None:
                self.writer.add_scalar(tag, value, entry["step"])

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image."""
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_events(run_dir: Path) -> list[tuple[str, int, float | bytes]]:
    """(tag, step, value) of every scalar and image (its PNG bytes) in the run's event
    files, in the order written, less what a resume purged (as TensorBoard shows them):
    TFRecords of tensorboardX's own Event protobufs."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    found = []
    for path in sorted((Path(run_dir) / FOLDER).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4  # length, its CRC, the record, its CRC
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                found = [f for f in found if f[1] < event.step]  # a resume's purge
            for v in event.summary.value:
                if v.HasField("image"):
                    found.append((v.tag, event.step, v.image.encoded_image_string))
                else:
                    found.append((v.tag, event.step, v.simple_value))
    return found
