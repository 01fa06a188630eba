"""`ddpm-hub train-classifier --pretrained_model_name_or_path MODEL ...`: parse, check everything cheap, train.

    ddpm-hub train-classifier --pretrained_model_name_or_path emoji-ddpm --dataset_name twemoji --class_conditional \\
        --output_dir emoji-ddpm-classifier --max_train_steps 5000 --train_batch_size 64 --mixed_precision bf16
"""

from __future__ import annotations

import dataclasses
import sys

from ..arguments import one_line, parse_config
from ..config import ModelConfig, TrainConfig
from .config import CLASSIFIER_LEARNING_RATE, CONFIG_TYPES, ClassifierConfig

PROG = "ddpm-hub train-classifier"


def check_run_flags(run: TrainConfig) -> None:
    """Training flags that apply to a UNet's run only."""
    if run.eval_steps or run.eval_epochs:
        raise ValueError(
            "--eval_steps and --eval_epochs score a diffusion model's samples; a classifier's accuracy by noise level "
            "is measured at the end, on held-out images (--validation_images, --validation_data_dir)."
        )
    if run.gradient_checkpointing or run.enable_xformers_memory_efficient_attention or run.compile:
        raise ValueError(
            "--gradient_checkpointing, --enable_xformers_memory_efficient_attention and --compile apply to a UNet's "
            "training; the classifier trains without them."
        )
    if run.post_hoc_ema:
        raise ValueError(
            "--post_hoc_ema keeps snapshots for `ddpm-hub ema`, which rebuilds a diffusion pipeline; a classifier "
            "keeps one EMA (--use_ema, --ema_max_decay)."
        )


def diffusion_model_config(config: ClassifierConfig, cache_dir: str | None) -> tuple[ModelConfig, list[str] | None]:
    """What the run reads of the diffusion model: its UNet config and schedule (the plan of a fine-tuning run, whose
    weights are loaded only for previews), its `vae/` and scaling factor if latent, and its classes if any."""
    from ..pipeline import DDPMHubPipeline, labels_in_id_order
    from ..safe_loading import check_local_model

    source = config.pretrained_model_name_or_path
    check_local_model(source, "--pretrained_model_name_or_path")
    try:
        index = DDPMHubPipeline.load_config(source, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        message = f"--pretrained_model_name_or_path {source!r} is not a loadable pipeline: {one_line(error)}"
        raise ValueError(message) from error
    if index.get("low_resolution") is not None:
        raise ValueError(
            f"--pretrained_model_name_or_path {source!r} is a super-resolution model, which upscales given images; "
            "classifier guidance steers a model that generates from noise: train the classifier for the base model."
        )
    model = ModelConfig(pretrained_model_name_or_path=source)
    vae = index.get("vae")
    if isinstance(vae, (list, tuple)) and any(vae):  # diffusers writes [null, null] for an absent optional one
        factor = index.get("latent_scaling_factor")
        model = dataclasses.replace(model, vae_name_or_path=source, vae_subfolder="vae", latent_scaling_factor=factor)
    names = index.get("label_names")
    return model, labels_in_id_order(names) if names else None


def main(argv: list[str] | None = None) -> int:
    classifier, data, run, hub = parse_config(
        CONFIG_TYPES,
        argv,
        prog=PROG,
        description="Train a noise-aware classifier of a diffusion model's x_t, for classifier guidance.",
    )
    from ..data.shards import resolve_train_shards
    from ..errors import PushError, SetupError, reported_as_setup_errors
    from ..files import NonFiniteWeightsError, WriteError
    from ..train import run_parts
    from ..train_step import DivergedError
    from .trainer import ClassifierTrainer

    try:
        with reported_as_setup_errors():
            check_run_flags(run)
            model, label_names = diffusion_model_config(classifier, data.cache_dir)
        data = dataclasses.replace(data, class_conditional=True)  # the images' own labels: sub-folders, a column
        if run.learning_rate is None:
            run = dataclasses.replace(run, learning_rate=CLASSIFIER_LEARNING_RATE)
        shards = resolve_train_shards(data.train_shards)
        trainer = ClassifierTrainer(
            classifier, model, data, run, hub, diffusion_label_names=label_names, shards=shards,
            parts=run_parts(model, run, shards, trains_denoiser=False),
        )  # fmt: skip
        trainer.run()
    except (SetupError, PushError, DivergedError, NonFiniteWeightsError, WriteError) as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, SetupError) else 1
    return 0
