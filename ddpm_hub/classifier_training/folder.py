"""What `ddpm-hub train-classifier` may do to its `--output_dir`: the `OutputFolder` rule with a classifier run's names.

A classifier run is told from a diffusion run by its settings (`training_config.json` records the classifier's
size), so neither kind of run trains over the other's folder without `--overwrite_output_dir`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..checkpointing import list_checkpoints
from ..config import TrainConfig
from ..model_card import CONFIG_FILE
from ..run_folder import METRICS_LOG, PREVIEWS, RUN_LOG, OutputFolder
from .card import CLASSIFIER_FILES

# What a run writes besides its folder's files: checkpoints, its own staging folders (`export`), a push's staging.
_STAGING = re.compile(r"^(checkpoint-\d+|\.checkpoint-\d+\.tmp|\.classifier\..*\.tmp|\.hub-push-.*)$")


def is_classifier_run(folder: Path) -> bool:
    """Whether `folder` holds a classifier run: its settings name the classifier's size."""
    try:
        return "classifier_parameters" in json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def classifier_folder(logging_dir: str = "logs") -> OutputFolder:
    """The rule: a classifier run's own folder, or what a run that stopped during setup leaves (its log, its
    tracker folder), which a retry may go on in."""
    early = {RUN_LOG, logging_dir}
    own_names = {*CLASSIFIER_FILES, METRICS_LOG, RUN_LOG, PREVIEWS, logging_dir}
    return OutputFolder(
        flag="--output_dir",
        holds="a classifier run",
        is_own=lambda path: is_classifier_run(path) or all(entry.name in early for entry in path.iterdir()),
        writes=lambda name: name in own_names or bool(_STAGING.match(name)),
        anyway="pass --overwrite_output_dir to train there",
    )


def check_output_dir(run: TrainConfig) -> None:
    """Refuse (`ValueError`, one line) a folder that is a file, cannot be written, or holds something other than a
    classifier run (unless --overwrite_output_dir); and a finished or checkpointed classifier run unless told to
    resume it or start over."""
    classifier_folder(run.logging_dir).check(run.output_dir, overwrite=run.overwrite_output_dir)
    path = Path(run.output_dir)
    if not path.is_dir() or run.overwrite_output_dir or run.resume_from_checkpoint is not None:
        return
    if list_checkpoints(path) or (path / "config.json").is_file():
        raise ValueError(
            f"--output_dir {run.output_dir!r} already holds a classifier run; pass --resume_from_checkpoint latest "
            "to continue it, --overwrite_output_dir to start over, or choose another --output_dir."
        )
