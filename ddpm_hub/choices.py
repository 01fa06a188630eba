"""The accepted values of every choice flag, as plain names, and the small checks on them: what `config.py` and the
CLI read. Nothing here imports torch, diffusers or any module of ddpm-hub, so that parsing flags (and `--help`) is
fast.

Some choices belong to the code that implements them and are named here too (tests/test_layers.py checks that the
two agree): `SAMPLERS` and `COMPILE_MODES` (`pipeline_steps.py`, which travels beside the weights and imports
nothing of ddpm-hub), `PREDICTION_TYPES` (`pipeline_parameterization.py`, the same), `PRESETS` (`models.py`, the UNet
specs) and `BUILTIN_DATASETS` (`data/images.py`, their loaders).
"""

from __future__ import annotations

# User-facing names -> diffusers' `beta_schedule`. diffusers' own names are accepted as they are.
BETA_SCHEDULES: dict[str, str] = {
    "linear": "linear",  # Ho et al. 2020: beta from 1e-4 to 0.02
    "cosine": "squaredcos_cap_v2",  # Nichol & Dhariwal 2021, eq. 17 (s = 0.008, beta capped at 0.999)
    "quadratic": "scaled_linear",  # sqrt(beta) linear, as in latent diffusion
    "sigmoid": "sigmoid",  # sigmoid over [-6, 6] scaled to [beta_start, beta_end] (Jabri et al. 2022 flavour)
    "scaled_linear": "scaled_linear",
    "squaredcos_cap_v2": "squaredcos_cap_v2",
    "laplace": "laplace",  # Hang et al. 2024, importance-sampled around mid SNR
}

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# Improved DDPM (`--variance_type`, `--loss_type`): `likelihood.VARIANCE_TYPES` and `likelihood.LOSS_TYPES`.
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
LOSS_TYPES = ("simple", "hybrid", "vlb")

# Sampler names (`--sampler`, `--preview_sampler`, `--eval_sampler`): the keys of `pipeline_steps.SAMPLERS`.
SAMPLERS = (
    "ddpm", "ddim", "pndm", "plms", "euler", "euler_a", "heun", "lms", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "deis",
)  # fmt: skip
# torch.compile modes (`--compile_mode`): `pipeline_steps.COMPILE_MODES`.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# UNet presets (`--model`): the keys of `models.PRESETS`.
PRESETS = ("ddpm-64", "cats-128", "small", "ldm-churches-8", "sr-16-64", "sr-32-128", "tiny")
# Built-in data sets (`--dataset_name`): the keys of `data.images.BUILTIN_DATASETS`.
BUILTIN_DATASETS = ("twemoji", "shapes")

# Sampling steps of a front end when neither the user nor the model says (a distilled student records its own
# count, which wins; `pipe()` itself defaults to DDPM's 1000): `ddpm-hub sample` and `ddpm-hub eval`, training's
# previews and evaluations (50), the explorer's step-by-step and sampler panels (20: quick enough to watch).
SAMPLE_STEPS = 50
EXPLORER_STEPS = 20

# diffusers.optimization.get_scheduler names (`--lr_scheduler`).
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)

# Feature extractors for the metrics (`--features`, `--eval_features`); see `evaluation/features.py`.
EFFICIENTNET = "efficientnet-lite0"
EFFICIENTNET_BLOCK_WIDTHS = (40, 80, 112, 192, 320)
INCEPTION = "inception"
EXTRACTORS = (EFFICIENTNET, *(f"{EFFICIENTNET}-{c}" for c in EFFICIENTNET_BLOCK_WIDTHS), INCEPTION)

# Metric names for --metrics / --eval_metrics: Fréchet distance, kernel distance, precision/recall, Inception Score
# (scored on samples); the negative log-likelihood of the reference images in bits per dimension (no samples, no
# features); and, for a super-resolution model only, its fidelity to the originals and to its own input
# (evaluation/upscaler.py).
SAMPLE_METRICS = ("fid", "kid", "pr", "is")
UPSCALER_METRICS = ("psnr", "ssim", "consistency")
METRICS = (*SAMPLE_METRICS, "nll", *UPSCALER_METRICS)

__all__ = [
    "BETA_SCHEDULES",
    "EXPLORER_STEPS",
    "SAMPLE_STEPS",
    "BUILTIN_DATASETS",
    "COMPILE_MODES",
    "EFFICIENTNET",
    "EFFICIENTNET_BLOCK_WIDTHS",
    "EXTRACTORS",
    "INCEPTION",
    "LOSS_TYPES",
    "LR_SCHEDULERS",
    "METRICS",
    "PREDICTION_TYPES",
    "PRESETS",
    "SAMPLERS",
    "SAMPLE_METRICS",
    "UPSCALER_METRICS",
    "VARIANCE_TYPES",
    "check_extractor_name",
    "check_sample_count",
    "feature_dim",
    "parse_metrics",
]


def check_extractor_name(name: str) -> str:
    if name not in EXTRACTORS:
        raise ValueError(f"--features {name!r} is not one of: {', '.join(EXTRACTORS)}.")
    return name


def feature_dim(name: str) -> int:
    """The feature dimension of extractor `name`, without loading it."""
    check_extractor_name(name)
    if name == INCEPTION:
        return 2048
    return 1280 if name == EFFICIENTNET else int(name.rsplit("-", 1)[1])


def parse_metrics(text: str | list[str] | tuple[str, ...], flag: str = "--metrics") -> tuple[str, ...]:
    """'fid,kid' -> ('fid', 'kid'); an unknown or empty name is a one-line `ValueError`."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise ValueError(f"{flag} names no metric; choose from: {', '.join(METRICS)}.")
    for name in names:
        if name not in METRICS:
            raise ValueError(f"{flag} {name!r} is not one of: {', '.join(METRICS)}.")
    return tuple(dict.fromkeys(names))


def check_sample_count(num_samples: int, features: str, metrics, flag: str = "--num_samples") -> None:
    """FID needs a full-rank covariance: more images than feature dimensions (one-line `ValueError` otherwise)."""
    dim = feature_dim(features)
    if "fid" in metrics and num_samples <= dim:
        raise ValueError(
            f"{flag} {num_samples} is too few for FID with {features} ({dim}-dimensional features): it needs more "
            f"than {dim} images; raise {flag}, or use a smaller extractor such as {EFFICIENTNET}-112."
        )
