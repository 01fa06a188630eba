"""Model cards (the repo's README.md) for trained pipelines, built with huggingface_hub's `ModelCard`.

The card is regenerated on every export and push; text the user writes between the two `USER_NOTES` markers is
carried over from the previous card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

USER_NOTES_START = "<!-- ddpm-hub: your notes below are kept when the card is regenerated -->"
USER_NOTES_END = "<!-- ddpm-hub: end of your notes -->"
DEFAULT_USER_NOTES = "_Add your own notes about this model here._"
SAMPLE_GRID = "sample_grid.png"
# Written by the trainer beside the pipeline; the card is built from them, at export and at every push.
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"


@dataclass
class CardInfo:
    """What the card says about a trained pipeline.

    Args:
        repo_id (`str`, *optional*): the Hub repo id used in the usage snippets (a local path otherwise).
        hyperparameters (`dict`): training settings shown in a table (resolution, preset, schedule, ...).
        dataset_description (`str`): what the model was trained on, in words.
        dataset_id (`str`, *optional*): the Hub dataset id, added to the card's metadata.
        attribution (`str`, *optional*): credit line required by the data's licence.
        license (`str`, *optional*): licence id for the metadata (e.g. `cc-by-4.0`).
        metrics (`dict`): final figures (loss, steps, images per second, time).
        has_sample_grid (`bool`): whether `sample_grid.png` sits beside the card.
        vae (`str`, *optional*): a latent model's autoencoder (folder or Hub id, and subfolder), stored in `vae/`.
        vae_license (`str`, *optional*): that autoencoder's licence, from its own model card.
        label_names (`list[str]`, *optional*): a class-conditional model's class names, by id.
        distilled_from (`str`, *optional*): a distilled student's teacher (`ddpm-hub distill`).
        sampling_steps (`int`, *optional*): a distilled student's DDIM steps, its default; the snippets use them.
        low_resolution (`int`, *optional*): a super-resolution model's input size (it upscales to `resolution`).
    """

    repo_id: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    dataset_description: str = "an unspecified image data set"
    dataset_id: str | None = None
    attribution: str | None = None
    license: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    has_sample_grid: bool = True
    vae: str | None = None
    vae_license: str | None = None
    label_names: list[str] | None = None
    distilled_from: str | None = None
    sampling_steps: int | None = None
    low_resolution: int | None = None


# Training settings shown in the card's table, in this order, when the run recorded them.
CARD_HYPERPARAMETERS = (
    "model", "resolution", "model_source", "beta_schedule", "num_train_timesteps", "prediction_type", "variance_type",
    "loss_type", "vlb_weight", "snr_gamma",
    "train_batch_size", "total_batch_size", "gradient_accumulation_steps", "max_train_steps", "learning_rate_effective",
    "lr_scheduler", "lr_warmup_steps", "mixed_precision_effective", "use_ema", "ema_max_decay",
    "posthoc_ema_sigma_rel", "posthoc_ema_step", "seed",
    "num_classes", "class_column", "class_dropout_prob", "latent_shape", "latent_scaling_factor_effective",
    "low_resolution", "low_res_noise_max",
)  # fmt: skip
# Shown only for class-conditional runs, for runs with the hybrid loss, and for super-resolution runs.
CONDITIONAL_HYPERPARAMETERS = ("num_classes", "class_column", "class_dropout_prob")
HYBRID_HYPERPARAMETERS = ("vlb_weight",)
SUPERRES_HYPERPARAMETERS = ("low_resolution", "low_res_noise_max")
# Not shown for a post-hoc EMA reconstruction (`ddpm-hub ema`), whose weights are not the fixed-decay EMA's.
FIXED_EMA_HYPERPARAMETERS = ("use_ema", "ema_max_decay")


def card_info_for_run(
    hparams: dict[str, Any], metrics: dict[str, Any] | None = None, repo_id: str | None = None
) -> CardInfo:
    """The card of a training run, from its `training_config.json` settings and final metrics."""
    from .data import BUILTIN_DATASETS

    posthoc = hparams.get("posthoc_ema_sigma_rel") is not None
    folder, name = hparams.get("train_data_dir"), hparams.get("dataset_name")
    folder = None if folder in (None, "None") else folder
    name = None if name in (None, "None") else name
    builtin = BUILTIN_DATASETS.get(name or "twemoji") if folder is None else None
    dataset_id = None
    if builtin is not None:
        description = builtin.description
    elif folder is not None:
        description = f"a local image folder ({Path(folder).name})"
    else:
        description = f"the {name} data set"
        dataset_id = name if "/" in name and not Path(name).exists() else None
    return CardInfo(
        repo_id=repo_id,
        hyperparameters={
            key: hparams[key]
            for key in CARD_HYPERPARAMETERS
            if key in hparams
            and (hparams.get("num_classes") or key not in CONDITIONAL_HYPERPARAMETERS)
            and (hparams.get("loss_type") == "hybrid" or key not in HYBRID_HYPERPARAMETERS)
            and (hparams.get("low_resolution") or key not in SUPERRES_HYPERPARAMETERS)
            and not (posthoc and key in FIXED_EMA_HYPERPARAMETERS)
        },
        dataset_description=description,
        dataset_id=dataset_id,
        attribution=builtin.attribution if builtin else None,
        license=builtin.license if builtin else None,
        metrics=metrics or {},
        vae=hparams.get("vae") or None,
        vae_license=hparams.get("vae_license") or None,
        label_names=hparams.get("label_names") or None,
        distilled_from=(metrics or {}).get("distilled_from"),
        sampling_steps=(metrics or {}).get("sampling_steps"),
        low_resolution=hparams.get("low_resolution") or None,
    )


def extract_user_notes(card_text: str | None) -> str | None:
    """The user's section of an existing card, or `None` if there is none."""
    if not card_text:
        return None
    match = re.search(re.escape(USER_NOTES_START) + r"\n?(.*?)\n?" + re.escape(USER_NOTES_END), card_text, re.S)
    return match.group(1) if match else None


