"""Sample grids from pipelines: previews during training, and `ddpm-hub sample` for any saved or pushed model."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers.utils import make_image_grid

from .devices import resolve_device
from .files import save_image
from .pipeline_ddpm_hub import DDPMHubPipeline, check_compile_options


def grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of the squarest grid holding exactly `count` images."""
    rows = int(count**0.5)
    while count % rows:
        rows -= 1
    return rows, count // rows


@torch.no_grad()
def generate_grid(pipeline: DDPMHubPipeline, num_images: int, num_inference_steps: int, seed: int):
    """`num_images` samples in one grid; image i always comes from seed + i, so grids stay comparable."""
    generators = [torch.Generator().manual_seed(seed + i) for i in range(num_images)]
    images = pipeline(
        batch_size=num_images, generator=generators, num_inference_steps=num_inference_steps, output_type="pil"
    ).images
    return make_image_grid(images, *grid_shape(num_images))


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
    compile: bool = False,
    compile_mode: str | None = None,
    compile_backend: str = "inductor",
) -> Path:
    """Load a pipeline from a folder or Hub repo, sample a grid with `sampler` and save it as `output`.

    With `compile`, the UNet is compiled first (`DDPMHubPipeline.compile`: CUDA graphs on CUDA unless `compile_mode`
    says otherwise); the grid is the same, to floating-point rounding.
    """
    if compile:
        check_compile_options(compile_mode, compile_backend)  # before loading anything
    pipeline = DDPMHubPipeline.from_pretrained(model, revision=revision).to(resolve_device(device))
    pipeline.set_sampler(sampler)
    if compile:
        pipeline.compile(compile_mode, backend=compile_backend)
    return save_image(generate_grid(pipeline, num_images, num_inference_steps, seed), output)
