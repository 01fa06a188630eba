"""`train_unconditional.py`: parse the flags, decide what the run is made of, and train.

    accelerate launch train_unconditional.py                       # small model, built-in emoji, a few CPU minutes
    accelerate launch train_unconditional.py --model ddpm-64 --dataset_name huggan/smithsonian_butterflies_subset \\
        --resolution 64 --train_batch_size 64 --mixed_precision bf16 --num_epochs 100

This is the one place that decides: it resolves `--train_shards` once, builds the run's parts from the flags
(latent diffusion for `--vae_name_or_path` or latent shards, learned variances for `--variance_type` and
`--loss_type`, super-resolution for `--low_resolution`, post-hoc EMA for `--post_hoc_ema`) and hands them to
the `Trainer` (`ddpm_hub.training`), which never imports a part itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .arguments import one_line, parse_config
from .choices import UPSCALER_METRICS, parse_metrics
from .config import CONFIG_TYPES, DataConfig, HubConfig, ModelConfig, TrainConfig


def run_parts(model: ModelConfig, run: TrainConfig, shards, *, trains_denoiser: bool = True) -> list:
    """The parts of a run with these flags (`ddpm_hub.training.parts`), in the order the Trainer consults them;
    `trains_denoiser=False` for a run that only reads the diffusion model (`ddpm-hub train-classifier`)."""
    from .improved_ddpm import ImprovedDDPM, uses_improved_ddpm
    from .latents.shards import latent_shards_manifest
    from .latents.space import LatentSpace
    from .posthoc_ema.part import PostHocEMAPart

    parts = []
    latent = model.vae_name_or_path is not None or latent_shards_manifest(shards) is not None
    if latent:
        parts.append(LatentSpace(shards=shards))
    if uses_improved_ddpm(model, run):  # after the latent space: it checks a latent run's flags
        parts.append(ImprovedDDPM(trains_denoiser=trains_denoiser))
    superres = _super_resolution(model, run, latent=latent)
    if superres is not None:
        parts.append(superres)
    if run.post_hoc_ema:
        parts.append(PostHocEMAPart(run.ema_sigma_rels, run.ema_snapshot_steps))
    return parts


def _super_resolution(model: ModelConfig, run: TrainConfig, *, latent: bool):
    """The super-resolution part for `--low_resolution` (or an sr preset), or None; the flags that need one, or
    cannot go with one, are refused here."""
    from .errors import SetupError
    from .superres.part import SuperResolution

    low_resolution = model.low_resolution or _preset_low_resolution(model)
    metrics = parse_metrics(run.eval_metrics)
    if low_resolution is None:
        if model.low_res_noise_max is not None:
            raise SetupError("--low_res_noise_max applies to a super-resolution run: give --low_resolution too.")
        upscaler_metrics = [name for name in metrics if name in UPSCALER_METRICS]
        if upscaler_metrics:
            raise SetupError(
                f"--eval_metrics {','.join(upscaler_metrics)} score a super-resolution run (--low_resolution)."
            )
        return None
    if latent:
        raise SetupError("Latent super-resolution is not supported: --low_resolution trains an upscaler in pixels.")
    if model.variance_type == "learned_range" or model.loss_type != "simple":
        raise SetupError(
            "A super-resolution run trains with a fixed variance and the simple loss: --low_resolution does not go "
            "with --variance_type learned_range or --loss_type hybrid/vlb."
        )
    if "nll" in metrics:
        raise SetupError(
            "--eval_metrics nll scores a model that generates from noise; an upscaler's likelihood is conditional "
            "on its input (use psnr, ssim, consistency, fid)."
        )
    return SuperResolution(low_resolution, model.low_res_noise_max)


def _preset_low_resolution(model: ModelConfig) -> int | None:
    """The low resolution a super-resolution preset is sized for (sr-16-64: 16), when the run uses that preset."""
    from .models import PRESETS

    if model.model_config_name_or_path is not None or model.pretrained_model_name_or_path is not None:
        return None
    return PRESETS[model.model].low_resolution


def train(model_config: ModelConfig, data: DataConfig, run: TrainConfig, hub: HubConfig) -> Path:
    """Train a DDPM as the configs say; returns the output folder holding the saved pipeline."""
    from .data.shards import resolve_train_shards
    from .errors import reported_as_setup_errors
    from .training import Trainer

    shards = resolve_train_shards(data.train_shards)
    with reported_as_setup_errors():
        parts = run_parts(model_config, run, shards)
    return Trainer(model_config, data, run, hub, shards=shards, parts=parts).run()


def main(argv: list[str] | None = None) -> int:
    model_config, data, run, hub = parse_config(
        CONFIG_TYPES,
        argv,
        prog="train_unconditional.py",
        description="Train an unconditional DDPM image model (run with `accelerate launch`).",
    )
    from tqdm.auto import tqdm

    from .errors import PushError, SetupError
    from .files import NonFiniteWeightsError, WriteError
    from .train_step import DivergedError

    try:
        train(model_config, data, run, hub)
    except (SetupError, PushError, DivergedError, NonFiniteWeightsError, WriteError) as error:
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()  # end the progress bar's line, so that the error is a line of its own
        print(f"train_unconditional.py: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, SetupError) else 1
    return 0
