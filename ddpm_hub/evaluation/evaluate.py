"""Score a model: sample it (batched, one seed per image, split across `accelerate launch` processes), extract
features, and compare them with a data set's reference statistics. The body of `ddpm-hub eval`.

    ddpm-hub eval path/to/pipeline --reference twemoji --num_samples 2048 --sampler ddim --num_inference_steps 50
    accelerate launch -m ddpm_hub.cli eval org/name --reference path/to/images --metrics fid,kid,pr
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..choices import SAMPLE_METRICS, SAMPLE_STEPS, UPSCALER_METRICS
from ..config import EvalConfig
from ..data import image_extensions, is_image_file
from ..data.shards import is_shard_reference
from . import check_sample_count
from .features import Features, get_extractor, to_uint8
from .metrics import frechet_distance, gaussian_statistics, inception_score, kid, precision_recall
from .reference import ReferenceStatistics, is_image_folder, reference_source, reference_statistics

logger = logging.getLogger(__name__)

# Below this many images FID is visibly biased upwards (Chong & Forsyth 2020); papers use 50,000.
RELIABLE_FID_SAMPLES = 10_000


@torch.no_grad()
def generate_images(
    pipeline,
    num_samples: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
    num_inference_steps: int = SAMPLE_STEPS,
    state=None,
    progress: str | None = None,
) -> np.ndarray:
    """`num_samples` uint8 images (N, C, H, W); image i always comes from seed + i, whatever the batch size.

    With an accelerate `PartialState` of several processes, each process samples its contiguous share of the
    indices and the main process receives all of them, in order (the others get an empty array). With `progress`,
    a progress bar of that description counts the images (on the main process).
    """
    work = lambda share: _sample(pipeline, share, batch_size, seed, num_inference_steps, progress, state)  # noqa: E731
    return in_shares(list(range(num_samples)), work, state)


def in_shares(indices: list[int], work, state=None) -> np.ndarray:
    """`work(indices)` (an array, one row per index), split across the processes of an accelerate `state`: each
    process does its contiguous share and the main process receives every row, in order (the others get none)."""
    if state is not None and state.num_processes > 1:
        from accelerate.utils import gather_object

        with state.split_between_processes(indices) as share:
            mine = work(list(share))
        parts = gather_object([mine])
        return np.concatenate(parts) if state.is_main_process else mine[:0]
    return work(indices)


def _sample(pipeline, indices, batch_size, seed, num_inference_steps, progress=None, state=None) -> np.ndarray:
    from tqdm.auto import tqdm

    channels, size, _ = pipeline.image_shape  # pixels, also for a latent model (its samples are decoded)
    batches = []
    shown = progress is not None and (state is None or state.is_main_process)
    bar = tqdm(total=len(indices), desc=progress, unit="image", disable=not shown)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed + i) for i in chunk]
        images = pipeline(
            batch_size=len(chunk), generator=generators, num_inference_steps=num_inference_steps, output_type="pt"
        ).images
        batches.append(to_uint8(images))
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(batches) if batches else np.zeros((0, channels, size, size), np.uint8)


def score(
    generated: Features,
    reference: ReferenceStatistics,
    metrics: tuple[str, ...],
    *,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """The requested metrics of generated features against the reference (same extractor, checked)."""
    if generated.extractor != reference.extractor or generated.features.shape[1] != reference.features.shape[1]:
        raise ValueError(
            f"Features from {generated.extractor} cannot be compared with reference statistics from "
            f"{reference.extractor}."
        )
    values: dict[str, float] = {}
    if "fid" in metrics:
        values["fid"] = frechet_distance(*gaussian_statistics(generated.features), reference.mu, reference.sigma)
    if "kid" in metrics:
        values["kid_mean"], values["kid_std"] = kid(
            generated.features, reference.features, subset_size=kid_subset_size, seed=seed
        )
    if "pr" in metrics:
        values["precision"], values["recall"] = precision_recall(reference.features, generated.features)
    if "is" in metrics:
        if generated.probabilities is None:
            raise ValueError(
                f"The Inception Score needs class probabilities, which {reference.extractor} does not give."
            )
        values["inception_score_mean"], values["inception_score_std"] = inception_score(generated.probabilities)
    return values


def warn_if_few_samples(num_samples: int, metrics) -> None:
    if "fid" in metrics and num_samples < RELIABLE_FID_SAMPLES:
        logger.warning(
            "FID from %d images is biased upwards (papers use 50,000; below %d the bias is large): compare it only "
            "with FIDs from the same number of images and the same extractor.", num_samples, RELIABLE_FID_SAMPLES,
        )  # fmt: skip


_DEFAULTS = EvalConfig()  # the one place the scoring defaults live, shared with `ddpm-hub eval` and training


def evaluate_model(
    model: str,
    reference: str,
    *,
    num_samples: int = _DEFAULTS.num_samples,
    sampler: str = _DEFAULTS.sampler,
    num_inference_steps: int | None = _DEFAULTS.num_inference_steps,
    metrics: str | tuple[str, ...] = _DEFAULTS.metrics,
    features: str = _DEFAULTS.features,
    batch_size: int = _DEFAULTS.batch_size,
    seed: int = _DEFAULTS.seed,
    nll_steps: int | None = _DEFAULTS.nll_steps,
    revision: str | None = None,
    reference_config: str | None = None,
    image_column: str | None = None,
    max_reference_images: int | None = None,
    resolution: int | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    save_images: str | None = None,
    noise_level: int = 0,
) -> dict[str, Any] | None:
    """Sample (or read) images of `model` and score them against `reference`; see `ddpm-hub eval --help`.

    The scoring arguments are the fields of `ddpm_hub.config.EvalConfig` (`**dataclasses.asdict(eval_config)`);
    `num_inference_steps=None` samples at the pipeline's own count (a distilled student's), else 50. With "nll" in
    `metrics`, the reference images' bits per dimension under the model are measured too (`score_likelihood`). A
    super-resolution model upscales the first `num_samples` reference images, downsampled, at `noise_level`, and is
    scored beside bicubic upscaling (`evaluation/upscaler.py`).
    Returns the result record on the main process and `None` on the others.
    """
    # 1. Arguments, checked before anything is loaded.
    metrics = metrics if isinstance(metrics, str) else ",".join(metrics)
    metrics = EvalConfig(
        num_samples, sampler, num_inference_steps, metrics, features, batch_size, seed, nll_steps
    ).validate()
    sample_metrics = tuple(m for m in metrics if m in SAMPLE_METRICS)
    model_path = Path(model)
    images_folder = _check_sources(model, reference)
    if "nll" in metrics and images_folder:
        raise ValueError(f"--metrics nll needs a model; MODEL {model!r} is a folder of images.")
    upscaler_metrics = [name for name in metrics if name in UPSCALER_METRICS]
    if images_folder and upscaler_metrics:
        raise ValueError(
            f"--metrics {','.join(upscaler_metrics)} score a super-resolution model against the originals of its "
            "inputs; MODEL is a folder of images."
        )
    if not images_folder:
        check_sample_count(num_samples, features, sample_metrics)
    # The reference is found and fingerprinted before any model is loaded or any image sampled.
    identity, reference_images = reference_source(
        reference, dataset_config_name=reference_config, image_column=image_column, max_images=max_reference_images
    )

    from accelerate import PartialState

    # Several processes without CUDA: accelerate only sets up (gloo) collectives when told it runs on the CPU.
    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    from ..devices import resolve_device

    run_device = state.device if state.num_processes > 1 else resolve_device(device)
    pipeline = None if images_folder else _load_pipeline(model, revision, run_device)
    if pipeline is not None and pipeline.is_upscaler:
        if "nll" in metrics:
            raise ValueError(
                "--metrics nll scores a model that generates from noise; a super-resolution model's likelihood is "
                "conditional on its low-resolution input (use psnr, ssim, consistency, fid)."
            )
        return _evaluate_upscaler(
            _sampling_pipeline(pipeline, sampler), model, identity, reference_images, metrics, state, run_device,
            num_samples=num_samples, sampler=sampler, num_inference_steps=num_inference_steps, features=features,
            batch_size=batch_size, seed=seed, cache_dir=cache_dir, save_images=save_images, noise_level=noise_level,
        )  # fmt: skip
    if upscaler_metrics:
        raise ValueError(
            f"--metrics {','.join(upscaler_metrics)} score a super-resolution model (one with a low_resolution); "
            f"{model!r} generates from noise."
        )
    # Fails here, before sampling, if it cannot load.
    extractor = get_extractor(features, run_device, batch_size) if sample_metrics else None
    if "nll" in metrics:
        check_likelihood_inputs(pipeline, resolution)

    record: dict[str, Any] = {"model": str(model), "metrics": list(metrics)}
    if sample_metrics:
        # 2.-3. Sample (or read) images, and score them against the reference's statistics on the main process.
        if images_folder:
            images = (*_read_images(model_path, resolution), None)
            check_sample_count(len(images[0]), features, metrics, flag="the number of images in MODEL")
        else:
            images = _sample_images(pipeline, sampler, num_samples, batch_size, seed, num_inference_steps, state)
        if state.is_main_process:
            scores = _score_samples(
                images, extractor, identity, reference_images, metrics, cache_dir=cache_dir, seed=seed,
                sampler="images from folder" if images_folder else sampler, save_images=save_images,
            )  # fmt: skip
            record.update(scores)

    # 4. The likelihood of the reference images (every process scores its share).
    if "nll" in metrics:
        _, nll_images = reference_source(
            reference, dataset_config_name=reference_config, image_column=image_column, max_images=num_samples
        )
        likelihood = score_likelihood(
            pipeline, nll_images, nll_steps=nll_steps, batch_size=batch_size, seed=seed, state=state
        )
        record.update(likelihood, reference=record.get("reference", identity.description))
    return record if state.is_main_process else None


def _score_samples(images, extractor, identity, reference_images, metrics, *, cache_dir, seed, sampler,
                   save_images) -> dict[str, Any]:  # fmt: skip
    """The sample metrics' entries of an evaluation record, for `images` = (uint8 images, channels, resolution,
    sampling steps or None), on the main process."""
    generated_images, channels, resolution, num_inference_steps = images
    if save_images:
        _save_images(generated_images, save_images)
    warn_if_few_samples(len(generated_images), metrics)
    stats = reference_statistics(
        extractor, identity, resolution=resolution, channels=channels, cache_dir=cache_dir,
        images=lambda: reference_images(resolution, channels),
    )  # fmt: skip
    values = score(extractor.extract(generated_images), stats, metrics, seed=seed)
    return dict(
        extractor=extractor.name, feature_dim=extractor.dim, num_images=len(generated_images), resolution=resolution,
        sampler=sampler, num_inference_steps=num_inference_steps, seed=seed, reference=stats.source,
        reference_images=stats.num_images, reference_fingerprint=stats.fingerprint, **values,
    )  # fmt: skip


def check_likelihood_inputs(pipeline, resolution: int | None) -> None:
    """`--metrics nll` scores reference images at the model's own size, under a pixel model (one-line errors)."""
    from ..likelihood.nll import bound_variance_type, check_pixel_model

    check_pixel_model(pipeline)
    bound_variance_type(pipeline)
    size = pipeline.image_shape[1]
    if resolution is not None and resolution != size:
        raise ValueError(
            f"--metrics nll scores images at the model's own size, {size}px; --resolution {resolution} asks for "
            "another (bits per dimension of resized images are another quantity)."
        )


