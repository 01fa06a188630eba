"""`ddpm-hub train-classifier`: the Trainer training a noise-aware classifier of a saved model's x_t, end to end.

The data are two flat colours with a little noise (16 px, class sub-folders), the diffusion model the tiny random
pipeline of conftest: the classifier needs nothing of the model but its schedule, shape and (latent) VAE.
"""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_pipeline, run_python
from safetensors.torch import load_file

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.classifier import load_classifier
from ddpm_hub.pipeline_guidance import schedule_fingerprint

COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220)}


def colour_folder(folder, count: int = 24, size: int = 16):
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            PIL.Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier-run")
    make_tiny_pipeline().save_pretrained(root / "model")
    return root / "model", colour_folder(root / "colours")


def train_classifier(*args) -> int:
    from ddpm_hub.cli import main

    return main(["train-classifier", *map(str, args)])


def quick(model, data, out, *extra):
    return [
        "--pretrained_model_name_or_path", model, "--train_data_dir", data, "--output_dir", out,
        "--train_batch_size", 8, "--classifier_width", 8, "--classifier_layers_per_block", 1, "--logger", "none",
        "--learning_rate", 3e-3, "--lr_warmup_steps", 0, "--eval_batch_size", 4, "--ddpm_num_inference_steps", 2,
        "--save_images_epochs", 100, "--save_model_epochs", 100, "--logging_steps", 4, *extra,
    ]  # fmt: skip


