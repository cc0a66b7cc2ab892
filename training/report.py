"""OUT/runs/NAME/report.html: one self-contained page of a run, to open in any browser.

The settings, the curves (inline SVG: labelled axes with ticks, epochs on x,
the learning-rate drops marked), the evaluation table (each checkpoint and the
ensemble), the worst and best classes, and the figures (embedded PNGs). Nothing
is fetched: no script, no style sheet, no font from elsewhere. Training
rewrites it each epoch (curves and settings); `alexnet evaluate` adds the rest.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from shards.atomic import read_json, write_bytes
from training.runlog import epoch_lines, loss_by_epoch, read_metrics

REPORT = "report.html"
W, H, PAD = 520, 260, 66  # chart size and the margin for the axes' labels


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


def svg_chart(
    title: str,
    series: list[tuple[str, str, list[tuple[float, float]]]],
    x_label: str,
    y_label: str,
    marks: list[float] = (),
) -> str:
    """A line chart as inline SVG: `series` = (name, colour, points); `marks` = x values
    drawn as dashed vertical lines (the learning-rate drops)."""
    points = [p for _, _, pts in series for p in pts]
    if not points:
        return f'<p class="empty">{html.escape(title)}: nothing logged yet</p>'
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

    out = [
        f'<svg class="chart" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">'
    ]
    out.append(
        f'<text x="{W / 2}" y="16" text-anchor="middle" class="title">{html.escape(title)}</text>'
    )
    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" class="axis"/>')
    out.append(f'<line x1="{PAD}" y1="{py(y1)}" x2="{PAD}" y2="{H - PAD}" class="axis"/>')
    for t in nice_ticks(x0, x1):
        out.append(
            f'<line x1="{px(t)}" y1="{H - PAD}" x2="{px(t)}" y2="{H - PAD + 5}" class="axis"/>'
        )
        out.append(f'<text x="{px(t)}" y="{H - PAD + 18}" text-anchor="middle">{_fmt(t)}</text>')
    for t in nice_ticks(y0, y1):
        out.append(f'<line x1="{PAD - 5}" y1="{py(t)}" x2="{PAD}" y2="{py(t)}" class="axis"/>')
        out.append(f'<text x="{PAD - 8}" y="{py(t) + 4}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="{(PAD + W) / 2}" y="{H - 12}" text-anchor="middle">{x_label}</text>')
    turn = f"rotate(-90 14 {H / 2})"
    out.append(f'<text x="14" y="{H / 2}" transform="{turn}" text-anchor="middle">{y_label}</text>')
    for m in marks:
        out.append(f'<line x1="{px(m)}" y1="{py(y1)}" x2="{px(m)}" y2="{H - PAD}" class="drop"/>')
    for i, (name, colour, pts) in enumerate(series):
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        label = html.escape(name)
        where = f'x="{W - 12}" y="{34 + 14 * i}"'
        out.append(f'<text {where} text-anchor="end" fill="{colour}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _curves(metrics: list[dict]) -> str:
    epochs = epoch_lines(metrics)
    per_epoch = {m["epoch"]: m for m in epochs}
    drops = [
        e - 0.5
        for e in sorted(per_epoch)
        if e - 1 in per_epoch and per_epoch[e]["lr"] < per_epoch[e - 1]["lr"]
    ]
    fraction = loss_by_epoch(metrics)
    loss = [(m["epoch"], m["loss"]) for m in epochs if m.get("loss") is not None]
    top1 = [(m["epoch"], m["val_top1_error"]) for m in epochs]
    top5 = [(m["epoch"], m["val_top5_error"]) for m in epochs]
    lr = [(m["epoch"], m["lr"]) for m in epochs]
    loss_series = [("per log line", "#8aa", fraction), ("epoch mean", "#236", loss)]
    error_series = [("top-1", "#c33", top1), ("top-5", "#e90", top5)]
    charts = [
        svg_chart("training loss", loss_series, "epoch", "loss", drops),
        svg_chart("validation error (centre crop)", error_series, "epoch", "error", drops),
        svg_chart("learning rate", [("lr", "#739", lr)], "epoch", "learning rate", drops),
    ]
    return "\n".join(charts)


def _table(rows: list[list[str]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _flat(settings: dict, prefix: str = "") -> list[list[str]]:
    rows = []
    for key, value in sorted(settings.items()):
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append([f"{prefix}{key}", json.dumps(value)])
    return rows


def _evaluation(run_dir: Path) -> str:
    result = read_json(run_dir / "eval.json")
    if not isinstance(result, dict):
        return "<p>Not evaluated yet: <code>alexnet evaluate OUT --run NAME</code>.</p>"
    rows = [
        [c["run"], f"{c['top1_error']:.2%}", f"{c['top5_error']:.2%}"]
        for c in result["checkpoints"]
    ]
    if "ensemble" in result:
        rows.append(["ensemble", f"{result['top1_error']:.2%}", f"{result['top5_error']:.2%}"])
    caption = f"<p>{result['crops']} crops, {result['n']} validation images.</p>"
    return caption + _table(rows, ["model", "top-1 error", "top-5 error"])


def _classes(run_dir: Path, n: int = 10) -> str:
    per_class = read_json(run_dir / "per_class_error.json")
    if not isinstance(per_class, dict) or not per_class:
        return ""
    ranked = sorted(per_class.items(), key=lambda kv: (kv[1]["top1_error"], kv[0]))
    n = min(n, max(1, len(ranked) // 2))  # the two lists never show a class twice

    def rows(items: list) -> list[list[str]]:
        return [
            [w, c["name"], c["n"], f"{c['top1_error']:.1%}", f"{c['top5_error']:.1%}"]
            for w, c in items
        ]

    head = ["wnid", "name", "images", "top-1 error", "top-5 error"]
    worst = _table(rows(ranked[::-1][:n]), head)
    best = _table(rows(ranked[:n]), head)
    return f"<h2>Worst classes</h2>{worst}<h2>Best classes</h2>{best}"


def _figures(run_dir: Path) -> str:
    parts = []
    for png in sorted((run_dir / "figures").glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        name = html.escape(png.stem.replace("_", " "))
        parts.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{name}</figcaption></figure>"
        )
    return "<h2>Figures</h2>" + "".join(parts) if parts else ""


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222 }
table { border-collapse: collapse; margin: .5em 0 1.5em } td, th { border: 1px solid #ccc;
padding: 2px 8px; text-align: left } .chart { margin: 0 1em 1em 0 } .chart text { font-size: 11px }
.chart .title { font-size: 13px; font-weight: 600 } .axis { stroke: #333 }
.drop { stroke: #739; stroke-dasharray: 4 3 } figure { display: inline-block; margin: 0 1em 1em 0 }
img { max-width: 100%; border: 1px solid #ddd } details { margin-bottom: 1em }
"""


def write_report(run_dir: str | Path) -> Path:
    """(Re)write the run's report.html from what the run folder holds now."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json") or {}
    metrics = read_metrics(run_dir)
    epochs = epoch_lines(metrics)
    status = f"{len(epochs)} epochs trained" if epochs else "no epoch trained yet"
    name = html.escape(run_dir.name)
    page = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>AlexNet run {name}</title>"
        f"<style>{STYLE}</style></head><body><h1>AlexNet run <code>{name}</code></h1>"
        f"<p>{status}; dashed lines mark the learning-rate drops.</p>"
        f"<h2>Curves</h2>{_curves(metrics)}<h2>Evaluation</h2>{_evaluation(run_dir)}"
        f"{_classes(run_dir)}{_figures(run_dir)}"
        f"<h2>Settings</h2><details open>{_table(_flat(config), ['setting', 'value'])}</details>"
        "</body></html>\n"
    )
    write_bytes(run_dir / REPORT, page.encode())
    return run_dir / REPORT
