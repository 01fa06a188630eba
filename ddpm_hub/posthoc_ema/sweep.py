"""Scoring reconstructions: each sigma_rel of a sweep is sampled (same seeds) and scored against the reference data
with the offline extractor and the flags of `ddpm-hub eval`; the curve is printed, saved as JSON and plotted."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from ..config import EvalConfig
from ..evaluation import check_sample_count
from ..evaluation.evaluate import generate_images, score, warn_if_few_samples
from ..evaluation.features import get_extractor
from ..evaluation.reference import reference_source, reference_statistics
from ..files import atomic_file

SWEEP_JSON = "posthoc_ema_sweep.json"
SWEEP_PLOT = "posthoc_ema_sweep.png"


def check_scoring(scoring: EvalConfig) -> tuple[str, ...]:
    """The metrics to compute; FID must be one (the sweep keeps the lowest), with enough images for it."""
    metrics = scoring.validate()
    if "fid" not in metrics:
        raise ValueError(f"--metrics {scoring.metrics} lacks fid, by which the sweep keeps the best sigma_rel.")
    if "nll" in metrics:
        raise ValueError(
            "the sweep scores samples, and nll is the likelihood of the reference images: leave nll out of --metrics "
            "and measure the written pipeline with `ddpm-hub eval OUT --metrics nll`."
        )
    check_sample_count(scoring.num_samples, scoring.features, metrics)
    return metrics


def reference_data(reference: str | None, overrides: dict[str, Any], run_settings: dict[str, Any]) -> dict[str, Any]:
    """`reference_source` arguments for `--reference` (and its options), by default the run's training data.

    Args:
        reference (`str`, *optional*): a folder of images, a built-in set, a data set id or WebDataset shards.
        overrides (`dict`): `dataset_config_name`, `image_column`, `max_images` given on the command line (or None).
        run_settings (`dict`): the run's `training_config.json`.
    """

    def recorded(key: str):
        value = run_settings.get(key)
        return None if value in (None, "None", "") else value

    options = dict(overrides)
    if reference is None:
        shards = recorded("train_shards")
        if shards and len(shards) > 1:
            raise ValueError("the run trained on several shard sets: name the data to score against with --reference.")
        reference = shards[0] if shards else recorded("train_data_dir") or recorded("dataset_name") or "twemoji"
        options = {
            "dataset_config_name": options.get("dataset_config_name") or recorded("dataset_config_name"),
            "image_column": options.get("image_column") or recorded("image_column"),
            "max_images": options.get("max_images") or recorded("max_train_samples"),
        }
    return dict(reference=reference, **options)


class SweepScorer:
    """The extractor and the reference statistics, loaded once; `score(pipeline)` samples and scores one model.

    Args:
        scoring (`EvalConfig`): the eval flags (samples, sampler, steps, metrics, features, batch size, seed).
        reference (`dict`): `reference_data`'s arguments for `reference_source`.
        resolution (`int`), channels (`int`): the pipeline's images (a latent model's decoded ones).
        device (`torch.device`): where to sample and extract.
        cache_dir (`str`, *optional*): where reference statistics are cached.
    """

    def __init__(self, scoring: EvalConfig, reference: dict[str, Any], resolution: int, channels: int, device,
                 cache_dir: str | None = None):  # fmt: skip
        self.scoring, self.metrics = scoring, check_scoring(scoring)
        self.extractor = get_extractor(scoring.features, device, scoring.batch_size)
        options = dict(reference)
        identity, images = reference_source(options.pop("reference"), **options)
        self.reference = reference_statistics(
            self.extractor, identity, resolution=resolution, channels=channels, cache_dir=cache_dir,
            images=lambda: images(resolution, channels),
        )  # fmt: skip
        warn_if_few_samples(scoring.num_samples, self.metrics)

    @torch.no_grad()
    def score(self, pipeline, num_inference_steps: int) -> dict[str, float]:
        """The metrics of `num_samples` images of `pipeline` (image i from seed + i, whatever the model)."""
        images = generate_images(
            pipeline, self.scoring.num_samples, batch_size=self.scoring.batch_size, seed=self.scoring.seed,
            num_inference_steps=num_inference_steps, progress="Scoring",
        )  # fmt: skip
        return score(self.extractor.extract(images), self.reference, self.metrics, seed=self.scoring.seed)

    def settings(self, num_inference_steps: int) -> dict[str, Any]:
        """How the scores were measured (compare only curves measured alike)."""
        return dict(
            extractor=self.extractor.name, num_images=self.scoring.num_samples, sampler=self.scoring.sampler,
            num_inference_steps=num_inference_steps, seed=self.scoring.seed, reference=self.reference.source,
            reference_images=self.reference.num_images,
        )  # fmt: skip

    def describe(self, num_inference_steps: int) -> str:
        return (
            f"{self.extractor.name}, {self.scoring.num_samples} samples ({self.scoring.sampler} {num_inference_steps} "
            f"steps, seeds {self.scoring.seed}+), reference: {self.reference.source} ({self.reference.num_images} "
            "images)"
        )


def format_curve(curve: list[dict[str, Any]], best: float, baseline: dict[str, Any] | None = None) -> str:
    """The curve as a table: one row per sigma_rel (the kept one marked), then the run's own pipeline if scored."""
    metrics = [key for key in ("fid", "kid_mean", "precision", "recall") if key in curve[0]]
    lines = ["sigma_rel  " + "  ".join(f"{m:>9}" for m in metrics)]
    for point in curve:
        cells = "  ".join(f"{point[m]:9.4f}" if "kid" not in m else f"{point[m]:9.6f}" for m in metrics)
        lines.append(f"{point['sigma_rel']:9.4f}  {cells}" + ("  <- best" if point["sigma_rel"] == best else ""))
    if baseline is not None:
        lines.append(f"{baseline['label']}: FID {baseline['fid']:.4f}")
    return "\n".join(lines)


def plot_curve(path: Path, curve: list[dict[str, Any]], best: float, title: str,
               baseline: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """FID against sigma_rel as a PNG (the best point marked, the run's own pipeline as a dashed line). Needs
    matplotlib (`pip install "ddpm-hub[plot]"`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('the sweep plot needs matplotlib: pip install "ddpm-hub[plot]"') from error
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["sigma_rel"] for p in curve], [p["fid"] for p in curve], "o-", label="post-hoc EMA")
    kept = next(p for p in curve if p["sigma_rel"] == best)
    ax.plot([kept["sigma_rel"]], [kept["fid"]], "o", color="red", markersize=9, label=f"best: sigma_rel {best:g}")
    if baseline is not None:
        ax.axhline(baseline["fid"], linestyle="--", color="gray", label=baseline["label"])
    ax.set_xlabel("sigma_rel (EMA length relative to training time)")
    ax.set_ylabel("FID")
    ax.set_title(textwrap.fill(title, 80, break_on_hyphens=False), fontsize=9)  # a long title would run off the figure
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