def test_a_classifier_run_resumes_exactly_and_is_noise_aware(model_and_data, tmp_path):
    model, data = model_and_data
    out = tmp_path / "out"
    args = quick(model, data, out, "--max_train_steps", 16, "--checkpointing_steps", 8, "--validation_images", 16)
    assert train_classifier(*args) == 0
    straight = load_file(out / "diffusion_pytorch_model.safetensors")
    assert exit_code(*args) == 2  # a finished run is not trained over unless told to resume or start over
    # Resumed from the middle (the later checkpoint is set aside): the same classifier, bit for bit.
    assert train_classifier(*args, "--resume_from_checkpoint", "checkpoint-8") == 0
    resumed = load_file(out / "diffusion_pytorch_model.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)

    metrics = json.loads((out / "metrics.json").read_text())
    accuracy = [row["accuracy"] for row in metrics["accuracy"]]
    assert [row["t_min"] for row in metrics["accuracy"]] == list(range(0, 1000, 100))
    assert metrics["validation_images"] == 16
    assert accuracy[0] >= 0.9 and accuracy[-1] <= 0.75, accuracy  # near x_0 sure, near x_T about chance (0.5)
    card = (out / "README.md").read_text()
    assert "## Accuracy by noise level" in card and "| 0-99 |" in card and (out / "sample_grid.png").is_file()

    classifier = load_classifier(str(out))
    assert classifier.label_names == ["blue", "red"] and classifier.config.diffusion_model == str(model)
    pipe = DDPMHubPipeline.from_pretrained(model)
    images = pipe(class_labels="red", classifier=classifier, classifier_scale=2.0, num_inference_steps=2).images
    assert len(images) == 1


def test_a_latent_model_s_classifier_reads_its_vae_latents(tmp_path):
    from test_latent_pipeline import make_latent_pipeline

    make_latent_pipeline("kl").save_pretrained(tmp_path / "latent")
    data = colour_folder(tmp_path / "colours", count=8, size=32)
    out = tmp_path / "out"
    args = quick(tmp_path / "latent", data, out, "--max_train_steps", 2, "--validation_images", 4)
    assert train_classifier(*args) == 0
    classifier = load_classifier(str(out))
    assert (classifier.config.latent, classifier.config.in_channels, classifier.config.sample_size) == (True, 4, 16)
    settings = json.loads((out / "training_config.json").read_text())
    assert settings["sample_shape"] == "4x16x16" and settings["vae"].endswith("latent/vae")


def test_a_learned_variance_model_s_classifier_trains_and_previews_with_its_variance(tmp_path):
    """The run trains no diffusion loss, so a model with learned variances needs no --loss_type; its DDPM previews
    step with the learned variance."""
    from test_learned_variance import pipelines

    learned = pipelines()[0]
    learned.save_pretrained(tmp_path / "learned")
    data = colour_folder(tmp_path / "colours", count=8)
    out = tmp_path / "out"
    args = quick(tmp_path / "learned", data, out, "--max_train_steps", 1, "--validation_images", 4,
                 "--preview_sampler", "ddpm")  # fmt: skip
    assert train_classifier(*args) == 0
    assert load_classifier(str(out)).config.noise_schedule == schedule_fingerprint(learned.scheduler.config)
    assert PIL.Image.open(out / "sample_grid.png").size == (32, 32)  # rows blue and red, two seeds each


def test_a_pushed_classifier_guides_ddpm_hub_sample_by_repo_id(hub_server, model_and_data, tmp_path):
    """train-classifier --push_to_hub uploads the classifier's folder (card regenerated for the repo); `ddpm-hub
    sample --classifier REPO` loads it by id: each row is a class, each image its own PNG (--output_dir)."""
    from test_hub import hub_env

    model, data = model_and_data
    args = quick(model, data, tmp_path / "out", "--max_train_steps", 2, "--validation_images", 8, "--push_to_hub",
                 "--hub_model_id", "test-org/colour-classifier")  # fmt: skip
    run_python(
        "from ddpm_hub.cli import main\n"
        f"assert main(['train-classifier', *{list(map(str, args))!r}]) == 0\n"
        f"raise SystemExit(main(['sample', {str(model)!r}, '--classifier', 'test-org/colour-classifier', "
        "'--classifier_scale', '2', '--num_images', '4', '--num_inference_steps', '2', '--output', 'grid.png', "
        "'--output_dir', 'each']))\n",
        env=hub_env(hub_server, tmp_path),
        cwd=tmp_path,
    )
    assert hub_server.repo_files("test-org/colour-classifier") == [
        ".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.safetensors", "metrics.json",
        "sample_grid.png", "training_config.json",
    ]  # fmt: skip
    card = hub_server.read_file("test-org/colour-classifier", "README.md").decode()
    assert 'NoiseAwareClassifier.from_pretrained("test-org/colour-classifier")' in card
    names = sorted(p.name for p in (tmp_path / "each").iterdir())
    assert names == ["blue-seed-0.png", "blue-seed-1.png", "red-seed-0.png", "red-seed-1.png"]
    grid = np.asarray(PIL.Image.open(tmp_path / "grid.png"))
    assert grid.shape == (32, 32, 3)  # rows blue and red, two seeds each
    np.testing.assert_array_equal(grid[16:, 16:], np.asarray(PIL.Image.open(tmp_path / "each" / "red-seed-1.png")))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eval_steps", "5"], "--eval_steps and --eval_epochs score a diffusion model's samples"),
        (["--compile"], "apply to a UNet's training"),
        (["--validation_images", "48"], "--validation_images 48 leaves no training image of the 48"),
        (["--accuracy_bins", "1"], "--accuracy_bins must lie in [2, 1000]"),
        (["--post_hoc_ema"], "--post_hoc_ema keeps snapshots for `ddpm-hub ema`"),
        (["--classifier_scale", "inf"], "--classifier_scale must be a finite number >= 0, got inf"),
    ],
)
def test_bad_classifier_runs_are_refused_in_one_line(model_and_data, tmp_path, capsys, extra, message):
    model, data = model_and_data
    assert exit_code(*quick(model, data, tmp_path / "out", "--max_train_steps", 1, *extra)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error, error
    assert not (tmp_path / "out" / "config.json").exists()


def test_a_folder_that_is_not_a_classifier_run_is_refused_and_kept(model_and_data, tmp_path, capsys):
    """The output-folder rule: the diffusion model's own folder (or any other) is not trained over; nothing in it
    is written or removed."""
    model, data = model_and_data
    before = {path: path.stat().st_mtime_ns for path in model.rglob("*")}
    assert exit_code(*quick(model, data, model, "--max_train_steps", 1)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not empty and is not a classifier run (it holds model_index.json" in error, error
    assert {path: path.stat().st_mtime_ns for path in model.rglob("*")} == before


def test_unlabelled_images_and_a_missing_model_are_refused(model_and_data, tmp_path, capsys):
    model, data = model_and_data
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in sorted((data / "red").iterdir())[:8]:
        (flat / image.name).write_bytes(image.read_bytes())
    assert exit_code(*quick(model, flat, tmp_path / "out", "--max_train_steps", 1)) == 2
    assert "put each class's images in its own sub-folder" in capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_code(*quick(tmp_path / "nothing", data, tmp_path / "out", "--max_train_steps", 1)) == 2
    assert "--pretrained_model_name_or_path" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_super_resolution_model_is_refused_in_one_line(model_and_data, tmp_path, capsys):
    """An upscaler samples from given images, not from noise: no classifier of its x_t is trained."""
    from test_superres import make_upscaler

    make_upscaler().save_pretrained(tmp_path / "sr")
    assert exit_code(*quick(tmp_path / "sr", model_and_data[1], tmp_path / "out", "--max_train_steps", 1)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is a super-resolution model, which upscales given images" in error, error
    assert not (tmp_path / "out").exists()


def exit_code(*args) -> int:
    """The command's exit status, whether it returns it or a flag check exits (argparse's exit 2)."""
    try:
        return train_classifier(*args)
    except SystemExit as exit:
        return exit.code
