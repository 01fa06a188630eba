"""The negative log-likelihood of images under a `DDPMHubPipeline`, in bits per dimension: `ddpm-hub eval --metrics
nll` and `--eval_metrics nll` during training.

    from ddpm_hub.likelihood import negative_log_likelihood
    result = negative_log_likelihood(pipe, images_uint8, num_steps=100)   # result.bits_per_dim
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .bound import BitsPerDim, bits_per_dim
from .process import VARIANCE_TYPES, DiffusionProcess, bound_variance


@dataclass
class NegativeLogLikelihood:
    """The bound of some images under a model, in bits per dimension (lower is better).

    Args:
        per_image (`torch.Tensor`): (N,) each image's whole bound.
        prior (`torch.Tensor`): (N,) each image's prior term L_N.
        decoder (`torch.Tensor`): (N,) each image's decoder term L_0.
        num_steps (`int`): the steps of the process (T, or the respaced count).
        variance_type (`str`): the reverse-step variance used.
    """

    per_image: torch.Tensor
    prior: torch.Tensor
    decoder: torch.Tensor
    num_steps: int
    variance_type: str

    @property
    def bits_per_dim(self) -> float:
        return float(self.per_image.double().mean())

    def record(self) -> dict[str, float | int | str]:
        """The result as `ddpm-hub eval` writes it: mean, its standard error over images, the two edge terms."""
        count = len(self.per_image)
        spread = float(self.per_image.double().std()) / math.sqrt(count) if count > 1 else float("nan")
        return dict(
            nll_bits_per_dim=self.bits_per_dim,
            nll_bits_per_dim_sem=spread,
            nll_prior_bits=float(self.prior.double().mean()),
            nll_decoder_bits=float(self.decoder.double().mean()),
            nll_steps=self.num_steps,
            nll_images=count,
            nll_variance=self.variance_type,
        )


def bound_variance_type(pipeline, variance_type: str | None = None) -> str:
    """The reverse-step variance of `pipeline` for the bound: its learned one, else its scheduler's fixed one.

    `variance_type` overrides it (e.g. a learned-variance model's mean with `fixed_small`, to compare). A variance
    learned as diffusers' `"learned"` (the variance itself, not eq. 15's interpolation) is refused in one line.
    """
    scheduler_variance = pipeline.scheduler.config.get("variance_type")
    if pipeline.learns_variance and scheduler_variance == "learned" and variance_type in (None, "learned_range"):
        raise ValueError(
            "The bound reads learned variances as learned_range (Nichol & Dhariwal 2021, eq. 15); this model's "
            "scheduler says variance_type 'learned' (the variance itself): score its mean with a fixed variance_type."
        )
    if variance_type is not None:
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"Unknown variance type {variance_type!r}; choose one of: {', '.join(VARIANCE_TYPES)}.")
        if variance_type == "learned_range" and not pipeline.learns_variance:
            raise ValueError("variance_type 'learned_range' needs a model with learned variances; this one has none.")
        return variance_type
    if pipeline.learns_variance:
        return "learned_range"
    return bound_variance(scheduler_variance)


def _denoiser(pipeline, batch_size: int):
    """The pipeline's model output with its variance channels; a conditional model's null class (p(x))."""
    labels = None
    if pipeline.num_classes:
        labels = torch.full((batch_size,), pipeline.null_class_id, dtype=torch.long, device=pipeline._execution_device)
    return lambda x_t, t: pipeline._model_output(x_t, t, labels, with_variance=True)


def check_pixel_model(pipeline) -> None:
    """Bits per dimension are a probability of 8-bit pixels: refuse a latent model in one sentence."""
    if getattr(pipeline, "vae", None) is not None:
        raise ValueError(
            "nll is the likelihood of 8-bit pixels; this is a latent model, whose VAE gives no exact likelihood of "
            "the images (the bound of its latents is a density per latent dimension, not bits per pixel)."
        )


@torch.no_grad()
def negative_log_likelihood(
    pipeline,
    images: torch.Tensor,
    *,
    num_steps: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    variance_type: str | None = None,
    progress: bool = True,
) -> NegativeLogLikelihood:
    """The variational bound of uint8 `images` (N, C, H, W) at the model's size, in bits per dimension.

    Args:
        pipeline (`DDPMHubPipeline`): a pixel model; a class-conditional one is scored as its unconditional
            (null-class) model, p(x).
        images (`torch.Tensor`): uint8 images of the pipeline's `image_shape`.
        num_steps (`int`, *optional*): the bound of the respaced process of the `ddpm` sampler with this many steps
            (`DiffusionProcess.from_scheduler`); the full T steps by default.
        batch_size (`int`, defaults to 64): images per model call.
        seed (`int`, defaults to 0): image i's forward-process noise comes from seed + i, whatever the batching.
        variance_type (`str`, *optional*): see `bound_variance_type`.
        progress (`bool`, defaults to `True`): show a progress bar over the model calls.
    """
    check_pixel_model(pipeline)
    variance_type = bound_variance_type(pipeline, variance_type)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != tuple(pipeline.image_shape):
        raise ValueError(
            f"nll scores uint8 images of the model's shape {tuple(pipeline.image_shape)}, got {images.dtype} "
            f"{tuple(images.shape[1:])}."
        )
    config = pipeline.scheduler.config
    process = DiffusionProcess.from_scheduler(pipeline.scheduler, num_steps)
    clip = config.get("clip_sample_range", 1.0) if config.get("clip_sample", True) else None
    device = pipeline._execution_device
    results: list[BitsPerDim] = []
    bar = tqdm(total=len(images) * len(process), desc="bits/dim", unit="image-step", disable=not progress)
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(device).float() / 127.5 - 1
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(x0))]
        results.append(
            bits_per_dim(
                _denoiser(pipeline, len(x0)),
                x0,
                process,
                config.prediction_type,
                variance_type,
                generator=generators,
                clip=clip,
                progress=functools.partial(bar.update, len(x0)),
            )  # fmt: skip
        )
    bar.close()
    return NegativeLogLikelihood(
        per_image=torch.cat([r.total.cpu() for r in results]),
        prior=torch.cat([r.prior.cpu() for r in results]),
        decoder=torch.cat([r.terms[:, 0].cpu() for r in results]),
        num_steps=len(process),
        variance_type=variance_type,
    )