def settings_table(rows: dict[str, Any]) -> str:
    lines = ["| setting | value |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


def build_model_card(info: CardInfo, user_notes: str | None = None) -> ModelCard:
    """The model card for `info`, with `user_notes` (from a previous card) kept in their section."""
    task = "image-to-image" if info.low_resolution else "unconditional-image-generation"  # an upscaler takes images
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag=task,
        license=info.license,
        datasets=[info.dataset_id] if info.dataset_id else None,
        tags=["pytorch", "diffusers", task, "ddpm", "ddpm-hub", *(["super-resolution"] if info.low_resolution else [])],
    )
    sections = [*_introduction(info), "## Usage", *_usage(info)]
    sections += [
        "## Training",
        settings_table(info.hyperparameters) if info.hyperparameters else "_No training settings recorded._",
        "## Data",
        f"Trained on {info.dataset_description}." + (f"\n\n{info.attribution}" if info.attribution else ""),
    ]
    if info.metrics:
        sections += ["## Metrics", settings_table(info.metrics)]
    sections += [
        "## Notes",
        USER_NOTES_START,
        user_notes if user_notes is not None else DEFAULT_USER_NOTES,
        USER_NOTES_END,
    ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    return ModelCard(content)


def _introduction(info: CardInfo) -> list[str]:
    """The title, what the model is (kind, size, latents, a distilled student), its VAE, its classes, its samples."""
    resolution = info.hyperparameters.get("resolution", "?")
    num_classes = info.hyperparameters.get("num_classes") or 0
    kind = f"A class-conditional ({num_classes} classes)" if num_classes else "An unconditional"
    space = ""
    if info.vae:
        latent_shape = info.hyperparameters.get("latent_shape", "?")
        kind += " latent"
        space = f", denoising the {latent_shape} latents of the autoencoder `{info.vae}`, stored in `vae/`"
    if info.low_resolution:
        return _upscaler_introduction(info, resolution)
    sections = [
        f"# {info.repo_id.split('/')[-1] if info.repo_id else 'DDPM model'}",
        f"{kind} image diffusion model (DDPM, {resolution}x{resolution} pixels{space}) trained with "
        f"[ddpm-hub](https://github.com/ddpm-hub/ddpm-hub) on {info.dataset_description}.",
    ]
    if info.sampling_steps:
        rounds = info.metrics.get("distillation_rounds", "")
        sections.append(
            f"A few-step student, distilled from `{info.distilled_from}` by progressive distillation"
            + (f" (steps {rounds})" if rounds else "")
            + f": it samples in {info.sampling_steps} DDIM steps, its default when `num_inference_steps` is not given."
        )
    sigma_rel = info.hyperparameters.get("posthoc_ema_sigma_rel")
    if sigma_rel is not None:
        sections.append(
            f"Its weights are a post-hoc EMA (Karras et al. 2024, EDM2) of relative length sigma_rel {sigma_rel} at "
            f"step {info.hyperparameters.get('posthoc_ema_step', '?')}, reconstructed after training from the run's "
            "EMA snapshots with `ddpm-hub ema`."
        )
    if info.vae:
        licence = f"`{info.vae_license}`" if info.vae_license else "not stated in its model card; see its page"
        sections.append(f"The autoencoder is `{info.vae}` (licence: {licence}); its terms apply to `vae/` as well.")
    if info.hyperparameters.get("variance_type") == "learned_range":
        sections.append(
            "It learns the variance of each reverse step (Improved DDPM, Nichol & Dhariwal 2021): the `ddpm` sampler "
            "(stock `DDPMPipeline` too) uses it, also with fewer steps than training, e.g. `num_inference_steps=100`."
        )
    if info.label_names:
        names = ", ".join(f"`{name}`" for name in info.label_names)
        sections.append(f"Its classes, by id from 0 (`label_names` in `model_index.json`): {names}.")
    if info.has_sample_grid:
        sections.append(
            f"![Samples from the EMA weights]({SAMPLE_GRID})" + (", one row per class" if num_classes else "")
        )
    return sections


def _upscaler_introduction(info: CardInfo, resolution) -> list[str]:
    """The title and what a super-resolution model upscales, from and to, and how its input is made."""
    low, noise_max = info.low_resolution, info.hyperparameters.get("low_res_noise_max", 0)
    sections = [
        f"# {info.repo_id.split('/')[-1] if info.repo_id else 'DDPM upscaler'}",
        f"A super-resolution diffusion model (SR3-style, Saharia et al. 2021): it upscales {low}x{low} images to "
        f"{resolution}x{resolution} pixels. Trained with [ddpm-hub](https://github.com/ddpm-hub/ddpm-hub) on "
        f"{info.dataset_description}, downsampled to {low}x{low} (antialiased bicubic).",
        "Its UNet sees the noisy image and the low-resolution input, upsampled bicubically, side by side; the input "
        f"was noised at a random conditioning-augmentation level from 0 to {noise_max} (Ho et al. 2021), the "
        "`noise_level` it takes at sampling time. Chain it after a base model at its low resolution for a cascade.",
    ]
    if info.has_sample_grid:
        sections.append(f"![Low-resolution inputs and their upscales (EMA weights)]({SAMPLE_GRID})")
    return sections


def _usage(info: CardInfo) -> list[str]:
    """The usage snippets: a student's at its steps, a conditional or latent model's, or a plain DDPM's."""
    repo = info.repo_id or "path/to/this/folder"
    if info.low_resolution:
        return _upscaler_usage(repo, info.low_resolution)
    num_classes = info.hyperparameters.get("num_classes") or 0
    if info.sampling_steps:
        return _student_usage(repo, num_classes, bool(info.vae), info.sampling_steps)
    if num_classes or info.vae:
        # model_index.json names the pipeline.py stored here: DDPMPipeline could not pass the class labels.
        return _conditional_usage(repo, num_classes)
    return [
        "With diffusers alone (this repo loads as a stock `DDPMPipeline`):",
        "```python\nfrom diffusers import DiffusionPipeline\n\n"
        f'pipe = DiffusionPipeline.from_pretrained("{repo}")\n'
        'image = pipe(num_inference_steps=1000).images[0]\nimage.save("sample.png")\n```',
        "With the full pipeline (any sampler, trajectories, `q_sample`): load the code stored in this repo, or "
        "install ddpm-hub:",
        f"```python\nfrom diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained(\n"
        f'    "{repo}", custom_pipeline="{repo}", trust_remote_code=True\n)\n'
        'images = pipe.set_sampler("dpmpp_2m")(batch_size=4, num_inference_steps=25).images\n```',
        f'```python\nfrom ddpm_hub import DDPMHubPipeline\n\npipe = DDPMHubPipeline.from_pretrained("{repo}")\n'
        'images = pipe.set_sampler("ddim")(batch_size=4, num_inference_steps=50).images\n```',
    ]


def _student_usage(repo: str, num_classes: int, latent: bool, steps: int) -> list[str]:
    """Usage of a distilled student at its own DDIM steps, the default of the pipeline code stored in this repo."""
    labels = "class_labels=[pipe.label_names[0]] * 4, guidance_scale=3.0" if num_classes else "batch_size=4"
    # An unconditional pixel student's model_index.json names the stock DDPMPipeline, which has no default steps.
    code = "" if num_classes or latent else f'custom_pipeline="{repo}", '
    load = f'DiffusionPipeline.from_pretrained(\n    "{repo}", {code}trust_remote_code=True\n)'
    return [
        f"Sample at the student's {steps} DDIM steps (other samplers and step counts run, but it was distilled for "
        "these). With diffusers alone, from the code in this repo:",
        f"```python\nfrom diffusers import DiffusionPipeline\n\npipe = {load}\n"
        f"images = pipe({labels}).images  # {steps} DDIM steps, its default\n```",
        f'```python\nfrom ddpm_hub import DDPMHubPipeline\n\npipe = DDPMHubPipeline.from_pretrained("{repo}")\n'
        f"images = pipe({labels}).images  # {steps} DDIM steps\n```",
    ]


def _upscaler_usage(repo: str, low: int) -> list[str]:
    """Usage of a super-resolution model: `upscale` from the code stored in the repo, and a cascade with ddpm-hub."""
    return [
        f"Upscale {low}x{low} images. With diffusers alone, from the code in this repo (a stock `DDPMPipeline` would "
        "not take the low-resolution image):",
        "```python\nimport PIL.Image\nfrom diffusers import DiffusionPipeline\n\n"
        f'pipe = DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)\n'
        f'low_res = PIL.Image.open("input.png").convert("RGB")  # {low}x{low}\n'
        'image = pipe.set_sampler("dpmpp_2m").upscale(low_res, num_inference_steps=25).images[0]\n```',
        "With ddpm-hub, after a base model that makes images at the low resolution (a cascade), or on one image:",
        f"```bash\nddpm-hub sample org/base-{low}px --upscaler {repo} --output samples.png\n"
        f"ddpm-hub sample {repo} --low_res_image input.png --output upscaled.png\n```",
    ]


def _conditional_usage(repo: str, num_classes: int) -> list[str]:
    """Usage through the pipeline code stored in the repo (class labels, or decoding latents with `vae/`)."""
    if not num_classes:
        return [
            "With diffusers alone, from the code in this repo (a stock `DDPMPipeline` would not decode the latents):",
            f'```python\nfrom diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained("{repo}", '
            "trust_remote_code=True)\nimages = pipe(batch_size=4, num_inference_steps=50).images\n```",
            f'```python\nfrom ddpm_hub import DDPMHubPipeline\n\npipe = DDPMHubPipeline.from_pretrained("{repo}")\n'
            'images = pipe.set_sampler("ddim")(batch_size=4, num_inference_steps=50).images\n```',
        ]
    return [
        "The class names are `label_names` in `model_index.json`. With diffusers alone, from the code in this repo:",
        f'```python\nfrom diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained("{repo}", '
        "trust_remote_code=True)\nprint(pipe.label_names)\nimages = pipe(class_labels=[pipe.label_names[0]] * 4, "
        "guidance_scale=3.0, num_inference_steps=50).images\n```",
        f'```python\nfrom ddpm_hub import DDPMHubPipeline\n\npipe = DDPMHubPipeline.from_pretrained("{repo}")\n'
        'images = pipe.set_sampler("ddim")(class_labels=0, batch_size=4, num_inference_steps=50).images\n```',
    ]


def write_model_card(directory: str | Path, info: CardInfo, previous_card: str | None = None) -> Path:
    """Write `README.md` in `directory` atomically, keeping the user notes of `previous_card` or of the card there."""
    from .files import atomic_file

    path = Path(directory) / "README.md"
    if previous_card is None and path.exists():
        previous_card = path.read_text(encoding="utf-8")
    card = build_model_card(info, extract_user_notes(previous_card))
    with atomic_file(path) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return path
