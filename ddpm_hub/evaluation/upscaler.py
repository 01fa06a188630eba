"""Scoring a super-resolution model, the body of `ddpm-hub eval SR --reference DATA`: the reference images are
downsampled to the model's low resolution, upscaled by the model (and, as the baseline, bicubically) and compared.

- `psnr`, `ssim`: fidelity to the originals, per image and averaged (SR3, Saharia et al. 2021, Table 2).
- `consistency`: the mean squared difference, in [0, 1] pixel units, between the output downsampled again and the
  low-resolution input (SR3's consistency): near 0 for a model that follows its input, high for one that ignores it.
- `fid`, `kid`, `pr`, `is`: the upscaled images against the reference statistics, as for any model.

The resampling is the pipeline's own (`pipeline_superres.downsample` / `upsample`), the one training uses: the
low-resolution inputs are float images, not rounded to 8 bits, exactly as training made them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..choices import UPSCALER_METRICS
from ..pipeline_superres import downsample, upsample
from .evaluate import in_shares, score, to_uint8, warn_if_few_samples
from .metrics import psnr, ssim

# Every metric but the pixel ones is scored from image features (`evaluate.score`).
FEATURE_METRICS = ("fid", "kid", "pr", "is")


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


def evaluate_upscaler(
    pipeline,
    originals: np.ndarray,
    metrics: tuple[str, ...],
    *,
    num_inference_steps: int,
    noise_level: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    extractor=None,
    reference=None,
    state=None,
) -> tuple[dict[str, Any], np.ndarray] | None:
    """Upscale the downsampled `originals` (uint8 (N, C, H, W) at the model's output size) and score the results and
    bicubic upscaling; returns ({metric: value, "bicubic": {metric: value}}, upscaled images) on the main process,
    `None` on the others. `extractor` and `reference` (statistics) are needed for the feature metrics only.

    With an accelerate `state` of several processes each upscales its share of the images.
    """
    low_res = low_res_inputs(originals, pipeline.low_resolution)
    upscale = lambda share: upscale_images(  # noqa: E731
        pipeline, low_res, share, batch_size=batch_size, seed=seed, num_inference_steps=num_inference_steps,
        noise_level=noise_level,
    )  # fmt: skip
    images = in_shares(list(range(len(originals))), upscale, state)
    if state is not None and not state.is_main_process:
        return None
    warn_if_few_samples(len(images), metrics)
    baseline = bicubic_images(low_res, originals.shape[-1])
    pixel_metrics = [name for name in metrics if name in UPSCALER_METRICS]
    results = fidelity(images, originals, low_res, pixel_metrics)
    results["bicubic"] = fidelity(baseline, originals, low_res, pixel_metrics)
    feature_metrics = tuple(name for name in metrics if name in FEATURE_METRICS)
    if feature_metrics:
        results.update(score(extractor.extract(images), reference, feature_metrics, seed=seed))
        results["bicubic"].update(score(extractor.extract(baseline), reference, feature_metrics, seed=seed))
    return results, images
