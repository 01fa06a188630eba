"""The training monitor: what a training output folder says about its run, read while the run may still write it."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .models import is_training_output

METRICS_LOG = "metrics.jsonl"  # one JSON object per logging step (ddpm_hub/training/records.py: record_metrics)
CONFIG_FILE = "training_config.json"
SUMMARY_FILE = "metrics.json"  # written when the run ends
PREVIEW_PATTERN = re.compile(r"step-(\d+)\.png$")
PREVIEWS_SHOWN = 8
# Sample-quality metrics (logged by evaluation during training): any key naming one of these is plotted.
QUALITY_METRICS = ("fid", "kid")


@dataclass
class RunView:
    """A training run as its files show it now."""

    folder: Path
    metrics: list[dict] = field(default_factory=list)
    previews: list[tuple[Path, int]] = field(default_factory=list)  # newest first
    config: dict = field(default_factory=dict)
    finished: bool = False

    @property
    def quality_keys(self) -> list[str]:
        keys = dict.fromkeys(key for row in self.metrics for key in row)
        return [key for key in keys if any(name in key.lower() for name in QUALITY_METRICS)]

    def status(self) -> str:
        state = "finished" if self.finished else "running (or stopped)"
        latest = next((row for row in reversed(self.metrics) if "loss" in row), None)
        loss = f", loss {latest['loss']:.4g} at step {latest['step']}" if latest else ", no loss logged yet"
        quality = ""
        for key in self.quality_keys:
            last = next(row for row in reversed(self.metrics) if key in row)
            quality += f", {key} {last[key]:.4g} at step {last['step']}"
        return f"{self.folder}: {state}{loss}{quality}; {len(self.previews)} preview grids."


def _read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.jsonl; a line still being written (cut short) is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                rows.append(row)
    return rows


def read_run(folder: str | Path) -> RunView:
    """Read a training output folder; `ValueError` when it is not one."""
    folder = Path(str(folder).strip()).expanduser()
    if not str(folder).strip() or not folder.is_dir():
        raise ValueError(f"No training output folder at {str(folder)!r}.")
    if not is_training_output(folder):
        expected = f"{METRICS_LOG}, {CONFIG_FILE} or samples/"
        raise ValueError(f"{str(folder)!r} is not a training output folder (no {expected}).")
    previews = []
    for path in (folder / "samples").glob("step-*.png"):
        match = PREVIEW_PATTERN.search(path.name)
        if match:
            previews.append((path, int(match.group(1))))
    previews.sort(key=lambda item: item[1], reverse=True)
    config = {}
    if (folder / CONFIG_FILE).is_file():
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            config = {}
    return RunView(folder, _read_metrics(folder / METRICS_LOG), previews, config, (folder / SUMMARY_FILE).is_file())


def open_preview(path: Path):
    """A preview grid as a loaded PIL image (a grid being written right now is read on the next refresh)."""
    import PIL.Image

    with PIL.Image.open(path) as image:
        image.load()
        return image.copy()


def metrics_figure(run: RunView):
    """The loss over steps, and beside it FID/KID (or any logged key naming them) once the run has logged them."""
    from .panels import _figure

    quality = run.quality_keys
    figure, axes = _figure(11 if quality else 6.5, 3.6, 2 if quality else 1)
    losses = [(row["step"], row["loss"]) for row in run.metrics if _finite(row.get("loss"))]
    if losses:
        axes[0].plot(*zip(*losses), marker="." if len(losses) < 30 else None)
    else:
        axes[0].text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set(title="training loss", xlabel="step")
    for key in quality:
        points = [(row["step"], row[key]) for row in run.metrics if _finite(row.get(key))]
        if points:
            axes[1].plot(*zip(*points), marker="o", label=key)
    if quality:
        axes[1].set(title="sample quality (lower is better)", xlabel="step")
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    return figure


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
