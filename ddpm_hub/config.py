"""The typed configuration of `train_unconditional.py`.

Flag names follow diffusers' `examples/unconditional_image_generation/train_unconditional.py`, so its command
lines work here. *What to train* (model, diffusion, data) is kept apart from *how to run it* (optimisation,
precision, checkpoints, logging) and *where to share it* (Hub). Defaults are chosen so that the command with no
flags trains a small model on the built-in emoji set on a laptop CPU in a few minutes; the README shows the
settings for a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from typing import Literal

from .choices import (
    BETA_SCHEDULES,
    BUILTIN_DATASETS,
    COMPILE_MODES,
    EFFICIENTNET,
    EXTRACTORS,
    LOSS_TYPES,
    LR_SCHEDULERS,
    PREDICTION_TYPES,
    PRESETS,
    SAMPLE_STEPS,
    SAMPLERS,
    VARIANCE_TYPES,
    check_sample_count,
    parse_metrics,
)


def _positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be positive, got {value}.")


def _non_negative(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name} must be zero or positive, got {value}.")


def check_resolution(resolution: int | None, flag: str = "--resolution") -> None:
    """Refuse an image size that no image can be decoded at, before anything is read: more pixels than PIL's
    decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, 89,478,485 by default: 9459 x 9459)."""
    import PIL.Image

    limit = PIL.Image.MAX_IMAGE_PIXELS or 89_478_485
    if resolution is not None and resolution * resolution > limit:
        size = 3 * resolution * resolution / 1e9
        raise ValueError(
            f"{flag} {resolution} is too large: one decoded {resolution} x {resolution} image takes {size:,.1f} GB "
            f"(3 channels of 8 bits); the most is {math.isqrt(limit)} (PIL's decompression-bomb limit of {limit:,} "
            "pixels)."
        )


def _one_of(name: str, value, choices) -> None:
    if value is not None and value not in choices:
        raise ValueError(f"--{name} {value!r} is not one of: {', '.join(choices)}.")


@dataclass
class ModelConfig:
    """What to train: the UNet and the diffusion process."""

    model: str = field(default="small", metadata={"help": f"UNet preset: {', '.join(PRESETS)}."})
    model_config_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A UNet2DModel config (config.json, its folder, a pipeline folder or Hub id); replaces --model."
        },
    )
    pretrained_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Fine-tune the UNet (and keep the noise schedule) of this pipeline folder or Hub id."},
    )
    resolution: int | None = field(
        default=None,
        metadata={"help": "Image size in pixels. Default: the preset's (small: 32, ddpm-64: 64, cats-128: 128)."},
    )
    model_channels: int | None = field(default=None, metadata={"help": "Override: channels of the first level."})
    channel_mult: list[int] | None = field(default=None, metadata={"help": "Override: channel multiplier per level."})
    num_res_blocks: int | None = field(default=None, metadata={"help": "Override: residual blocks per level."})
    attention_resolutions: list[int] | None = field(
        default=None, metadata={"help": "Override: feature-map sizes (pixels) with self-attention, e.g. 16 8."}
    )
    dropout: float | None = field(default=None, metadata={"help": "Override: dropout in residual blocks."})
    ddpm_num_steps: int | None = field(default=None, metadata={"help": "Training timesteps T (default 1000)."})
    ddpm_beta_schedule: str | None = field(
        default=None,
        metadata={
            "help": f"Noise schedule: {', '.join(BETA_SCHEDULES)}. Default: cosine for a new model (better than "
            "linear at low resolution, Nichol & Dhariwal 2021), a pretrained model's own."
        },
    )
    prediction_type: str | None = field(
        default=None,
        metadata={
            "help": f"What the UNet predicts: {', '.join(PREDICTION_TYPES)}. Default: v_prediction for a new model "
            "(stable at every noise level, Salimans & Ho 2022), a pretrained model's own."
        },
    )
    rescale_betas_zero_snr: bool = field(
        default=False,
        metadata={"help": "Rescale the schedule to zero terminal SNR (Lin et al. 2023); use with v_prediction."},
    )
    snr_gamma: float = field(
        default=5.0,
        metadata={"help": "Min-SNR loss weighting gamma (Hang et al. 2023: 5 trains ~3x faster); 0 turns it off."},
    )
    class_dropout_prob: float = field(
        default=0.1,
        metadata={
            "help": "Class-conditional runs: share of labels replaced by the null class, so the model also learns to "
            "generate unconditionally, as classifier-free guidance needs (Ho & Salimans 2022 use 0.1-0.2)."
        },
    )
    # --- latent diffusion: train on a VAE's latents (docs/latent.md) ---
    vae_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Train on the latents of this autoencoder (AutoencoderKL or VQModel; a folder or Hub id, offline "
            "from the cache), e.g. stabilityai/sd-vae-ft-mse. --resolution stays the image size; the UNet's sample "
            "size and channels follow the VAE. Latent shards (ddpm-hub prepare --vae_name_or_path) imply their own "
            "VAE: leave it out, or give a copy of the same one. See docs/latent.md."
        },
    )
    vae_subfolder: str | None = field(
        default=None, metadata={"help": "The VAE's subfolder in --vae_name_or_path (vae in a Stable Diffusion repo)."}
    )
    latent_scaling_factor: float | None = field(
        default=None, metadata={"help": "Multiply the latents by this instead of the VAE's config.scaling_factor."}
    )
    # --- learned variances and the variational bound (Improved DDPM) ---
    variance_type: str | None = field(
        default=None,
        metadata={
            "help": f"Variance of each reverse step: {', '.join(VARIANCE_TYPES)}. learned_range: the UNet outputs "
            "twice the channels and learns it between the two fixed ones (Nichol & Dhariwal 2021; needs --loss_type "
            "hybrid or vlb). Default for a new model: learned_range with --loss_type hybrid or vlb, else fixed_small; "
            "a pretrained model's own. See docs/likelihood.md."
        },
    )
    loss_type: str = field(
        default="simple",
        metadata={
            "help": f"Training objective: {', '.join(LOSS_TYPES)}. simple: the MSE of DDPM; hybrid: the MSE plus "
            "--vlb_weight times the variational bound, which trains the variance only; vlb: the bound alone, with "
            "importance-sampled timesteps."
        },
    )
    vlb_weight: float = field(
        default=0.001, metadata={"help": "hybrid: the bound's weight lambda (the paper's 0.001)."}
    )
    # --- super-resolution: train an upscaler (docs/super-resolution.md) ---
    low_resolution: int | None = field(
        default=None,
        metadata={
            "help": "Train a super-resolution model that upscales images of this size to --resolution (SR3): each "
            "training image is downsampled to it (antialiased bicubic), upsampled back (bicubic), noised "
            "(--low_res_noise_max) and given to the UNet beside x_t. Must divide --resolution. The sr-16-64 and "
            "sr-32-128 presets imply theirs."
        },
    )
    low_res_noise_max: int | None = field(
        default=None,
        metadata={
            "help": "Super-resolution: the highest conditioning-augmentation level drawn for the low-resolution "
            "input (uniform in 0..this, a timestep of the noise schedule; 0 = clean inputs, as SR3). Higher makes "
            "an upscaler robust to a base model's artefacts in a cascade (Ho et al. 2021). Default: 100."
        },
    )

    def validate(self) -> None:
        if self.model_config_name_or_path is None and self.pretrained_model_name_or_path is None:
            _one_of("model", self.model, PRESETS)
        _one_of("ddpm_beta_schedule", self.ddpm_beta_schedule, BETA_SCHEDULES)
        _one_of("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _positive(self, "resolution", "model_channels", "num_res_blocks")
        check_resolution(self.resolution)
        _non_negative(self, "snr_gamma")
        if self.ddpm_num_steps is not None and self.ddpm_num_steps < 2:
            raise ValueError(f"--ddpm_num_steps must be at least 2, got {self.ddpm_num_steps}.")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must lie in [0, 1), got {self.dropout}.")
        if not 0 <= self.class_dropout_prob < 1:
            raise ValueError(f"--class_dropout_prob must lie in [0, 1), got {self.class_dropout_prob}.")
        for name in ("channel_mult", "attention_resolutions"):
            values = getattr(self, name)
            if values is not None and any(v <= 0 for v in values):
                raise ValueError(f"--{name} must hold positive integers, got {values}.")
        _positive(self, "latent_scaling_factor")
        if (self.vae_subfolder or self.latent_scaling_factor) and self.vae_name_or_path is None:
            raise ValueError("--vae_subfolder and --latent_scaling_factor need --vae_name_or_path.")
        _positive(self, "low_resolution")
        _non_negative(self, "low_res_noise_max")
        low, size = self.low_resolution, self.resolution
        if low is not None and size is not None and (size % low or low >= size):
            raise ValueError(
                f"--low_resolution {low} must divide --resolution {size} and be smaller (e.g. "
                f"{size // 4} for a 4x upscaler)."
            )
        # --- learned variances and the variational bound (Improved DDPM) ---
        _one_of("variance_type", self.variance_type, VARIANCE_TYPES)
        _one_of("loss_type", self.loss_type, LOSS_TYPES)
        _positive(self, "vlb_weight")
        if self.variance_type is not None:
            check_objective(self.variance_type, self.loss_type)


def check_objective(variance_type: str, loss_type: str, origin: str = "--variance_type") -> None:
    """The pairs of variance and loss that train: a learned variance needs the bound, the hybrid loss a learned
    variance (one-line `ValueError` otherwise)."""
    if variance_type == "learned_range" and loss_type == "simple":
        raise ValueError(
            f"{origin} learned_range needs --loss_type hybrid or vlb: the simple loss gives the variance no gradient."
        )
    if loss_type == "hybrid" and variance_type != "learned_range":
        raise ValueError(
            f"--loss_type hybrid trains a learned variance (its bound term stops the mean's gradient); with "
            f"{origin} {variance_type} it would train nothing more: use learned_range, or --loss_type vlb."
        )


@dataclass
class DataConfig:
    """What to train on."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"Hub dataset id, local dataset path, or a built-in set ({', '.join(BUILTIN_DATASETS)}). "
            "Default: twemoji when --train_data_dir is not given either."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's config, if it has several."})
    train_data_dir: str | None = field(
        default=None, metadata={"help": "A folder of images (read with datasets' imagefolder)."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Column holding the images (default: image)."})
    class_conditional: bool = field(
        default=False,
        metadata={
            "help": "Train a class-conditional model on the data's own labels: the sub-folder of each image with "
            "--train_data_dir, the Unicode emoji category with twemoji, else the data set's 'label' column."
        },
    )
    class_column: str | None = field(
        default=None,
        metadata={
            "help": "Condition on the classes in this column (names or integer ids); implies --class_conditional."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where datasets and models are cached."})
    center_crop: bool = field(default=False, metadata={"help": "Crop the centre instead of a random square."})
    random_flip: bool = field(default=False, metadata={"help": "Flip images left-right at random."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a seeded random subset of this size."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes that decode the images once."}
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader workers. Default: 0 for in-memory data (batches are cheap tensor slices); for streamed "
            "data, which they decode, the cores per process minus one (1 to 8)."
        },
    )
    # --- streamed data (docs/scaling-out.md) ---
    train_shards: list[str] | None = field(
        default=None,
        metadata={
            "help": "Stream WebDataset tar shards instead of decoding a data set up front: a brace pattern "
            "('data/train-{000000..000099}.tar'), a glob, a folder, several of those, or an fsspec URL (hf://, s3://). "
            "Write them with `ddpm-hub prepare`; shards written with --vae_name_or_path train a latent model on "
            "their stored latents (no encoding, the VAE and resolution from their manifest)."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream --dataset_name (a Hub or local datasets data set) instead of decoding it up front."},
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "Streamed data: samples each reader shuffles among (besides the shard order); 0: none."},
    )
    verify_shards: bool = field(
        default=False,
        metadata={
            "help": "Before training, compare every local shard's sha256 with manifest.json's (reads every shard "
            "once); names and sizes are always checked."
        },
    )

    @property
    def is_streamed(self) -> bool:
        return bool(self.train_shards) or self.streaming

    def validate(self) -> None:
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError("Pass either --dataset_name or --train_data_dir, not both.")
        _positive(self, "max_train_samples", "preprocessing_num_workers")
        _non_negative(self, "dataloader_num_workers", "shuffle_buffer_size")
        if self.train_shards and (self.dataset_name is not None or self.train_data_dir is not None):
            raise ValueError("Pass either --train_shards or --dataset_name / --train_data_dir, not both.")
        if self.streaming and (self.train_shards or self.dataset_name is None):
            raise ValueError("--streaming streams --dataset_name; pass a data set name (or use --train_shards alone).")
        if self.verify_shards and not self.train_shards:
            raise ValueError("--verify_shards checks --train_shards against their manifest; give --train_shards.")
        if self.is_streamed and self.max_train_samples is not None:
            raise ValueError(
                "--max_train_samples needs the whole data set up front; with a stream use --max_train_steps."
            )


@dataclass
class EvalConfig:
    """How a model's samples are scored: the flags of `ddpm-hub eval`, and (prefixed `--eval_`) of training."""

    num_samples: int = field(
        default=2048, metadata={"help": "Images to generate and score (FID needs more than the feature dimension)."}
    )
    sampler: str = field(default="ddim", metadata={"help": f"Sampler for the scored images: {', '.join(SAMPLERS)}."})
    num_inference_steps: int | None = field(
        default=None,
        metadata={
            "help": "Sampling steps for the scored images (default: the model's own count if it records one, as a "
            "distilled student does, else 50)."
        },
    )
    metrics: str = field(
        default="fid,kid,pr",
        metadata={
            "help": "Comma-separated: fid, kid, pr (precision/recall), is; nll (the reference images' negative "
            "log-likelihood in bits/dim); for a super-resolution model also psnr, ssim and consistency, each printed "
            "beside bicubic upscaling's."
        },
    )
    features: str = field(
        default=EFFICIENTNET,
        metadata={
            "help": f"Feature extractor: {', '.join(EXTRACTORS)} (efficientnet-lite0 works offline; inception needs "
            "its weights)."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Images per sampling and feature batch."})
    seed: int = field(default=0, metadata={"help": "Image i uses seed + i."})
    # --- likelihood (Improved DDPM) ---
    nll_steps: int | None = field(
        default=None,
        metadata={
            "help": "nll: the bound of the ddpm sampler's process at this many respaced steps (default: every "
            "training timestep, the model's own bound; fewer steps are faster and give a larger number)."
        },
    )

    def validate(self, prefix: str = "") -> tuple[str, ...]:
        """Check every field (flags named `--{prefix}{field}`); returns the parsed metric names."""
        metrics = parse_metrics(self.metrics, f"--{prefix}metrics")
        _one_of(f"{prefix}features", self.features, EXTRACTORS)
        _one_of(f"{prefix}sampler", self.sampler, SAMPLERS)
        for name in ("num_samples", "num_inference_steps", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{prefix}{name} must be positive, got {getattr(self, name)}.")
        # --- likelihood (Improved DDPM) ---
        if self.nll_steps is not None and self.nll_steps < 2:
            raise ValueError(f"--{prefix}nll_steps must be at least 2, got {self.nll_steps}.")
        if self.nll_steps is not None and "nll" not in metrics:
            raise ValueError(f"--{prefix}nll_steps sets how nll is measured; add nll to --{prefix}metrics.")
        return metrics


def _eval_field(name: str, **changes):
    """TrainConfig's `--eval_<name>`: EvalConfig's field (default and help) under the training prefix."""
    source = next(f for f in dataclasses.fields(EvalConfig) if f.name == name)
    return field(
        default=changes.get("default", source.default), metadata={"help": changes.get("help", source.metadata["help"])}
    )


@dataclass
class TrainConfig:
    """How to run: optimisation, precision, checkpoints, previews and logging."""

    output_dir: str = field(
        default="ddpm-model", metadata={"help": "Where the pipeline, checkpoints, samples and logs go."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in an output_dir that holds a run."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for weights, noise, timesteps, data order and previews."})
    train_batch_size: int = field(default=16, metadata={"help": "Batch size per device."})
    eval_batch_size: int = field(default=16, metadata={"help": "Images in each preview grid."})
    num_epochs: int = field(default=6, metadata={"help": "Passes over the data (ignored if --max_train_steps is set)."})
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps to train; overrides --num_epochs."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate after warmup. Default: the preset's (small: 1e-3, ddpm-64: 1e-4), else 1e-4."
        },
    )
    scale_lr: bool = field(
        default=False, metadata={"help": "Multiply the LR by accumulation x batch size x processes."}
    )
    lr_scheduler: str = field(default="cosine", metadata={"help": f"LR schedule: {', '.join(LR_SCHEDULERS)}."})
    lr_warmup_steps: int = field(
        default=100, metadata={"help": "Warmup in optimizer steps (accumulation counted once)."}
    )
    adam_beta1: float = field(default=0.95, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_weight_decay: float = field(default=1e-6, metadata={"help": "AdamW weight decay."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this norm (0 turns clipping off)."})
    use_ema: bool = field(
        default=True, metadata={"help": "Keep an EMA of the weights for previews and the saved model."}
    )
    ema_inv_gamma: float = field(default=1.0, metadata={"help": "EMA warmup inverse gamma."})
    ema_power: float = field(default=3 / 4, metadata={"help": "EMA warmup power."})
    ema_max_decay: float = field(default=0.9999, metadata={"help": "EMA decay ceiling."})
    # --- post-hoc EMA: choose the EMA length after training (docs/training.md#post-hoc-ema) ---
    post_hoc_ema: bool = field(
        default=False,
        metadata={
            "help": "Also track power-function EMAs (Karras et al. 2024) and keep 16-bit snapshots of them, so that "
            "`ddpm-hub ema RUN` can reconstruct the EMA of any length after training (and score a sweep of them)."
        },
    )
    ema_sigma_rels: str = field(
        default="0.05,0.10",
        metadata={"help": "With --post_hoc_ema: the tracked EMAs' relative standard deviations (EDM2's two)."},
    )
    ema_snapshot_steps: int | None = field(
        default=None,
        metadata={"help": "With --post_hoc_ema: a snapshot every N steps (default: a 32nd of the run, and the last)."},
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata={"help": "Mixed precision (default: accelerate config, else no)."}
    )
    allow_tf32: bool = field(default=False, metadata={"help": "Allow TF32 matmuls on Ampere+ GPUs."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory in the UNet."})
    compile: bool = field(
        default=False, metadata={"help": "torch.compile the training step (noise, UNet, loss, backward)."}
    )
    compile_backend: str = field(
        default="inductor", metadata={"help": "torch.compile backend (aot_eager traces without code generation)."}
    )
    compile_mode: str | None = field(
        default=None,
        metadata={
            "help": f"torch.compile mode: {', '.join(COMPILE_MODES)}. Default: reduce-overhead (CUDA graphs) on a "
            "GPU, default elsewhere; CUDA graphs are left out with several processes or gradient accumulation."
        },
    )
    compile_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Compiler cache reused across runs and resumes (default: ~/.cache/ddpm-hub/torch-compile)."},
    )
    channels_last: bool = field(
        default=False,
        metadata={"help": "channels_last memory format (off: NCHW measured faster on an H100, docs/training.md)."},
    )
    max_nonfinite_steps: int = field(
        default=10,
        metadata={
            "help": "Stop after this many consecutive steps skipped for a non-finite loss or gradient (0: never)."
        },
    )
    enable_xformers_memory_efficient_attention: bool = field(
        default=False, metadata={"help": "Use xformers attention (needs xformers; PyTorch SDPA is used otherwise)."}
    )
    checkpointing_steps: int = field(
        default=500, metadata={"help": "Save a resumable checkpoint every N optimizer steps."}
    )
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": 'A checkpoint folder, or "latest".'})
    save_images_epochs: int = field(default=1, metadata={"help": "Save a preview grid every N epochs."})
    save_images_steps: int | None = field(default=None, metadata={"help": "Also save a preview grid every N steps."})
    save_model_epochs: int = field(
        default=10, metadata={"help": "Export the pipeline every N epochs (and at the end)."}
    )
    ddpm_num_inference_steps: int = field(default=SAMPLE_STEPS, metadata={"help": "Sampling steps for preview grids."})
    preview_sampler: str = field(default="ddim", metadata={"help": f"Sampler for previews: {', '.join(SAMPLERS)}."})
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Measure sample quality (FID...) of the EMA weights every N steps; keeps the best in best/."},
    )
    eval_epochs: int | None = field(default=None, metadata={"help": "Measure sample quality every N epochs."})
    eval_num_samples: int = _eval_field("num_samples")
    eval_sampler: str = _eval_field("sampler")
    # Training scores its own model, which records no step count of its own: what `ddpm-hub eval` gives it.
    eval_num_inference_steps: int = _eval_field(
        "num_inference_steps", default=SAMPLE_STEPS, help="Sampling steps for the scored images."
    )
    eval_features: str = _eval_field("features")
    # Precision/recall's k-nearest neighbours are the slowest metric: left out of the evaluations during training.
    eval_metrics: str = _eval_field("metrics", default="fid,kid")
    logger: Literal["tensorboard", "wandb", "none"] = field(default="tensorboard", metadata={"help": "Tracker."})
    logging_dir: str = field(default="logs", metadata={"help": "Tracker folder, relative to output_dir."})
    logging_steps: int = field(default=50, metadata={"help": "Reduce and log the loss every N optimizer steps."})
    local_rank: int = field(default=-1, metadata={"help": "Set by launchers; accepted for compatibility."})
    # --- likelihood (Improved DDPM) ---
    eval_nll_steps: int | None = _eval_field("nll_steps")

    def eval_config(self) -> EvalConfig:
        """The `--eval_*` flags as the `EvalConfig` that `ddpm-hub eval` takes (batch size and seed: the run's)."""
        return EvalConfig(
            num_samples=self.eval_num_samples,
            sampler=self.eval_sampler,
            num_inference_steps=self.eval_num_inference_steps,
            metrics=self.eval_metrics,
            features=self.eval_features,
            batch_size=self.eval_batch_size,
            seed=self.seed,
            nll_steps=self.eval_nll_steps,
        )

    def validate(self) -> None:
        _positive(
            self,
            "train_batch_size",
            "eval_batch_size",
            "num_epochs",
            "max_train_steps",
            "gradient_accumulation_steps",
            "learning_rate",
            "checkpointing_steps",
            "checkpoints_total_limit",
            "save_images_epochs",
            "save_images_steps",
            "save_model_epochs",
            "ddpm_num_inference_steps",
            "logging_steps",
            "eval_steps",
            "eval_epochs",
            "eval_num_samples",
            "eval_num_inference_steps",
            "ema_snapshot_steps",
        )
        _non_negative(self, "lr_warmup_steps", "adam_weight_decay", "max_grad_norm", "max_nonfinite_steps")
        _one_of("compile_mode", self.compile_mode, COMPILE_MODES)
        if (self.compile_mode or self.compile_cache_dir) and not self.compile:
            raise ValueError("--compile_mode and --compile_cache_dir need --compile.")
        if self.compile_mode and self.compile_backend != "inductor":
            raise ValueError(
                f"--compile_mode is for the inductor backend, not --compile_backend {self.compile_backend!r}."
            )
        _one_of("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _one_of("preview_sampler", self.preview_sampler, SAMPLERS)
        metrics = self.eval_config().validate(prefix="eval_")
        if self.eval_steps or self.eval_epochs:
            check_sample_count(self.eval_num_samples, self.eval_features, metrics, "--eval_num_samples")
        if (self.ema_snapshot_steps is not None or self.ema_sigma_rels != "0.05,0.10") and not self.post_hoc_ema:
            raise ValueError("--ema_sigma_rels and --ema_snapshot_steps need --post_hoc_ema.")
        if not 0 < self.ema_max_decay < 1:
            raise ValueError(f"--ema_max_decay must lie in (0, 1), got {self.ema_max_decay}.")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must lie in [0, 1), got {getattr(self, name)}.")
        if self.enable_xformers_memory_efficient_attention and importlib.util.find_spec("xformers") is None:
            raise ValueError("--enable_xformers_memory_efficient_attention needs xformers: pip install xformers.")
        if self.logger == "wandb" and importlib.util.find_spec("wandb") is None:
            raise ValueError('--logger wandb needs wandb: pip install "ddpm-hub[wandb]" (or use --logger tensorboard).')


@dataclass
class HubConfig:
    """Where to share the result."""

    push_to_hub: bool = field(default=False, metadata={"help": "Push the pipeline and model card to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id (default: your user / output_dir name)."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the saved login)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repo private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Push to this branch instead of main."})
    hub_push_checkpoints: bool = field(
        default=False, metadata={"help": "Also upload resumable checkpoints, to the 'checkpoints' branch."}
    )

    def validate(self) -> None:
        if self.hub_model_id is not None and self.hub_model_id.count("/") > 1:
            raise ValueError(f"--hub_model_id {self.hub_model_id!r} must look like 'name' or 'org/name'.")
        if (self.hub_model_id or self.hub_private_repo or self.hub_push_checkpoints) and not self.push_to_hub:
            raise ValueError("--hub_model_id, --hub_private_repo and --hub_push_checkpoints need --push_to_hub.")


CONFIG_TYPES = (ModelConfig, DataConfig, TrainConfig, HubConfig)
