"""What a training run may do to its `--output_dir`: which files it writes, and when it may write there at all.

A run writes only the names below. A folder that is neither empty nor a ddpm-hub run (no `training_config.json`,
no checkpoint) is refused before anything is written, unless `--overwrite_output_dir` says to train there; even
then only the run's own names are replaced and nothing else is deleted. A run that starts over (no resume) starts
its own records, so the monitor and the model card never show two runs' metrics or previews.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from .checkpointing import list_checkpoints
from .export import PIPELINE_ENTRIES
from .model_card import CONFIG_FILE, METRICS_FILE, SAMPLE_GRID

logger = logging.getLogger(__name__)

METRICS_LOG = "metrics.jsonl"
RUN_LOG = "train.log"
PREVIEWS = "samples"
BEST_DIR = "best"  # evaluation/during_training.py: the best-scoring pipeline so far
SNAPSHOT_DIR = "ema-snapshots"  # posthoc_ema: the snapshots of --post_hoc_ema, for `ddpm-hub ema`
# Top-level names a run writes (besides checkpoint-<step>/ and its --logging_dir).
RUN_FILES = (
    *PIPELINE_ENTRIES,
    "README.md",
    SAMPLE_GRID,
    CONFIG_FILE,
    METRICS_FILE,
    METRICS_LOG,
    RUN_LOG,
    PREVIEWS,
    BEST_DIR,
    SNAPSHOT_DIR,
)
# Files an export writes inside unet/ and scheduler/ (diffusers' save_pretrained, safetensors weights).
EXPORT_FILES = {
    "unet": {"config.json", "diffusion_pytorch_model.safetensors"},
    "scheduler": {"scheduler_config.json"},
}
_PREVIEW_NAME = re.compile(r"^step-\d+\.png$")
_CHECKPOINT_OR_STAGING = re.compile(r"^(checkpoint-\d+|\.checkpoint-\d+\.tmp|\.pipeline\..*\.tmp|\.hub-push-.*)$")


def is_run_folder(output_dir: str | os.PathLike) -> bool:
    """Whether `output_dir` was made by a ddpm-hub training run (its settings file, or a checkpoint)."""
    output_dir = Path(output_dir)
    return (output_dir / CONFIG_FILE).is_file() or bool(list_checkpoints(output_dir))


def foreign_entries(output_dir: Path, logging_dir: str = "logs") -> list[str]:
    """Names in `output_dir` that no run writes, sorted."""
    own = {*RUN_FILES, logging_dir}
    return sorted(
        p.name for p in output_dir.iterdir() if p.name not in own and not _CHECKPOINT_OR_STAGING.match(p.name)
    )


def check_output_dir(
    output_dir: str | os.PathLike, *, overwrite: bool, resuming: bool, logging_dir: str = "logs"
) -> None:
    """Refuse an output folder the run would damage, with one line saying what to do (raises `ValueError`).

    Args:
        output_dir (`str` or `os.PathLike`): `--output_dir`.
        overwrite (`bool`): `--overwrite_output_dir` was given.
        resuming (`bool`): `--resume_from_checkpoint` was given.
        logging_dir (`str`, defaults to `"logs"`): `--logging_dir`, a name the run writes.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {str(output_dir)!r} exists and is not a folder.")
    if not path.is_dir() or not any(path.iterdir()) or overwrite:
        return
    # What a run that stopped during setup leaves (its log) does not make a folder foreign: the retry may go on.
    early = {RUN_LOG, logging_dir}
    if not is_run_folder(path) and not all(entry.name in early for entry in path.iterdir()):
        names = foreign_entries(path, logging_dir) or sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ValueError(
            f"--output_dir {str(output_dir)!r} is not empty and is not a ddpm-hub run (it holds {shown}); choose a "
            "new or empty folder, or pass --overwrite_output_dir to train there (only the files a run writes are "
            "replaced, nothing else is deleted)."
        )
    previous = list_checkpoints(path) or (path / "model_index.json").exists()
    if previous and not resuming:
        raise ValueError(
            f"--output_dir {str(output_dir)!r} already holds a training run; pass --resume_from_checkpoint latest "
            "to continue it, --overwrite_output_dir to start over, or choose another --output_dir."
        )


def start_fresh_records(output_dir: str | os.PathLike, *, remove_checkpoints: bool = True) -> list[str]:
    """Remove a previous run's records before a new run starts over in `output_dir`; returns what was removed.

    Only what a run writes goes: checkpoints (with `remove_checkpoints`, i.e. `--overwrite_output_dir`),
    `metrics.jsonl`, `metrics.json`, `train.log`, `sample_grid.png`, the previews `samples/step-*.png` and the
    `best/` pipeline (only its exported files). Other files, and the
    tracker folder (tensorboard keeps one event file per run), stay. The pipeline itself is replaced by the export.
    """
    output_dir = Path(output_dir)
    removed = []
    for checkpoint in list_checkpoints(output_dir) if remove_checkpoints else []:
        shutil.rmtree(checkpoint)
        removed.append(checkpoint.name)
    for name in (METRICS_LOG, METRICS_FILE, RUN_LOG, SAMPLE_GRID):
        if (output_dir / name).is_file():
            (output_dir / name).unlink()
            removed.append(name)
    previews = output_dir / PREVIEWS
    if previews.is_dir():
        for preview in previews.iterdir():
            if _PREVIEW_NAME.match(preview.name) and preview.is_file():
                preview.unlink()
                removed.append(f"{PREVIEWS}/{preview.name}")
        if not any(previews.iterdir()):
            previews.rmdir()
    best = output_dir / BEST_DIR
    if best.is_dir():
        removed += [f"{BEST_DIR}/{name}" for name in remove_export(best, extra={"eval_results.json"})]
    if removed:
        logger.info("Starting over in %s: removed the previous run's %s.", output_dir, ", ".join(removed[:6]))
    return removed


def remove_export(folder: Path, extra: set[str] = frozenset()) -> list[str]:
    """Delete what an export wrote into `folder` (its pipeline entries, and `extra` names), keeping anything else."""
    removed = []
    for name in (*PIPELINE_ENTRIES, *extra):
        path = folder / name
        if name in EXPORT_FILES and path.is_dir():
            for inner in EXPORT_FILES[name]:
                if (path / inner).is_file():
                    (path / inner).unlink()
            if not any(path.iterdir()):
                path.rmdir()
            removed.append(name)
        elif path.is_file():
            path.unlink()
            removed.append(name)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return removed