def score_likelihood(
    pipeline, images, *, nll_steps: int | None, batch_size: int, seed: int, state=None
) -> dict[str, Any]:
    """The `nll_*` entries of an evaluation record: the bits per dimension of the reference `images`
    (`images(resolution, channels)`, from `reference_source`) at the model's resolution, split across the processes
    of `state`; image i's noise comes from seed + i."""
    from ..likelihood import NegativeLogLikelihood, negative_log_likelihood

    channels, size, _ = pipeline.image_shape
    images = images(size, channels)
    options = dict(num_steps=nll_steps, batch_size=batch_size, progress=state is None or state.is_main_process)
    if state is None or state.num_processes == 1:
        return negative_log_likelihood(pipeline, images, seed=seed, **options).record()
    from accelerate.utils import gather_object

    with state.split_between_processes(list(range(len(images)))) as share:
        mine = negative_log_likelihood(pipeline, images[share[0] : share[-1] + 1], seed=seed + share[0], **options)
    parts = gather_object([mine])
    merged = NegativeLogLikelihood(
        per_image=torch.cat([part.per_image for part in parts]), prior=torch.cat([part.prior for part in parts]),
        decoder=torch.cat([part.decoder for part in parts]), num_steps=mine.num_steps,
        variance_type=mine.variance_type,
    )  # fmt: skip
    return merged.record()


