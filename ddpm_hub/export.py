"""Turning training state into things people keep: preview grids and the saved pipeline."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel

from .assembly import PipelineParts
from .files import NonFiniteWeightsError, all_finite, replace_directory, writing
from .pipeline import PIPELINE_SOURCE_FILES
from .sampling import generate_grid, upscaled_grid

# What a saved pipeline consists of (`vae` for latent models only); model_index.json goes last, so a folder that
# has it is complete. The Hub push (`hub.PIPELINE_FILES`) sends these too.
PIPELINE_ENTRIES = ("unet", "vae", "scheduler", *PIPELINE_SOURCE_FILES, "model_index.json")


@contextlib.contextmanager
def ema_weights(ema: EMAModel | None, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily load the EMA weights into `model` (bit-exact restore afterwards); a no-op without EMA."""
    if ema is None:
        yield model
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema.restore(model.parameters())


@torch.no_grad()
def sample_grid(
    parts: PipelineParts, *, num_images: int, sampler: str, num_inference_steps: int, seed: int, images=None
):
    """A preview grid from the UNet being trained, with fixed per-image seeds (comparable over training).

    A class-conditional UNet gets one row per class (see `generate_grid`). The pipeline's device-side steps (ddpm,
    ddim, dpmpp_2m, euler) keep a preview from syncing with the host at every step; the UNet runs as training left
    it (compiled or not): a second, inference-only compilation would cost more than the few previews of a run save.
    A latent model's `vae` decodes the grid (on the VAE's own device: it may stay off the accelerator). A
    super-resolution model upscales `images` (a function returning uint8 training images at its output size), each
    beside its low-resolution input (`upscaled_grid`).
    """
    unet = parts.unet
    was_training = unet.training
    unet.eval()
    try:
        pipeline = parts.pipeline(sampler)
        if pipeline.is_upscaler:
            return upscaled_grid(pipeline, images()[:num_images], num_inference_steps, seed)
        return generate_grid(pipeline, num_images, num_inference_steps, seed)
    finally:
        unet.train(was_training)


def export_pipeline(parts: PipelineParts, output_dir: str | os.PathLike) -> Path:
    """Save the pipeline of `parts` into `output_dir`, which may hold other files.

    A `vae` in `parts` makes it a latent pipeline, saved with `vae/`; `default_num_inference_steps` is what `pipe()`
    takes without `num_inference_steps` (a distilled student's).

    An existing `unet/` or `scheduler/` is replaced whole only when it holds nothing but what this export writes
    there; otherwise the new files are moved in one by one and the folder's other files are kept.

    The pipeline is written to a temporary folder first and moved into place entry by entry, `model_index.json`
    last, so an interrupted export never leaves a half-written weights file under its final name. Weights holding
    NaN or infinity are refused (`NonFiniteWeightsError`) before anything is written; a folder that cannot be
    written gives a one-line `WriteError` and no temporary folder is left behind.
    """
    output_dir = Path(output_dir)
    if not all_finite(parts.unet.state_dict().values()):
        raise NonFiniteWeightsError(
            f"the UNet's weights hold NaN or infinity (training diverged), so the pipeline was not saved to "
            f"{output_dir}; lower --learning_rate, or resume from the last good checkpoint."
        )
    with writing("the pipeline", output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pipeline.", suffix=".tmp", dir=output_dir))
        with writing("the pipeline", output_dir, staging=staging):
            parts.pipeline().save_pretrained(staging)
            for name in PIPELINE_ENTRIES:
                source = staging / name
                if not source.exists():
                    continue  # `vae` of a pixel model
                if source.is_dir():
                    _replace_exported_folder(source, output_dir / name)
                else:
                    os.replace(source, output_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _replace_exported_folder(source: Path, destination: Path) -> None:
    """Move the freshly saved `source` folder onto `destination`, never deleting a file the export did not write."""
    written = {entry.name for entry in source.iterdir()}
    if (
        not destination.is_dir()
        or destination.is_symlink()
        or all(entry.is_file() and not entry.is_symlink() and entry.name in written for entry in destination.iterdir())
    ):
        replace_directory(source, destination)
        return
    for entry in source.iterdir():  # a folder with the user's own files in it: replace ours, keep theirs
        target = destination / entry.name
        if target.is_dir() and not target.is_symlink():
            raise ValueError(f"cannot export the pipeline: {target} is a folder, where the export writes a file.")
        os.replace(entry, target)
    shutil.rmtree(source, ignore_errors=True)
