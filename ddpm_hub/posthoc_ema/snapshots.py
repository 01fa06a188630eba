"""Post-hoc EMA snapshots on disk: `RUN/ema-snapshots/step-<step>.safetensors`, one file per snapshot step.

A file holds every tracked profile at that step in 16 bits (float16; a tensor outside float16's range in bfloat16),
keyed `profile<k>/<parameter name>`, and in its safetensors metadata what reconstruction needs: the step, the
profiles' sigma_rel and gamma, and the UNet's config. It is written under a temporary name and renamed when complete,
so a listed snapshot is always whole. Snapshots of an abandoned branch of the run (later than the checkpoint a run
resumes from) are moved into `ema-snapshots/abandoned-<time>/`, never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpointing import move_to_abandoned_folder
from ..files import NonFiniteWeightsError, all_finite, atomic_file, writing
from ..run_folder import SNAPSHOT_DIR

logger = logging.getLogger("ddpm_hub")

METADATA_KEY = "ddpm_hub_posthoc_ema"
FORMAT_VERSION = 1
_SNAPSHOT_NAME = re.compile(r"^step-(\d+)\.safetensors$")
_FLOAT16_MAX = torch.finfo(torch.float16).max


@dataclass(frozen=True)
class Snapshot:
    """One snapshot file: its step, the sigma_rel and gamma of each profile in it, the UNet config it was taken of."""

    path: Path
    step: int
    sigma_rels: tuple[float, ...]
    gammas: tuple[float, ...]
    unet_config: dict[str, Any] | None = None


def profile_key(index: int, name: str) -> str:
    """The tensor name of parameter `name` in profile `index` (in snapshots and in checkpoints)."""
    return f"profile{index}/{name}"


def snapshot_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"step-{step:09d}.safetensors"


def to_16bit(tensor: torch.Tensor) -> torch.Tensor:
    """float16 (11 significant bits), or bfloat16 for a tensor float16 cannot hold (|x| > 65504): 2 bytes a weight."""
    if tensor.numel() and tensor.detach().abs().max() > _FLOAT16_MAX:
        return tensor.detach().to(torch.bfloat16)
    return tensor.detach().to(torch.float16)


def write_snapshot(
    run_dir: str | os.PathLike,
    step: int,
    profiles: list[dict[str, torch.Tensor]],
    sigma_rels: list[float],
    gammas: list[float],
    unet_config: dict[str, Any] | None = None,
) -> Path:
    """Write the `profiles` (one `{parameter name: tensor}` per sigma_rel) of `step` in 16 bits, atomically.

    Raises `NonFiniteWeightsError` (nothing written) if an average holds NaN or infinity, and a one-line `WriteError`
    if the folder cannot take the file.
    """
    from safetensors.torch import save_file

    if not all_finite(tensor for profile in profiles for tensor in profile.values()):
        raise NonFiniteWeightsError(
            f"the post-hoc EMA at step {step} holds NaN or infinity (training diverged), so its snapshot was not saved."
        )
    tensors = {
        profile_key(index, name): to_16bit(tensor).cpu().contiguous()
        for index, profile in enumerate(profiles)
        for name, tensor in profile.items()
    }
    metadata = dict(
        format_version=FORMAT_VERSION, step=step, sigma_rels=list(sigma_rels), gammas=list(gammas),
        unet_config=unet_config,
    )  # fmt: skip
    path = snapshot_path(run_dir, step)
    with writing(f"the post-hoc EMA snapshot of step {step}", path.parent, advice="free space and resume the run"):
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, default=str)})
    return path


def read_snapshot(path: str | os.PathLike) -> Snapshot:
    """A snapshot's step and profiles, from its metadata only (no tensor is read); `ValueError` if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = json.loads((handle.metadata() or {})[METADATA_KEY])
        return Snapshot(
            path,
            int(stored["step"]),
            tuple(float(s) for s in stored["sigma_rels"]),
            tuple(float(g) for g in stored["gammas"]),
            stored.get("unet_config"),
        )
    except Exception as error:  # safetensors reads a header and raw bytes: nothing in the file can run
        raise ValueError(f"{path} is not a readable post-hoc EMA snapshot ({type(error).__name__}: {error}).") from None


def list_snapshots(run_dir: str | os.PathLike) -> list[Snapshot]:
    """The snapshots of a run, by step (those set aside in `abandoned-*/` are not part of it)."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    paths = [path for path in folder.iterdir() if _SNAPSHOT_NAME.match(path.name) and path.is_file()]
    return sorted((read_snapshot(path) for path in paths), key=lambda snapshot: snapshot.step)


def _step_of(path: Path) -> int:
    return int(_SNAPSHOT_NAME.match(path.name).group(1))


def set_aside_later(run_dir: str | os.PathLike, step: int) -> Path | None:
    """Move the snapshots of `run_dir` later than `step` into `ema-snapshots/abandoned-<time>/`; returns that folder.

    A run resumed from the checkpoint of `step` starts a new branch: later snapshots averaged weights the new branch
    never had, and mixing them into a reconstruction would average two runs. As `set_aside_abandoned` does for
    checkpoints, they are kept beside the run (never deleted) where reconstruction does not look.
    """
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return None
    later = sorted(p for p in folder.iterdir() if _SNAPSHOT_NAME.match(p.name) and p.is_file() and _step_of(p) > step)
    if not later:
        return None
    aside = move_to_abandoned_folder(later, folder)
    logger.warning(
        "The run continues from step %d while post-hoc EMA snapshots of later steps (%s) exist: they belong to an "
        "abandoned branch of this run and were moved to %s (delete it once you no longer need it).",
        step, ", ".join(str(_step_of(p)) for p in later[:5]) + (", ..." if len(later) > 5 else ""), aside,
    )  # fmt: skip
    return aside
