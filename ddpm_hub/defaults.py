"""Every `None` default of the training flags filled in once, right after parsing and before any heavy work.

The help strings of `config.py` say what each default is; this module is where it is applied, so that the configs
handed to the trainer hold the values the run uses, and `training_config.json` records them as resolved (not as
`null`). A new model gets the defaults below; a `--pretrained_model_name_or_path` run gets its scheduler's own
(read from its small `scheduler_config.json`, no weights loaded).
"""

from __future__ import annotations

import dataclasses

from .config import ModelConfig, TrainConfig

# A new model's diffusion, when the flags are not given (reasons in config.py's help strings).
NEW_MODEL_SCHEDULE = {
    "ddpm_beta_schedule": "cosine",  # better than linear at low resolution (Nichol & Dhariwal 2021)
    "ddpm_num_steps": 1000,  # T of Ho et al. 2020
    "prediction_type": "v_prediction",  # stable at every noise level (Salimans & Ho 2022)
}
# The peak learning rate of a model that is not a preset (a preset brings its own, see models.py).
DEFAULT_LEARNING_RATE = 1e-4


def pretrained_schedule(source: str, cache_dir: str | None = None) -> dict[str, object]:
    """The schedule flags of a pretrained pipeline's scheduler (its config file only); `ValueError` if unreadable."""
    from diffusers import DDPMScheduler

    try:
        config = DDPMScheduler.from_config(
            DDPMScheduler.load_config(source, subfolder="scheduler", cache_dir=cache_dir)
        ).config
    except (OSError, ValueError) as error:
        raise ValueError(f"--pretrained_model_name_or_path {source!r} is not a loadable pipeline: {error}") from error
    return {
        "ddpm_beta_schedule": config.beta_schedule,
        "ddpm_num_steps": config.num_train_timesteps,
        "prediction_type": config.prediction_type,
        "variance_type": config.variance_type,
    }


def preset_learning_rate(model: ModelConfig) -> float:
    """The learning rate that goes with `--model` (a preset's own), or the default for a config or a pretrained UNet."""
    if model.model_config_name_or_path is not None or model.pretrained_model_name_or_path is not None:
        return DEFAULT_LEARNING_RATE
    from .models import get_preset

    return get_preset(model.model).learning_rate


def resolve_model_defaults(model: ModelConfig, cache_dir: str | None = None) -> ModelConfig:
    """A copy of `model` with the schedule flags filled in where they were `None` (a no-op once they are set)."""
    missing = [name for name in (*NEW_MODEL_SCHEDULE, "variance_type") if getattr(model, name) is None]
    if not missing:
        return model
    if model.pretrained_model_name_or_path is not None:
        defaults = pretrained_schedule(model.pretrained_model_name_or_path, cache_dir)
    else:
        # Improved DDPM: the bound objectives train a learned variance unless a fixed one is asked for.
        variance_type = "fixed_small" if model.loss_type == "simple" else "learned_range"
        defaults = {**NEW_MODEL_SCHEDULE, "variance_type": variance_type}
    return dataclasses.replace(model, **{name: defaults[name] for name in missing})


def resolve_defaults(
    model: ModelConfig, run: TrainConfig, cache_dir: str | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """Copies of `model` and `run` with the schedule flags and the learning rate filled in where they were `None`."""
    model = resolve_model_defaults(model, cache_dir)
    if run.learning_rate is None:
        run = dataclasses.replace(run, learning_rate=preset_learning_rate(model))
    return model, run


def tracker_hparams(values: dict) -> dict:
    """`values` as trackers take them: TensorBoard's hparams hold only scalars and strings, so `None` is "none"
    and a list is its text (training_config.json keeps the JSON values themselves)."""
    return {
        key: "none" if value is None else value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in values.items()
    }
