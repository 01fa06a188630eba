"""The typed configuration of `ddpm-hub train-classifier`: what to train (`ClassifierConfig`), plus training's own
data, run and Hub configs, whose flags (data sources and labels, learning rate, EMA, precision, checkpoints,
logging, push) mean here what they mean in `train_unconditional.py`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import DataConfig, HubConfig, TrainConfig

# The classifier's learning rate when --learning_rate is not given: ADM's for its classifiers (guided-diffusion's
# README, classifier training flags).
CLASSIFIER_LEARNING_RATE = 3e-4


@dataclass
class ClassifierConfig:
    """What to train: a noise-aware classifier of one diffusion model's x_t, and how its accuracy is measured."""

    pretrained_model_name_or_path: str = field(
        default=None,
        metadata={
            "help": "The diffusion model to guide (a pipeline folder or Hub id): the classifier reads its x_t, at its "
            "resolution and channels, under its noise schedule, in its VAE's latents for a latent model."
        },
    )
    classifier_width: int = field(
        default=64, metadata={"help": "Channels of the classifier's first level (x 1, 2, 3, 4 down to 8x8)."}
    )
    classifier_layers_per_block: int = field(default=2, metadata={"help": "Residual blocks per level."})
    classifier_attention_head_dim: int = field(default=32, metadata={"help": "Channels per attention head."})
    classifier_dropout: float = field(default=0.0, metadata={"help": "Dropout in the residual blocks."})
    validation_images: int = field(
        default=256,
        metadata={
            "help": "Images held out of an in-memory data set (a seeded random choice, never trained on) to measure "
            "the accuracy by noise level at the end."
        },
    )
    validation_data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Measure the accuracy on this folder of labelled images (class sub-folders, the same classes) "
            "instead; a streamed data set has no held-out share, so it needs this for the accuracy table."
        },
    )
    accuracy_bins: int = field(
        default=10, metadata={"help": "Equal ranges of t in which the held-out accuracy is measured."}
    )
    classifier_scale: float = field(
        default=4.0, metadata={"help": "Guidance scale of the preview grids (guided samples, one row per class)."}
    )

    def validate(self) -> None:
        if not self.pretrained_model_name_or_path:
            raise ValueError(
                "give the diffusion model to guide: ddpm-hub train-classifier --pretrained_model_name_or_path MODEL."
            )
        for name in ("classifier_width", "classifier_layers_per_block", "classifier_attention_head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        if self.validation_images < 0:
            raise ValueError(f"--validation_images must be >= 0, got {self.validation_images}.")
        if not 2 <= self.accuracy_bins <= 1000:
            raise ValueError(f"--accuracy_bins must lie in [2, 1000], got {self.accuracy_bins}.")
        if not 0 <= self.classifier_dropout < 1:
            raise ValueError(f"--classifier_dropout must lie in [0, 1), got {self.classifier_dropout}.")
        if not 0 <= self.classifier_scale < math.inf:  # the previews' guidance refuses it otherwise, mid-run
            raise ValueError(f"--classifier_scale must be a finite number >= 0, got {self.classifier_scale}.")


CONFIG_TYPES = (ClassifierConfig, DataConfig, TrainConfig, HubConfig)
