"""Resumable training checkpoints: atomic save, rotation, lookup, and stopping cleanly on a signal.

A checkpoint is accelerate's `save_state` folder (model, optimizer, LR scheduler, EMA, every process's RNG states)
plus `training_state.json` with the step and the data position. It is written under a hidden temporary name and
renamed into place only when complete, so `--resume_from_checkpoint latest` never picks a partial one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from .files import replace_directory, write_json

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir: str | Path, resume_from_checkpoint: str | None) -> Path | None:
    """The checkpoint to resume from: `None`, `"latest"` (None if there is none yet) or a path, checked."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir() and (Path(output_dir) / resume_from_checkpoint).is_dir():
        path = Path(output_dir) / resume_from_checkpoint  # reference-script style: a name inside output_dir
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint folder.")
    return path


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, state: dict[str, Any], total_limit: int | None = None
) -> Path:
    """Save a checkpoint for `state["global_step"]` on every process (collective), then rotate old ones."""
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{state['global_step']}"
    staging = output_dir / f".checkpoint-{state['global_step']}.tmp"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(staging / STATE_FILE, state)
        replace_directory(staging, final)
        if total_limit is not None:
            # Rotate only after the new checkpoint is complete: a failed save never costs an old one.
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("Saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


class SignalStop:
    """Turns SIGTERM/SIGINT into a request to checkpoint and stop at the next optimizer step.

    A second SIGINT interrupts at once (KeyboardInterrupt), for a user who does not want to wait.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        logger.warning("Received %s: saving a checkpoint at the end of this step, then stopping.", self.received)

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
