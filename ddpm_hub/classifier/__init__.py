"""Classifier guidance: a noise-aware classifier of a diffusion model's x_t, built for a model, loaded by name.

The guidance itself lives in the shipped pipeline (`ddpm_hub/pipeline_guidance.py`), so that a pipeline loaded
without ddpm-hub can be guided by a classifier passed to it. A classifier is a model of its own, kept apart from
the diffusion model's folder: one diffusion model may be steered by several classifiers (other label sets, other
data), each trained after the fact without touching the model's repo, and pushed to a repo of its own.

    classifier = NoiseAwareClassifier.from_pretrained("org/emoji-ddpm-classifier")
    images = pipe(class_labels="Food & Drink", classifier=classifier, classifier_scale=4.0).images
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..pipeline_guidance import schedule_fingerprint
from .model import AttentionPool2d, ClassifierOutput, NoiseAwareClassifier

__all__ = [
    "AttentionPool2d",
    "ClassifierOutput",
    "NoiseAwareClassifier",
    "classifier_for",
    "load_classifier",
    "new_classifier",
]

# Channel multipliers of the levels, as ADM's classifiers widen with depth (its 64 px classifier: 1, 2, 3, 4).
CHANNEL_MULTIPLIERS = (1, 2, 3, 4, 4, 4)
# Attention in the levels at or below this resolution, where its cost is small (ADM: 32, 16 and 8).
ATTENTION_RESOLUTION = 16


def classifier_for(pipeline, label_names: list[str], **architecture) -> NoiseAwareClassifier:
    """A new `NoiseAwareClassifier` for the samples of `pipeline` (a `DDPMHubPipeline`); see `new_classifier`."""
    return new_classifier(
        pipeline.sample_shape,
        pipeline.scheduler.config,
        label_names,
        latent_scaling_factor=pipeline.latent_scaling_factor,
        **architecture,
    )


def new_classifier(
    sample_shape: tuple[int, int, int],
    scheduler_config,
    label_names: list[str],
    *,
    latent_scaling_factor: float | None = None,
    width: int = 64,
    layers_per_block: int = 2,
    attention_head_dim: int = 32,
    norm_num_groups: int | None = None,
    dropout: float = 0.0,
    diffusion_model: str | None = None,
) -> NoiseAwareClassifier:
    """A new `NoiseAwareClassifier` of a diffusion model's samples of `sample_shape` (channels, height, width: a
    latent model's latents, with its `latent_scaling_factor`) under the noise schedule of `scheduler_config`: levels
    down to an 8x8 map (or the sample size, if smaller), `width` x (1, 2, 3, 4, 4, 4) channels."""
    channels, size, _ = sample_shape
    levels = 1
    while size // 2 ** (levels - 1) > 8 and size % 2**levels == 0 and levels < len(CHANNEL_MULTIPLIERS):
        levels += 1
    block_out_channels = tuple(width * multiplier for multiplier in CHANNEL_MULTIPLIERS[:levels])
    down_block_types = tuple(
        "AttnDownBlock2D" if size // 2**level <= ATTENTION_RESOLUTION else "DownBlock2D" for level in range(levels)
    )
    return NoiseAwareClassifier(
        sample_size=size,
        in_channels=channels,
        label_names=list(label_names),
        block_out_channels=block_out_channels,
        down_block_types=down_block_types,
        layers_per_block=layers_per_block,
        attention_head_dim=min(attention_head_dim, width),
        norm_num_groups=norm_num_groups or min(32, width),
        dropout=dropout,
        noise_schedule=schedule_fingerprint(scheduler_config),
        num_train_timesteps=scheduler_config["num_train_timesteps"],
        latent=latent_scaling_factor is not None,
        latent_scaling_factor=latent_scaling_factor,
        diffusion_model=diffusion_model,
    )


# Hub ids are "org/name"; anything else must be an existing local folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_classifier(name: str, revision: str | None = None, flag: str = "--classifier") -> NoiseAwareClassifier:
    """Load a `NoiseAwareClassifier` from a folder or Hub id (safetensors only), in eval mode; `ValueError` in one
    line if `name` is neither, or is not a classifier's folder."""
    from ..safe_loading import check_local_model, weights_kwargs

    folder = Path(name).expanduser()
    if not folder.exists():
        if not _HUB_ID.match(name):
            raise ValueError(f"{flag} {name!r} is neither an existing folder nor a Hub id like 'org/name'.")
    else:
        check_local_model(name, flag)
        config = folder / NoiseAwareClassifier.config_name
        if (folder / "model_index.json").is_file():
            raise ValueError(f"{flag} {name!r} is a pipeline folder; give the folder of a classifier (config.json).")
        try:
            class_name = json.loads(config.read_text(encoding="utf-8")).get("_class_name")
        except (OSError, ValueError, AttributeError):
            class_name = None
        if class_name != NoiseAwareClassifier.__name__:
            raise ValueError(
                f"{flag} {name!r} is not a classifier's folder: its {config.name} does not name "
                f"{NoiseAwareClassifier.__name__} (train one with `ddpm-hub train-classifier`)."
            )
    return NoiseAwareClassifier.from_pretrained(os.fspath(name), revision=revision, **weights_kwargs()).eval()
