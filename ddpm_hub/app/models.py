"""Which model and which training run the explorer shows: found in the current folder, or named by the user."""

from __future__ import annotations

import os
from pathlib import Path

from ..pipeline import DDPMHubPipeline
from ..safe_loading import check_local_model, weights_kwargs

PIPELINE_INDEX = "model_index.json"
# Files a training run writes before its first export (see ddpm_hub/training/).
RUN_MARKERS = ("metrics.jsonl", "training_config.json", "samples")


def is_pipeline_dir(path: Path) -> bool:
    return (path / PIPELINE_INDEX).is_file()


def is_training_output(path: Path) -> bool:
    """A folder train_unconditional.py writes into: metrics, settings, previews or checkpoints."""
    if not path.is_dir():
        return False
    return any((path / name).exists() for name in RUN_MARKERS) or any(path.glob("checkpoint-*"))


def _last_modified(path: Path) -> float:
    """The newest modification time of the folder and its direct entries (a running run touches metrics.jsonl)."""
    times = [path.stat().st_mtime]
    times += [entry.stat().st_mtime for entry in path.iterdir() if entry.exists()]
    return max(times)


def newest_training_output(folder: str | os.PathLike = ".") -> Path | None:
    """The most recently written pipeline or training output among `folder` and its sub-folders, or `None`."""
    folder = Path(folder)
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    runs = [path for path in candidates if path.is_dir() and (is_pipeline_dir(path) or is_training_output(path))]
    return max(runs, key=_last_modified) if runs else None


def load_pipeline(model: str) -> DDPMHubPipeline:
    """Load a `DDPMHubPipeline` from a folder or Hub id; raises `ValueError` with one readable sentence."""
    model = model.strip()
    if not model:
        raise ValueError("Give a pipeline folder or a Hub id like 'org/name'.")
    from ..text2img import check_model_reference

    check_model_reference(model)  # neither a folder nor "org/name": say so, without asking the Hub
    check_local_model(model)
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir() or not is_pipeline_dir(local):
            hint = " (a training run still in progress exports it at the end)" if is_training_output(local) else ""
            raise ValueError(f"{model!r} is not a pipeline folder: it has no {PIPELINE_INDEX}{hint}.")
    try:
        pipeline = DDPMHubPipeline.from_pretrained(str(local) if local.exists() else model, **weights_kwargs())
    except Exception as error:  # Hub errors, offline mode, wrong model type: one line for the status box
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        where = " (offline: only models already in the Hub cache load)" if offline and not local.exists() else ""
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"Cannot load {model!r}{where}: {first_line}") from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def describe_pipeline(pipeline: DDPMHubPipeline, source: str) -> str:
    """One line saying what was loaded: resolution, parameters, schedule, prediction type."""
    config = pipeline.scheduler.config
    channels, height, width = pipeline.sample_shape
    parameters = sum(p.numel() for p in pipeline.unet.parameters()) / 1e6
    zero_snr = ", zero terminal SNR" if config.get("rescale_betas_zero_snr") else ""
    low = pipeline.low_resolution
    upscales = f" (upscales {low}x{low} images: use the Upscaling panel)" if low else ""
    return (
        f"Loaded {source}: {width}x{height}x{channels}{upscales}, {parameters:.2f}M parameters, "
        f"{config.beta_schedule} schedule over {config.num_train_timesteps} steps{zero_snr}, "
        f"predicts {config.prediction_type}{' and its variances' if pipeline.learns_variance else ''}."
    )
