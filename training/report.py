"""OUT/runs/NAME/report.html: one self-contained page of a run, to open in any browser.

The settings, the curves (inline SVG: labelled axes with ticks, epochs on x,
the learning-rate drops marked), the evaluation table (each checkpoint and the
ensemble), the worst and best classes, and the figures (embedded PNGs). Nothing
is fetched: no script, no style sheet, no font from elsewhere. Training
rewrites it each epoch (curves and settings); `alexnet evaluate` adds the rest.
This module gathers the numbers; templates/report.html.j2 lays them out, with
Jinja2 escaping every value.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import torch

from shards.atomic import read_json, write_bytes
from shards.progress import duration, plural
from training.events import Events
from training.figures import conv1_kernels
from training.runlog import epoch_lines, loss_by_epoch, read_metrics

REPORT = "report.html"
W, H, PAD = 340, 260, 66  # chart size (three to a row) and the margin for the axes' labels


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.floor(lo / step) * step
    values = [first + i * step for i in range(int((hi - first) / step) + 2)]
    return [v for v in values if lo - 1e-12 <= v <= hi + 1e-12]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.0e}"


@dataclass
class Chart:
    """A line chart's geometry in SVG pixels, for the template's `chart` macro."""

    title: str
    x_label: str
    y_label: str
    top: float = 0.0  # the y axis's upper end
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # (x, label)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    marks: list[float] = field(default_factory=list)  # dashed verticals: the rate drops
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (name, colour, points)


def chart(
    title: str,
    series: list[tuple[str, str, list[tuple[float, float]]]],
    x_label: str,
    y_label: str,
    marks: list[float] = (),
) -> Chart:
    """`series` = (name, colour, points) scaled into the chart; `marks` = x values drawn
    as dashed vertical lines (the learning-rate drops). No points: an empty chart."""
    c = Chart(title, x_label, y_label)
    points = [p for _, _, pts in series for p in pts]
    if not points:
        return c
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0 = min(0.0, min(xs))  # epochs count from 0
    x1 = max(max(xs), x0 + 1)
    y0, y1 = min(0.0, min(ys)), max(ys) if max(ys) > min(0.0, min(ys)) else 1.0
    sx = (W - PAD - 10) / (x1 - x0)
    sy = (H - 2 * PAD + 20) / (y1 - y0)

    def px(x: float) -> float:
        return PAD + (x - x0) * sx

    def py(y: float) -> float:
        return H - PAD - (y - y0) * sy

    c.top = py(y1)
    c.x_ticks = [(px(t), _fmt(t)) for t in nice_ticks(x0, x1)]
    c.y_ticks = [(py(t), _fmt(t)) for t in nice_ticks(y0, y1)]
    c.marks = [px(m) for m in marks]
    for name, colour, pts in series:
        c.lines.append((name, colour, " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)))
    return c


def _curves(metrics: list[dict], stepped: bool = True) -> list[Chart]:
    """The three charts; `stepped`: the schedule divides the rate (a cosine lowers it every
    epoch: no marks)."""
    epochs = epoch_lines(metrics)
    per_epoch = {m["epoch"]: m for m in epochs}
    drops = [  # where the rate changed: after epoch e - 1's validation
        e - 1
        for e in sorted(per_epoch)
        if stepped and e - 1 in per_epoch and per_epoch[e]["lr"] < per_epoch[e - 1]["lr"]
    ]
    fraction = loss_by_epoch(metrics)
    loss = [(m["epoch"], m["loss"]) for m in epochs if m.get("loss") is not None]
    top1 = [(m["epoch"], m["val_top1_error"]) for m in epochs]
    top5 = [(m["epoch"], m["val_top5_error"]) for m in epochs]
    # a staircase: epoch e trained at its rate from e - 1 to e (a drop is a step, not a slope)
    lr = [(e, m["lr"]) for m in epochs for e in (m["epoch"] - 1, m["epoch"])]
    loss_series = [("per log line", "#8aa", fraction), ("epoch mean", "#236", loss)]
    error_series = [("top-1", "#c33", top1), ("top-5", "#e90", top5)]
    return [
        chart("training loss", loss_series, "epoch", "loss", drops),
        chart("validation error (centre crop)", error_series, "epoch", "error", drops),
        chart("learning rate", [("lr", "#739", lr)], "epoch", "learning rate", drops),
    ]


def _flat(settings: dict, prefix: str = "") -> list[list[str]]:
    rows = []
    for key, value in sorted(settings.items()):
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append([f"{prefix}{key}", json.dumps(value)])
    return rows


def _evaluation(run_dir: Path) -> dict | None:
    result = read_json(run_dir / "eval.json")
    if not isinstance(result, dict):
        return None
    rows = [
        [c["run"], f"{c['top1_error']:.2%}", f"{c['top5_error']:.2%}"]
        for c in result["checkpoints"]
    ]
    if "ensemble" in result:
        rows.append(["ensemble", f"{result['top1_error']:.2%}", f"{result['top5_error']:.2%}"])
    by_crops = [  # every crop count evaluated for this model, the latest's details above
        [plural(int(k), "crop"), f"{v['top1_error']:.2%}", f"{v['top5_error']:.2%}", v["n"]]
        for k, v in result.get("by_crops", {}).items()
    ]
    crops = plural(result["crops"], "crop")
    return {"crops": crops, "n": result["n"], "rows": rows, "by_crops": by_crops}


def _classes(run_dir: Path, n: int = 10) -> dict | None:
    per_class = read_json(run_dir / "per_class_error.json")
    if not isinstance(per_class, dict) or not per_class:
        return None
    ranked = sorted(per_class.items(), key=lambda kv: (kv[1]["top1_error"], kv[0]))
    n = min(n, max(1, len(ranked) // 2))  # the two lists never show a class twice

    def rows(items: list) -> list[list]:
        return [
            [w, c["name"], c["n"], f"{c['top1_error']:.1%}", f"{c['top5_error']:.1%}"]
            for w, c in items
        ]

    return {"worst": rows(ranked[::-1][:n]), "best": rows(ranked[:n])}


CAPTIONS = {  # what each figure shows, and how to read it
    "conv1_kernels": (
        "Figure 3: the conv1 kernels (11x11x3), each scaled to its own range. The upper block "
        "is column 1's (the paper's GPU 0), the lower column 2's; in the paper the first "
        "learns mostly colour-agnostic kernels, the second colour-specific ones."
    ),
    "top5_predictions": (
        "Figure 4, left: validation images, each with the five classes the model finds most "
        "probable (longest bar first, its probability before the name). Green: the true "
        "class; red: a wrong one. The true class is also written under the bars."
    ),
    "nearest_neighbours": (
        "Figure 4, right: the first column holds validation images (the queries); along "
        "each row, the training images whose fc7 features (the 4096-d last hidden layer, "
        "centre crop) are nearest to the query's by Euclidean distance, nearest first."
    ),
}


def _figures(run_dir: Path) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of each figure in the run's figures/."""
    return [
        (
            CAPTIONS.get(png.stem, png.stem.replace("_", " ")),
            base64.b64encode(png.read_bytes()).decode(),
        )
        for png in sorted((run_dir / "figures").glob("*.png"))
    ]


TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("training"),  # training/templates/
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
).get_template("report.html.j2")


def show_epoch(run_dir: Path, events: Events | None, conv1: list[torch.Tensor], step: int) -> None:
    """What a run shows after each epoch (rank 0): conv1's kernels in TensorBoard (the
    drawing of Figure 3), and report.html with the curves so far."""
    if events is not None:
        events.image("conv1_kernels", np.asarray(conv1_kernels(conv1)), step)
    write_report(run_dir)


def write_report(run_dir: str | Path) -> Path:
    """(Re)write the run's report.html from what the run folder holds now."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    epochs = epoch_lines(metrics)
    settings = read_json(run_dir / "config.json") or {}
    stepped = settings.get("lr_schedule") != "cosine"
    page = TEMPLATE.render(
        W=W,
        H=H,
        PAD=PAD,
        name=run_dir.name,
        status=(
            f"{plural(len(epochs), 'epoch')} trained in "
            f"{duration(sum(e.get('seconds', 0.0) for e in epochs))}"
            if epochs
            else "no epoch trained yet"
        ),
        evaluate_command=f"alexnet evaluate {run_dir.parent.parent} --run {run_dir.name}",
        command=(read_json(run_dir / "ranks" / "rank-0.json") or {}).get("command"),
        charts=_curves(metrics, stepped),
        stepped=stepped,
        evaluation=_evaluation(run_dir),
        classes=_classes(run_dir),
        class_head=["wnid", "name", "images", "top-1 error", "top-5 error"],
        figures=_figures(run_dir),
        settings=_flat(settings),
    )
    write_bytes(run_dir / REPORT, page.encode())
    return run_dir / REPORT