def _read_images(folder: Path, resolution: int | None) -> tuple[np.ndarray, int, int]:
    """`(images, channels, resolution)` of a folder of images to score, centre-cropped to `resolution`."""
    from ..data import load_images

    if resolution is None:
        resolution = _first_image_size(folder)
    loaded = load_images(train_data_dir=str(folder), resolution=resolution, center_crop=True).pixels
    return np.asarray(loaded), loaded.shape[1], resolution


def _load_pipeline(model, revision, device):
    """The pipeline `model` on `device`, with its training scheduler (nll needs it) and no progress bars."""
    from ..pipeline import DDPMHubPipeline
    from ..safe_loading import check_local_model, weights_kwargs

    check_local_model(model, "MODEL")
    pipeline = DDPMHubPipeline.from_pretrained(model, revision=revision, **weights_kwargs()).to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _sampling_pipeline(pipeline, sampler: str):
    """A pipeline that shares `pipeline`'s parts and samples with `sampler`."""
    from ..assembly import PipelineParts

    return PipelineParts.of(pipeline).pipeline(sampler)


def _sample_images(pipeline, sampler, num_samples, batch_size, seed, num_inference_steps, state):
    """`(images, channels, resolution, steps)` sampled from `pipeline` with `sampler` (this process's share of the
    seeds); `num_inference_steps=None` takes the pipeline's own count (a distilled student's), else 50."""
    from ..sampling import default_steps

    sampling = _sampling_pipeline(pipeline, sampler)  # `pipeline` keeps the training scheduler (for nll)
    channels, resolution, _ = sampling.image_shape  # a latent model's images, not its latents
    steps = default_steps(sampling, requested=num_inference_steps)
    images = generate_images(
        sampling, num_samples, batch_size=batch_size, seed=seed, num_inference_steps=steps, state=state,
        progress=f"Sampling {num_samples} images ({sampler}, {steps} steps)",
    )  # fmt: skip
    return images, channels, resolution, steps


