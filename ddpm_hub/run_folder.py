"""What a command may do to its output folder: which files it writes, and when it may write there at all.

`OutputFolder` is the rule every writing command follows (training here; `ddpm-hub distill` and `ddpm-hub prepare`
with their own names): a folder that is a file or cannot be written, or that is neither empty nor the command's own,
is refused in one line before any work.

A training run writes only the names below. A folder that is neither empty nor a ddpm-hub run (no
`training_config.json`, no checkpoint) is refused before anything is written, unless `--overwrite_output_dir` says
to train there; even then only the run's own names are replaced and nothing else is deleted. A run that starts over
(no resume) starts its own records, so the monitor and the model card never show two runs' metrics or previews.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .checkpointing import list_checkpoints
from .export import PIPELINE_ENTRIES
from .files import check_writable_folder
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


@dataclass(frozen=True)
class OutputFolder:
    """The rule of one command for the folder it writes into: it may write into a new or empty folder, or into one
    holding its own earlier output; any other non-empty folder is refused in one line before anything is written
    (unless the command has a flag to write there anyway, and then only its own names are replaced).

    Args:
        flag (`str`): how the user names the folder ("--output_dir", "OUT").
        holds (`str`): what the command's own output is called ("a ddpm-hub run", "a distillation").
        is_own (`Callable[[Path], bool]`): whether a folder holds the command's earlier output.
        writes (`Callable[[str], bool]`): whether a top-level name is one the command writes.
        anyway (`str`, *optional*): how to write into another folder regardless, e.g. "pass --overwrite_output_dir
            to train there"; without it such a folder is always refused.
    """

    flag: str
    holds: str
    is_own: Callable[[Path], bool]
    writes: Callable[[str], bool]
    anyway: str = ""

    def check(self, folder: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Refuse `folder` in one sentence (`ValueError`): a file, a folder that cannot be written, or a non-empty
        folder that is not the command's own (unless `overwrite`)."""
        path = Path(folder)
        check_writable_folder(path, self.flag)
        if not path.is_dir() or overwrite:
            return
        entries = sorted(p.name for p in path.iterdir())
        if not entries or self.is_own(path):
            return
        names = [name for name in entries if not self.writes(name)] or entries
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        advice = "choose a new or empty folder"
        if self.anyway:
            advice += f", or {self.anyway} (only the files {self.holds} writes are replaced, nothing else is deleted)"
        raise ValueError(
            f"{self.flag} {str(folder)!r} is not empty and is not {self.holds} (it holds {shown}); {advice}."
        )


def training_folder(logging_dir: str = "logs") -> OutputFolder:
    """Training's rule: its own folder is a run (settings or a checkpoint), or what a run that stopped during setup
    leaves (its log, its tracker folder), which a retry may go on in."""
    early = {RUN_LOG, logging_dir}
    return OutputFolder(
        flag="--output_dir",
        holds="a ddpm-hub run",
        is_own=lambda path: is_run_folder(path) or all(entry.name in early for entry in path.iterdir()),
        writes=lambda name: name in {*RUN_FILES, logging_dir} or bool(_CHECKPOINT_OR_STAGING.match(name)),
        anyway="pass --overwrite_output_dir to train there",
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
    training_folder(logging_dir).check(output_dir, overwrite=overwrite)
    path = Path(output_dir)
    if not path.is_dir() or overwrite:
        return
    previous = list_checkpoints(path) or (path / "model_index.json").exists()
    if previous and not resuming:
        raise ValueError(
            f"--output_dir {str(output_dir)!r} already holds a training run; pass --resume_from_checkpoint latest "
            "to continue it, --overwrite_output_dir to start over, or choose another --output_dir."
        )


def first_missing_folder(folder: str | os.PathLike) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (what `mkdir(parents=True)` creates first)."""
    path, missing = Path(folder).absolute(), None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def remove_setup_leftovers(output_dir: str | os.PathLike, created: Path | None) -> None:
    """After a run stopped during setup: remove what it wrote into a folder it created itself (its log, empty
    folders), and that folder up to `created` (`first_missing_folder` before the run), when nothing else is there."""
    if created is None:
        return
    output_dir = Path(output_dir).absolute()
    (output_dir / RUN_LOG).unlink(missing_ok=True)
    for folder in sorted((p for p in output_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only empty ones
    folder = output_dir
    while folder.is_relative_to(created):
        with contextlib.suppress(OSError):
            folder.rmdir()
        if folder == created:
            break
        folder = folder.parent


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
