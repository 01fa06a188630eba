"""The model card and the Hub snapshot of a classifier run's folder (a model of its own, not a pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..files import atomic_file
from ..hub import link_files, previous_card, public_records
from ..model_card import (
    CONFIG_FILE,
    DEFAULT_USER_NOTES,
    METRICS_FILE,
    SAMPLE_GRID,
    USER_NOTES_END,
    USER_NOTES_START,
    card_info_for_run,
    extract_user_notes,
    settings_table,
)

# What a classifier's folder holds (the weights before config.json, the order an export moves them in), and what a
# push uploads; checkpoints, logs and previews stay local.
CLASSIFIER_FILES = ("diffusion_pytorch_model.safetensors", "config.json", "README.md", SAMPLE_GRID, CONFIG_FILE,
                    METRICS_FILE)  # fmt: skip
# Settings shown in the card's table, when recorded.
CARD_SETTINGS = (
    "diffusion_model", "noise_schedule", "sample_shape", "resolution", "classifier_block_out_channels",
    "classifier_down_block_types", "classifier_layers_per_block", "train_batch_size", "total_batch_size",
    "max_train_steps", "learning_rate_effective", "lr_scheduler", "adam_weight_decay", "mixed_precision_effective",
    "use_ema", "ema_max_decay", "random_flip", "seed", "classifier_parameters",
)  # fmt: skip


def build_classifier_card(
    hparams: dict[str, Any],
    metrics: dict[str, Any],
    repo_id: str | None,
    user_notes: str | None = None,
    has_sample_grid: bool = True,
    name: str | None = None,
) -> ModelCard:
    """The card of a classifier: what it guides, how to use it, its accuracy by noise level, its training."""
    info = card_info_for_run(hparams, metrics, repo_id)
    model = hparams.get("diffusion_model") or "the diffusion model"
    repo = repo_id or "path/to/this/folder"
    name = repo_id.split("/")[-1] if repo_id else name or "Noise-aware classifier"
    names = hparams.get("label_names") or []
    scale = hparams.get("preview_classifier_scale", 4.0)
    card_data = ModelCardData(
        library_name="diffusers",
        license=info.license,
        datasets=[info.dataset_id] if info.dataset_id else None,
        base_model=model if "/" in model and not Path(model).exists() else None,
        tags=["pytorch", "diffusers", "ddpm-hub", "classifier-guidance", "noise-aware-classifier"],
    )
    sections = [
        f"# {name}",
        f"A noise-aware classifier of the noisy samples x_t ({hparams.get('sample_shape', '?')}) of `{model}`, trained "
        f"with [ddpm-hub](https://github.com/ddpm-hub/ddpm-hub) on {info.dataset_description}, for classifier "
        "guidance ([Dhariwal & Nichol 2021](https://arxiv.org/abs/2105.05233)): it steers the diffusion model towards "
        "its classes without retraining it.",
        "Its classes, by id from 0: " + ", ".join(f"`{name}`" for name in names) + ".",
    ]
    if has_sample_grid:
        sections.append(f"![Guided samples, one row per class, classifier scale {scale}]({SAMPLE_GRID})")
    label = f'"{names[0]}"' if names else 0
    sections += [
        "## Usage",
        "```python\nfrom ddpm_hub import DDPMHubPipeline\nfrom ddpm_hub.classifier import NoiseAwareClassifier\n\n"
        f'pipe = DDPMHubPipeline.from_pretrained("{model}").set_sampler("ddim")\n'
        f'classifier = NoiseAwareClassifier.from_pretrained("{repo}")\n'
        f"images = pipe(class_labels={label}, classifier=classifier, classifier_scale={scale}, batch_size=4,\n"
        "              num_inference_steps=50).images\n```",
        f"```bash\nddpm-hub sample {model} --classifier {repo} --class_label {label} --classifier_scale {scale}\n```",
    ]
    rows = metrics.get("accuracy")
    if rows:
        table = ["| t | accuracy |", "| --- | --- |"] + [
            f"| {row['t_min']}-{row['t_max']} | {row['accuracy']:.3f} |" for row in rows
        ]
        sections += [
            "## Accuracy by noise level",
            f"On {metrics.get('validation_images')} held-out images, each noised to x_t at a t drawn in every range "
            "(EMA weights); chance is " + (f"{1 / len(names):.3f}." if names else "1 / classes."),
            "\n".join(table),
        ]
    shown = {key: hparams[key] for key in CARD_SETTINGS if key in hparams}
    sections += ["## Training", settings_table(shown), "## Data", f"Trained on {info.dataset_description}."]
    if info.attribution:
        sections[-1] += f"\n\n{info.attribution}"
    plain = {key: value for key, value in metrics.items() if not isinstance(value, (list, dict))}
    if plain:
        sections += ["## Metrics", settings_table(plain)]
    sections += ["## Notes", USER_NOTES_START, user_notes or DEFAULT_USER_NOTES, USER_NOTES_END]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def write_classifier_card(
    directory: str | Path,
    hparams: dict[str, Any],
    metrics: dict[str, Any],
    repo_id: str | None = None,
    previous: str | None = None,
) -> Path:
    """Write `README.md` in `directory` atomically, keeping the user notes of `previous` or of the card there."""
    path = Path(directory) / "README.md"
    if previous is None and path.exists():
        previous = path.read_text(encoding="utf-8")
    has_grid = (Path(directory) / SAMPLE_GRID).is_file()
    notes = extract_user_notes(previous)
    card = build_classifier_card(hparams, metrics, repo_id, notes, has_grid, Path(hparams.get("output_dir", "")).name)
    with atomic_file(path) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return path


def snapshot_classifier(output_dir: Path, staging: Path, repo_id: str, api, revision: str | None) -> None:
    """What a classifier run pushes (`hub.HubPublisher`'s `snapshot`): its folder's files, settings without local
    paths, and the card regenerated for `repo_id`."""
    link_files(output_dir, staging, CLASSIFIER_FILES)
    if not (staging / "config.json").is_file():
        raise ValueError(f"{output_dir} holds no saved classifier (config.json is missing).")
    previous = previous_card(staging, api, repo_id, revision)
    hparams, metrics = public_records(staging)
    write_classifier_card(staging, hparams, metrics, repo_id, previous)