def _evaluate_upscaler(pipeline, model, identity, reference_images, metrics, state, device, *, num_samples,
                       sampler, num_inference_steps, features, batch_size, seed, cache_dir, save_images,
                       noise_level):  # fmt: skip
    """`evaluate_model` for a super-resolution model: its first `num_samples` reference images are downsampled,
    upscaled (each process its share) and scored with bicubic upscaling beside them (`evaluation/upscaler.py`)."""
    from ..sampling import default_steps
    from .upscaler import bicubic_images, fidelity, low_res_inputs, upscale_images

    channels, resolution, _ = pipeline.image_shape
    steps = default_steps(pipeline, requested=num_inference_steps)
    pipeline.prepare_noise_levels(noise_level, 1)  # a level it was not trained with fails before anything is read
    feature_metrics = tuple(name for name in metrics if name not in UPSCALER_METRICS)
    extractor = get_extractor(features, device, batch_size) if feature_metrics else None
    pixels = reference_images(resolution, channels)  # every reference image: the statistics need them all
    originals = np.asarray(pixels[:num_samples])
    if feature_metrics:
        check_sample_count(len(originals), features, metrics, flag="the number of reference images upscaled")
    low_res = low_res_inputs(originals, pipeline.low_resolution)
    upscale = lambda share: upscale_images(  # noqa: E731
        pipeline, low_res, share, batch_size=batch_size, seed=seed, num_inference_steps=steps, noise_level=noise_level
    )  # fmt: skip
    images = in_shares(list(range(len(originals))), upscale, state)
    if not state.is_main_process:
        return None
    if save_images:
        _save_images(images, save_images)
    warn_if_few_samples(len(images), metrics)
    baseline = bicubic_images(low_res, resolution)
    pixel_metrics = [name for name in metrics if name in UPSCALER_METRICS]
    values = fidelity(images, originals, low_res, pixel_metrics)
    values["bicubic"] = fidelity(baseline, originals, low_res, pixel_metrics)
    stats = None
    if feature_metrics:
        stats = reference_statistics(
            extractor, identity, resolution=resolution, channels=channels, cache_dir=cache_dir, images=pixels
        )
        values.update(score(extractor.extract(images), stats, feature_metrics, seed=seed))
        values["bicubic"].update(score(extractor.extract(baseline), stats, feature_metrics, seed=seed))
    return dict(
        model=str(model), upscaler=f"{pipeline.low_resolution}px to {resolution}px", noise_level=noise_level,
        extractor=extractor.name if extractor else None, num_images=len(images), resolution=resolution,
        sampler=sampler, num_inference_steps=steps, seed=seed,
        reference=identity.description, reference_images=stats.num_images if stats else len(pixels),
        metrics=list(metrics), **values,
    )  # fmt: skip


