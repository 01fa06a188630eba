"""Sample grids from pipelines: previews during training, and `ddpm-hub sample` for any saved or pushed model."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers.utils import make_image_grid

from .devices import resolve_device
from .files import save_image
from .labels import preview_class_ids
from .pipeline_ddpm_hub import DDPMHubPipeline, check_compile_options


def grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of the squarest grid holding exactly `count` images."""
    rows = int(count**0.5)
    while count % rows:
        rows -= 1
    return rows, count // rows


@torch.no_grad()
def generate_grid(
    pipeline: DDPMHubPipeline,
    num_images: int,
    num_inference_steps: int,
    seed: int,
    class_labels: Sequence[int | str] | None = None,
    guidance_scale: float | None = None,
):
    """`num_images` samples in one grid; image i always comes from seed + i, so grids stay comparable.

    A class-conditional model gets one row per class of `class_labels` (default: every class, or 16 evenly spaced
    ones), with at least 2 and enough columns for `num_images`; column j uses seed + j in every row, so rows differ
    by their class only.
    """
    if class_labels is None and pipeline.num_classes:
        class_labels = preview_class_ids(pipeline.num_classes)
    if not class_labels:
        rows, columns = grid_shape(num_images)
        labels = None
    else:
        rows, columns = len(class_labels), max(2, math.ceil(num_images / len(class_labels)))
        labels = [label for label in class_labels for _ in range(columns)]
    seeds = [seed + i for i in range(rows * columns)] if labels is None else [seed + j for _ in range(rows) for j in range(columns)]
    images = pipeline(
        batch_size=rows * columns,
        class_labels=labels,
        guidance_scale=guidance_scale,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=num_inference_steps,
        output_type="pil",
    ).images
    return make_image_grid(images, rows, columns)


def render_grid(
    model: str,
    output: str | os.PathLike,
    *,
    revision: str | None = None,
    sampler: str = "ddim",
    num_inference_steps: int = 50,
    num_images: int = 16,
    seed: int = 0,
    device: str = "auto",
    class_labels: Sequence[int | str] | None = None,
    guidance_scale: float | None = None,
    compile: bool = False,
    compile_mode: str | None = None,
    compile_backend: str = "inductor",
) -> Path:
    """Load a pipeline from a folder or Hub repo, sample a grid with `sampler` and save it as `output`.

    `class_labels` (ids or names) give a conditional model's rows, one per label; see `generate_grid`. With
    `compile`, the UNet is compiled first (`DDPMHubPipeline.compile`: CUDA graphs on CUDA unless `compile_mode`
    says otherwise); the grid is the same, to floating-point rounding.
    """
    if compile:
        check_compile_options(compile_mode, compile_backend)  # before loading anything
    pipeline = DDPMHubPipeline.from_pretrained(model, revision=revision).to(resolve_device(device))
    pipeline.set_sampler(sampler)
    # Checked before any sampling, so a bad label or scale fails at once with the pipeline's one-line error.
    pipeline.prepare_class_labels(list(class_labels) if class_labels else None, len(class_labels or [0]), guidance_scale)
    if compile:
        pipeline.compile(compile_mode, backend=compile_backend)
    grid = generate_grid(pipeline, num_images, num_inference_steps, seed, class_labels=class_labels, guidance_scale=guidance_scale)
    return save_image(grid, output)
