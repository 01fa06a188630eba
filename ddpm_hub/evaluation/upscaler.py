"""The pieces of scoring a super-resolution model (`ddpm-hub eval SR --reference DATA`, `evaluate.py`): the reference
images are downsampled to the model's low resolution, upscaled by the model (and, as the baseline, bicubically) and
compared.

- `psnr`, `ssim`: fidelity to the originals, per image and averaged (SR3, Saharia et al. 2021, Table 2).
- `consistency`: the mean squared difference, in [0, 1] pixel units, between the output downsampled again and the
  low-resolution input (SR3's consistency): near 0 for a model that follows its input, high for one that ignores it.
- `fid`, `kid`, `pr`, `is`: the upscaled images against the reference statistics, as for any model.

The resampling is the pipeline's own (`pipeline_superres.downsample` / `upsample`), the one training uses: the
low-resolution inputs are float images, not rounded to 8 bits, exactly as training made them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..pipeline_superres import downsample, upsample
from .features import to_uint8
from .metrics import psnr, ssim


def low_res_inputs(pixels: np.ndarray | torch.Tensor, low_resolution: int) -> torch.Tensor:
    """uint8 originals (N, C, H, W) as the low-resolution inputs an upscaler gets: floats in [-1, 1]."""
    return downsample(torch.as_tensor(np.asarray(pixels)).float() / 127.5 - 1, low_resolution)


def consistency(images: np.ndarray, low_res: torch.Tensor) -> np.ndarray:
    """Per image: mean((down(output) - input)²) in [0, 1] units, for uint8 outputs (N, C, H, W) and [-1, 1] inputs."""
    outputs = torch.as_tensor(np.asarray(images)).float() / 127.5 - 1
    difference = (downsample(outputs, low_res.shape[-1]) - low_res.float()) / 2
    return difference.pow(2).flatten(1).mean(1).double().numpy()


def fidelity(images: np.ndarray, originals: np.ndarray, low_res: torch.Tensor, metrics) -> dict[str, float]:
    """The pixel metrics of `metrics` (psnr, ssim, consistency) of uint8 upscaled images, averaged over images."""
    values: dict[str, float] = {}
    if "psnr" in metrics:
        values["psnr"] = float(psnr(images, originals).mean())
    if "ssim" in metrics:
        values["ssim"] = float(ssim(images, originals).mean())
    if "consistency" in metrics:
        values["consistency"] = float(consistency(images, low_res).mean())
    return values


def bicubic_images(low_res: torch.Tensor, size: int) -> np.ndarray:
    """The baseline: the low-resolution inputs upsampled bicubically, as uint8 (N, C, size, size)."""
    return to_uint8((upsample(low_res, size) + 1) / 2)


@torch.no_grad()
def upscale_images(
    pipeline, low_res: torch.Tensor, indices: list[int], *, batch_size: int, seed: int, num_inference_steps: int,
    noise_level: int = 0,
) -> np.ndarray:  # fmt: skip
    """uint8 upscales of `low_res[indices]`; image i always comes from seed + i, whatever the batch size."""
    channels, size, _ = pipeline.image_shape
    batches = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        images = pipeline.upscale(
            (low_res[chunk] + 1) / 2,
            noise_level=noise_level,
            generator=[torch.Generator().manual_seed(seed + i) for i in chunk],
            num_inference_steps=num_inference_steps,
            output_type="pt",
        ).images
        batches.append(to_uint8(images))
    return np.concatenate(batches) if batches else np.zeros((0, channels, size, size), np.uint8)