def _check_sources(model: str, reference: str) -> bool:
    """Whether MODEL is a folder of images; `ValueError` for an unusable MODEL or --reference folder."""
    model_path = Path(model)
    images_folder = model_path.is_dir() and not (model_path / "model_index.json").is_file()
    if images_folder and not has_images(model_path):
        raise ValueError(f"MODEL {model!r} is neither a pipeline folder (no model_index.json) nor a folder of images.")
    shards = is_shard_reference(reference)
    reference_is_folder = Path(reference).exists() and is_image_folder(reference) and not shards
    if Path(reference).is_file() and not shards:
        raise ValueError(
            f"--reference {reference!r} is a file; give a folder of images, a built-in set or a data set id."
        )
    if reference_is_folder and not has_images(Path(reference)):
        raise ValueError(
            f"--reference {reference!r} holds no image files (none of the {len(image_extensions())} extensions the "
            "image loader reads)."
        )
    return images_folder


def has_images(folder: Path) -> bool:
    return any(p.is_file() and is_image_file(p) for p in folder.rglob("*"))


def _first_image_size(folder: Path) -> int:
    import PIL.Image

    for path in sorted(folder.rglob("*")):
        if path.is_file() and is_image_file(path):
            with PIL.Image.open(path) as image:
                return min(image.size)
    raise ValueError(f"MODEL folder {str(folder)!r} holds no images.")


def _save_images(images: np.ndarray, folder: str) -> None:
    import PIL.Image

    from ..files import save_image

    digits = max(5, int(math.log10(max(len(images), 1))) + 1)
    for i, pixels in enumerate(images):
        array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
        save_image(PIL.Image.fromarray(array), os.path.join(folder, f"{i:0{digits}d}.png"))


def format_table(result: dict[str, Any]) -> str:
    """The result as a small aligned table: one metric a line, then the settings that produced it. An upscaler's
    metrics have two columns, the model's and bicubic upscaling's (the baseline)."""
    names = {
        "psnr": "PSNR (dB)", "ssim": "SSIM", "consistency": "consistency (MSE)",
        "fid": "FID", "kid_mean": "KID (mean)", "kid_std": "KID (std)", "precision": "precision", "recall": "recall",
        "inception_score_mean": "IS (mean)", "inception_score_std": "IS (std)",
    }  # fmt: skip
    baseline = result.get("bicubic")
    columns = [result] if baseline is None else [result, baseline]
    rows = [("", "model", "bicubic")] if baseline is not None else []
    rows += [
        (label, *(f"{column[key]:.6f}" if key.startswith(("kid", "consistency")) else f"{column[key]:.4f}"
                  for column in columns))
        for key, label in names.items()
        if key in result
    ]  # fmt: skip
    if "num_images" in result:  # scored images (not only the likelihood)
        rows += _settings_rows(result)
    if "nll_bits_per_dim" in result:
        rows += [
            ("NLL (bits/dim)", f"{result['nll_bits_per_dim']:.4f} ± {result['nll_bits_per_dim_sem']:.4f}"),
            (
                "NLL bound",
                f"{result['nll_images']} images of {result['reference']}, {result['nll_steps']} steps, "
                f"{result['nll_variance']} variance, prior term {result['nll_prior_bits']:.2g}",
            ),
        ]
    # Every cell but a row's last is padded to its column's width, so long settings do not widen the metric columns.
    widths = [max((len(row[i]) for row in rows if i < len(row) - 1), default=0) for i in range(3)]
    return "\n".join("  ".join([*(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])), row[-1]]) for row in rows)


def _settings_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The table's rows that say how the scored images were made and scored."""
    settings = [
        ("upscaler", f"{result.get('upscaler')}, noise level {result.get('noise_level')}"),
        ("extractor", result.get("extractor")),
        ("images", str(result["num_images"])),
        ("resolution", f"{result['resolution']}px"),
        (
            "sampler",
            f"{result['sampler']}"
            + (f", {result['num_inference_steps']} steps" if result.get("num_inference_steps") else ""),
        ),
        ("reference", f"{result['reference']} ({result['reference_images']} images)"),
    ]
    return [(label, value) for label, value in settings if result.get(label) or label not in ("upscaler", "extractor")]
