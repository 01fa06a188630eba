"""Resumable training checkpoints: atomic save, rotation, lookup, and stopping cleanly on a signal.

A checkpoint is accelerate's `save_state` folder (model, optimizer, LR scheduler, every process's RNG states), the
EMA weights as `ema.safetensors` with their counters in `ema.json`, and `training_state.json` with the step and the
data position. It is written under a hidden temporary name and renamed into place only when complete, so
`--resume_from_checkpoint latest` never picks a partial one; weights holding NaN or infinity are never written.

Resuming never unpickles arbitrary objects, so a checkpoint folder taken from elsewhere cannot run code: model and
EMA weights are safetensors, and accelerate 1.15 reads the optimizer, scheduler, sampler and RNG files with
`torch.load(weights_only=True)` (numpy's RNG state through an allow-list of numpy types). Only its custom-state
files (`custom_checkpoint_*.pkl`) are read with `weights_only=False`; ddpm-hub registers no custom state and never
lets accelerate see such a file (see `load_checkpoint`). A previous version's EMA state in `custom_checkpoint_0.pkl`
is read with `weights_only=True`, which accepts its tensors and numbers and refuses anything else.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from .files import NonFiniteWeightsError, all_finite, replace_directory, write_json, writing

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
EMA_WEIGHTS = "ema.safetensors"
EMA_COUNTERS = "ema.json"
LEGACY_EMA_STATE = "custom_checkpoint_0.pkl"  # ddpm-hub <= 0.x: EMA through accelerate's custom-state hook
_CUSTOM_STATE = re.compile(r"^custom_checkpoint_\d+\.pkl$")
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
        # Marked non-finite checkpoints (never written by this version) are passed over; unmarked ones, from older
        # versions, count as good.
        good = [path for path in list_checkpoints(output_dir) if read_state(path).get("finite", True) is not False]
        return good[-1] if good else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir() and (Path(output_dir) / resume_from_checkpoint).is_dir():
        path = Path(output_dir) / resume_from_checkpoint  # reference-script style: a name inside output_dir
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint folder.")
    return path


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | Path,
    state: dict[str, Any],
    total_limit: int | None = None,
    *,
    model: torch.nn.Module | None = None,
    ema: EMAModel | None = None,
    save_parts: Callable[[Path], None] | None = None,
) -> Path:
    """Save a checkpoint for `state["global_step"]` on every process (collective), then rotate old ones.

    Args:
        accelerator (`Accelerator`): saves the prepared model, optimizer, LR scheduler and RNG states.
        output_dir (`str` or `Path`): the run's folder; the checkpoint is `checkpoint-<step>` in it.
        state (`dict`): the JSON-able training state, with at least `global_step`.
        total_limit (`int`, *optional*): keep at most this many checkpoints, deleting the oldest.
        model (`torch.nn.Module`, *optional*): the unwrapped model, checked to be finite; names the EMA weights.
        ema (`EMAModel`, *optional*): saved as `ema.safetensors` + `ema.json`.
        save_parts (`Callable`, *optional*): writes more files into the checkpoint being staged (main process).

    Raises `NonFiniteWeightsError` (nothing written, no checkpoint rotated away) when the model or EMA weights
    hold NaN or infinity, and `WriteError` (partial folder removed, earlier checkpoints intact) when the folder
    cannot be written.
    """
    output_dir = Path(output_dir)
    step = state["global_step"]
    name = f"checkpoint-{step}"
    final = output_dir / name
    staging = output_dir / f".{name}.tmp"
    weights = [] if model is None else list(model.parameters())
    if ema is not None:
        weights += ema.shadow_params
    # Every process holds the same replica, so all of them take this branch together (no process left waiting).
    if weights and not all_finite(weights):
        good = [path for path in list_checkpoints(output_dir) if path != final]
        last = f"the last good checkpoint is {good[-1]}" if good else "there is no earlier checkpoint"
        raise NonFiniteWeightsError(
            f"training diverged: the {'model or EMA ' if ema is not None else ''}weights at step {step} hold NaN or "
            f"infinity, so {name} was not saved ({last}); lower --learning_rate, or resume from the last good "
            "checkpoint with --resume_from_checkpoint latest."
        )
    advice = (
        "earlier checkpoints are intact; free space (or fix the folder's permissions) and resume with "
        "--resume_from_checkpoint latest"
    )
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    with writing(name, output_dir, staging=staging if accelerator.is_main_process else None, advice=advice):
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if ema is not None:
                save_ema(ema, model, staging)
            if save_parts is not None:
                save_parts(staging)
            write_json(staging / STATE_FILE, {**state, "finite": True})
            replace_directory(staging, final)
    if accelerator.is_main_process:
        if total_limit is not None:
            rotate_checkpoints(output_dir, total_limit, keep=final)
        logger.info("Saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir: Path, total_limit: int, *, keep: Path) -> None:
    """Delete the oldest checkpoints beyond `total_limit`, never `keep` (the one just written).

    Called only after `keep` is complete, so a failed save never costs an old checkpoint.
    """
    others = [path for path in list_checkpoints(output_dir) if path != keep]
    for old in others[: max(len(others) - (max(total_limit, 1) - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)


def set_aside_abandoned(output_dir: str | Path, resumed_step: int) -> Path | None:
    """Move the checkpoints of `output_dir` later than `resumed_step` into `abandoned-<time>/`; returns that folder.

    Resuming from an older checkpoint starts a new branch of the run: the later checkpoints belong to the old one.
    Kept beside it (never deleted, never mixed), they can neither be rotated in place of the new branch's nor be
    picked by `--resume_from_checkpoint latest`.
    """
    output_dir = Path(output_dir)
    later = [path for path in list_checkpoints(output_dir) if int(path.name.split("-")[1]) > resumed_step]
    if not later:
        return None
    folder = move_to_abandoned_folder(later, output_dir)
    logger.warning(
        "Resuming from step %d while %s exist: those belong to an abandoned branch of this run and were moved to "
        "%s (delete it once you no longer need it).",
        resumed_step,
        ", ".join(path.name for path in later),
        folder,
    )
    return folder


def move_to_abandoned_folder(paths: list[Path], parent: Path) -> Path:
    """Move `paths` (what an abandoned branch of a run wrote in `parent`) into a new `abandoned-<time>/` folder there,
    never deleting them; returns that folder."""
    folder = parent / time.strftime("abandoned-%Y%m%d-%H%M%S")
    while folder.exists():
        folder = folder.with_name(folder.name + "x")
    folder.mkdir()
    for path in paths:
        os.replace(path, folder / path.name)
    return folder


def _parameter_names(model: torch.nn.Module | None, count: int) -> list[str]:
    names = [] if model is None else [name for name, _ in model.named_parameters()]
    return names if len(names) == count else [f"shadow_params.{i}" for i in range(count)]


def save_ema(ema: EMAModel, model: torch.nn.Module | None, folder: Path) -> None:
    """EMA weights as safetensors, keyed by parameter name, and its counters and decay settings as JSON."""
    from safetensors.torch import save_file

    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    names = _parameter_names(model, len(shadow))
    save_file({n: t.detach().contiguous() for n, t in zip(names, shadow)}, str(folder / EMA_WEIGHTS))
    write_json(folder / EMA_COUNTERS, state)


def load_ema(ema: EMAModel, model: torch.nn.Module | None, checkpoint: Path) -> None:
    """Restore `ema` from `ema.safetensors` + `ema.json`, or from a previous version's `custom_checkpoint_0.pkl`."""
    from safetensors.torch import load_file

    if (checkpoint / EMA_WEIGHTS).is_file():
        try:
            tensors = load_file(str(checkpoint / EMA_WEIGHTS))
        except Exception as error:  # safetensors parses a header and raw tensor bytes: nothing in it can run
            raise ValueError(f"{checkpoint / EMA_WEIGHTS} is not a readable safetensors file: {error}.") from error
        names = _parameter_names(model, len(ema.shadow_params))
        missing = [n for n in names if n not in tensors]
        if missing or len(tensors) != len(names):
            raise ValueError(f"{checkpoint / EMA_WEIGHTS} does not match the model (missing e.g. {missing[:3]}).")
        state = json.loads((checkpoint / EMA_COUNTERS).read_text(encoding="utf-8"))
        state["shadow_params"] = [tensors[n] for n in names]
    elif (checkpoint / LEGACY_EMA_STATE).is_file():
        try:
            # A plain dict of numbers and tensors (EMAModel.state_dict()): the safe unpickler reads it; a file
            # that would build any other object (and so could run code) is refused here.
            state = torch.load(checkpoint / LEGACY_EMA_STATE, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{checkpoint / LEGACY_EMA_STATE} is not a plain EMA state (it would unpickle other objects, which "
                f"ddpm-hub refuses to do): {type(error).__name__}."
            ) from error
    else:
        raise ValueError(f"{checkpoint} has no EMA weights ({EMA_WEIGHTS}) but this run uses EMA; pass --no_use_ema.")
    ema.load_state_dict(state)


def load_checkpoint(
    accelerator: Accelerator, checkpoint: Path, *, model: torch.nn.Module | None = None, ema: EMAModel | None = None
) -> dict[str, Any]:
    """Restore every state saved by `save_checkpoint` and return its training state; nothing is unpickled unsafely.

    accelerate's `load_state` reads every `custom_checkpoint_*.pkl` with `weights_only=False` (and refuses a folder
    whose count of them differs from the registered objects), so it is given a view of the checkpoint without them.
    """
    with tempfile.TemporaryDirectory(prefix="ddpm-hub-resume-") as view:
        for entry in checkpoint.iterdir():
            if not _CUSTOM_STATE.match(entry.name):
                os.symlink(entry.resolve(), Path(view) / entry.name)
        accelerator.load_state(view)
    if ema is not None:
        load_ema(ema, model, checkpoint)
    return read_state(checkpoint)


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

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
