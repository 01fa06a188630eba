"""Class-conditional models: labels in training, classifier-free guidance in the pipeline, saving and loading."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import TINY_UNET, run_python
from diffusers import UNet2DModel
from test_train import TINY, assert_same_weights

from ddpm_hub import DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.cli import main as cli_main
from ddpm_hub.data import load_images
from ddpm_hub.labels import emoji_category
from ddpm_hub.train import main as train_main

LABELS = ["cat", "dog", "fish"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_conditional_pipeline(prediction_type: str = "epsilon", seed: int = 0) -> DDPMHubPipeline:
    torch.manual_seed(seed)
    unet = UNet2DModel(**TINY_UNET, num_class_embeds=len(LABELS) + 1).eval()
    torch.nn.init.normal_(unet.class_embedding.weight, std=1.0)  # classes that make a visible difference
    pipe = DDPMHubPipeline(
        unet=unet, scheduler=make_noise_scheduler(prediction_type=prediction_type), label_names=LABELS
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory) -> Path:
    """Three classes in sub-folders, 8 noisy flat-colour images each."""
    folder = tmp_path_factory.mktemp("labelled") / "colours"
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            PIL.Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


# --- Guidance -------------------------------------------------------------------------------------------------


def to_epsilon(output, sample, alpha_prod, prediction_type):
    """Any model output as the noise it implies at x_t (DDPM eq. 4; v: Salimans & Ho 2022)."""
    alpha, sigma = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return sigma * sample + alpha * output
    return (sample - alpha * output) / sigma


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_guidance_scale_one_is_conditional_zero_unconditional_and_linear_in_any_parameterisation(prediction_type):
    pipe = make_conditional_pipeline(prediction_type)
    unet, t = pipe.unet, torch.tensor(600)
    x = torch.randn(3, 3, 16, 16, generator=seeded(0))
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        conditional = unet(x, t, class_labels=labels).sample
        unconditional = unet(x, t, class_labels=torch.full_like(labels, pipe.null_class_id)).sample
        assert (conditional - unconditional).abs().max() > 1e-2  # the class matters, so the checks below can fail
        torch.testing.assert_close(pipe._model_output(x, t, labels, 1.0), conditional, rtol=0, atol=0)
        torch.testing.assert_close(pipe._model_output(x, t, labels, 0.0), unconditional, rtol=0, atol=0)
        guided = pipe._model_output(x, t, labels, 3.0)
    torch.testing.assert_close(guided, unconditional + 3.0 * (conditional - unconditional), rtol=1e-4, atol=1e-5)
    # Guiding the output in this parameterisation equals guiding the noise it implies (Ho & Salimans 2022, eq. 6).
    alpha_prod = pipe.scheduler.alphas_cumprod[600]
    eps = lambda out: to_epsilon(out, x, alpha_prod, prediction_type)  # noqa: E731
    torch.testing.assert_close(
        eps(guided), eps(unconditional) + 3.0 * (eps(conditional) - eps(unconditional)), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_guidance_through_the_sampler_in_one_batched_unet_call(prediction_type):
    pipe = make_conditional_pipeline(prediction_type).set_sampler("ddim")
    batch_sizes = []
    pipe.unet.register_forward_hook(lambda module, args, output: batch_sizes.append(args[0].shape[0]))
    latents = torch.randn(2, 3, 16, 16, generator=seeded(1))
    run = lambda **kwargs: pipe(latents=latents, batch_size=2, num_inference_steps=3, output_type="np", **kwargs).images  # noqa: E731

    guided = run(class_labels=["cat", "fish"], guidance_scale=3.0)
    assert batch_sizes == [4, 4, 4]  # null and class halves together, one call per step
    batch_sizes.clear()
    conditional = run(class_labels=[0, 2], guidance_scale=1.0)
    assert batch_sizes == [2, 2, 2]  # scale 1: the conditional half alone
    unconditional = run(class_labels=["cat", "fish"], guidance_scale=0.0)
    np.testing.assert_array_equal(unconditional, run())  # scale 0 is the model without labels (the null class)
    assert np.abs(guided - conditional).max() > 1e-3 and np.abs(conditional - unconditional).max() > 1e-3
    # Labels by name and by id are the same; a default scale applies when labels are given.
    np.testing.assert_array_equal(run(class_labels=["cat", "fish"], guidance_scale=1.0), conditional)
    np.testing.assert_array_equal(run(class_labels=[0, 2]), guided)


@pytest.mark.parametrize("sampler", ["ddpm", "heun", "dpmpp_2m"])  # stochastic, two UNet calls a step, multistep
def test_every_kind_of_sampler_takes_labels_and_guidance(sampler):
    pipe = make_conditional_pipeline("v_prediction").set_sampler(sampler)
    images = pipe(class_labels="dog", batch_size=2, guidance_scale=2.0, num_inference_steps=3, output_type="pt",
                  generator=[seeded(0), seeded(1)]).images  # fmt: skip
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    # A list of labels sets the batch size; per-image generators still regenerate one image alone.
    batch = pipe(
        class_labels=["cat", "dog"], num_inference_steps=3, output_type="np", generator=[seeded(5), seeded(6)]
    ).images
    alone = pipe(class_labels=["dog"], num_inference_steps=3, output_type="np", generator=[seeded(6)]).images
    assert batch.shape[0] == 2
    np.testing.assert_allclose(alone[0], batch[1], atol=1e-4)


@pytest.mark.parametrize(
    "conditional, kwargs, message",
    [
        (False, dict(class_labels=1), r"This model is unconditional .* takes no `class_labels`; got 1\."),
        (False, dict(guidance_scale=2.0), r"`guidance_scale` \(2.0\) needs a class-conditional model"),
        (True, dict(class_labels="horse"), r"Unknown class label 'horse'; this model knows: cat, dog, fish\."),
        (True, dict(class_labels=3), r"Class id 3 is out of range; this model has 3 classes \(ids 0 to 2\)\."),
        (True, dict(class_labels=-1), r"Class id -1 is out of range"),
        (True, dict(class_labels=1.5), r"must be an id \(int\) or a name \(str\), got 1.5"),
        (True, dict(class_labels=["cat", "dog"], batch_size=3), r"Got 2 `class_labels` for a batch of 3"),
        (
            True,
            dict(class_labels="cat", guidance_scale=-1.0),
            r"`guidance_scale` must be a finite number >= 0, got -1.0",
        ),
        (True, dict(class_labels="cat", guidance_scale=float("nan")), r"`guidance_scale` must be a finite number"),
    ],
)
def test_bad_labels_and_scales_fail_in_one_line_before_sampling(tiny_pipeline, conditional, kwargs, message):
    pipe = make_conditional_pipeline() if conditional else tiny_pipeline
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message) as error:
        pipe(num_inference_steps=2, **kwargs)
    assert "\n" not in str(error.value) and not calls


def test_label_names_must_fit_the_unet():
    unet = UNet2DModel(**TINY_UNET, num_class_embeds=3)
    with pytest.raises(ValueError, match="Got 3 `label_names` for a UNet with 2 classes"):
        DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler(), label_names=LABELS)
    with pytest.raises(ValueError, match="for an unconditional UNet"):
        DDPMHubPipeline(unet=UNet2DModel(**TINY_UNET), scheduler=make_noise_scheduler(), label_names=LABELS)


# --- Saving and loading -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_conditional_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conditional") / "tiny-cond"
    make_conditional_pipeline().save_pretrained(path)
    return path


LOAD_MATRIX = """
import numpy as np, torch
from diffusers import DiffusionPipeline
path = {path!r}
try:
    DiffusionPipeline.from_pretrained(path)
except ValueError as error:
    print("stock:", type(error).__name__, "trust_remote_code=True" in str(error))
for kwargs in (dict(trust_remote_code=True), dict(custom_pipeline=path, trust_remote_code=True)):
    pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(class_labels=["fish", 0], num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(3)).images
    print("remote:", type(pipe).__name__, pipe.label_names, images.shape, repr(images.reshape(-1)[:6].tolist()))
"""


def test_stock_load_asks_for_remote_code_which_loads_the_full_conditional_pipeline(saved_conditional_dir):
    index = json.loads((saved_conditional_dir / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "DDPMHubPipeline"] and index["label_names"] == {
        "0": "cat",
        "1": "dog",
        "2": "fish",
    }
    out = run_python(LOAD_MATRIX.format(path=str(saved_conditional_dir)), without_ddpm_hub=True)
    # A conditional model does not load as a DDPMPipeline that could not pass its labels: diffusers asks for the
    # remote code, and with it (with or without custom_pipeline=) returns the whole pipeline.
    assert "stock: ValueError True" in out
    remote = [line for line in out.splitlines() if line.startswith("remote:")]
    assert len(remote) == 2 and all("DDPMHubPipeline ['cat', 'dog', 'fish'] (2, 16, 16, 3)" in line for line in remote)
    # Our class loads it with no trust flag, as this class, and generates exactly what the stored code does.
    pipe = DDPMHubPipeline.from_pretrained(saved_conditional_dir)
    assert type(pipe) is DDPMHubPipeline and pipe.label_names == LABELS and pipe.num_classes == 3
    pipe.set_progress_bar_config(disable=True)
    ours = pipe(class_labels=["fish", 0], num_inference_steps=2, output_type="np", generator=seeded(3)).images
    stored = eval(remote[0].split("(2, 16, 16, 3) ")[1])
    np.testing.assert_allclose(ours.reshape(-1)[:6], stored, atol=1e-5)


def test_conditional_pipeline_from_the_hub(hub_server, saved_conditional_dir, tmp_path):
    from test_hub import hub_env

    # `ddpm-hub push`, then our class by repo id into an empty cache, in one fresh process.
    ours = run_python(
        "from ddpm_hub.cli import main\n"
        f"print('push status', main(['push', {str(saved_conditional_dir)!r}, '--repo_id', 'test-org/colours']))\n"
        "from ddpm_hub import DDPMHubPipeline\n"
        f"pipe = DDPMHubPipeline.from_pretrained('test-org/colours', cache_dir={str(tmp_path / 'cache-2')!r})\n"
        "print(type(pipe).__module__, pipe.label_names)\n",
        env=hub_env(hub_server, tmp_path),
    )
    assert "push status 0" in ours and "ddpm_hub.pipeline ['cat', 'dog', 'fish']" in ours
    remote = run_python(
        "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained('test-org/colours', trust_remote_code=True)\n"
        "print(type(pipe).__name__, pipe.label_names,"
        " pipe(class_labels='dog', num_inference_steps=2, output_type='np').images.shape)\n",
        without_ddpm_hub=True,
        env=hub_env(hub_server, tmp_path, "cache-1"),
    )
    assert "DDPMHubPipeline ['cat', 'dog', 'fish'] (1, 16, 16, 3)" in remote


# --- Training -------------------------------------------------------------------------------------------------


def folder_args(folder: Path) -> list[str]:
    return [*TINY[TINY.index("--model"):], "--train_data_dir", str(folder), "--class_conditional",
            "--max_train_samples", "24", "--eval_batch_size", "4"]  # fmt: skip


def test_conditional_training_on_sub_folders_saves_label_names_and_generates_per_class(
    labelled_folder, tmp_path, capsys
):
    out = tmp_path / "colours"
    assert train_main([*folder_args(labelled_folder), "--output_dir", str(out), "--max_train_steps", "3"]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["label_names"] == {"0": "blue", "1": "green", "2": "red"}  # imagefolder's sub-folder names, sorted
    config = json.loads((out / "unet" / "config.json").read_text())
    assert config["num_class_embeds"] == 4  # three classes and the null class
    assert json.loads((out / "training_config.json").read_text())["num_classes"] == 3
    card = (out / "README.md").read_text()
    assert "A class-conditional (3 classes) image diffusion model" in card and "trust_remote_code=True" in card
    with PIL.Image.open(out / "sample_grid.png") as grid:
        assert grid.size == (2 * 16, 3 * 16)  # one row per class, eval_batch_size 4 -> 2 columns

    pipe = DDPMHubPipeline.from_pretrained(out).set_sampler("ddim")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        class_labels=["red", "green", "blue"], guidance_scale=2.0, num_inference_steps=2, output_type="np"
    ).images
    assert images.shape == (3, 16, 16, 3) and np.isfinite(images).all()

    # The command line: rows for the named classes, ids as digits; unknown names fail in one line, exit 2.
    grid_path = tmp_path / "grid.png"
    command = ["sample", str(out), "--num_inference_steps", "2", "--num_images", "4", "--output", str(grid_path)]
    assert cli_main([*command, "--class_label", "red,0", "--guidance_scale", "1.5"]) == 0
    with PIL.Image.open(grid_path) as grid:
        assert grid.size == (2 * 16, 2 * 16)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        cli_main([*command, "--class_label", "purple"])
    assert exit.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith("Unknown class label 'purple'; this model knows: blue, green, red.")
    )


def test_best_model_of_a_conditional_run_keeps_its_class_names(labelled_folder, tmp_path, capsys, monkeypatch):
    # best/ is written through the trainer's one export path, as the final pipeline is: with the label names.
    monkeypatch.setenv("DDPM_HUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "best-of-colours"
    evaluation = ["--eval_steps", "2", "--eval_num_samples", "44", "--eval_features", "efficientnet-lite0-40"]
    evaluation += ["--eval_num_inference_steps", "1", "--eval_batch_size", "22", "--save_images_epochs", "100"]
    code = train_main([*folder_args(labelled_folder), "--output_dir", str(out), "--max_train_steps", "2", *evaluation])
    assert code == 0, capsys.readouterr().err[-3000:]
    best = json.loads((out / "best" / "model_index.json").read_text())
    assert best["label_names"] == {"0": "blue", "1": "green", "2": "red"}
    assert json.loads((out / "best" / "eval_results.json").read_text())["step"] == 2
    assert DDPMHubPipeline.from_pretrained(out / "best").config.label_names == best["label_names"]


def test_resumed_conditional_run_is_bit_identical(labelled_folder, tmp_path, caplog):
    # A high dropout rate makes the dropped labels differ from step to step; they must come from the resumed RNG.
    args = [*folder_args(labelled_folder), "--max_train_steps", "5", "--class_dropout_prob", "0.5", "--random_flip",
            "--checkpointing_steps", "2"]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    caplog.set_level(logging.INFO)  # both runs in this process: their log is caplog's
    assert train_main([*args, "--output_dir", str(straight)]) == 0
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    caplog.clear()
    assert train_main([*args, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]) == 0
    assert "at step 2" in caplog.text
    assert_same_weights(straight / "checkpoint-5" / "model.safetensors", resumed / "checkpoint-5" / "model.safetensors")
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight / unet, resumed / unet)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--dataset_name", "shapes", "--class_conditional"],
            "--class_conditional needs class labels and this data set has none",
        ),
        (
            ["--dataset_name", "shapes", "--class_column", "shape"],
            "--class_column 'shape' is not a column of the data set",
        ),
        (["--class_dropout_prob", "1"], r"--class_dropout_prob must lie in \[0, 1\), got 1.0"),
    ],
)
def test_bad_label_flags_fail_in_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = train_main(["--model", "tiny", "--logger", "none", "--output_dir", str(tmp_path / "out"), *args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train_unconditional.py: error: ") and re.search(message, error), error


def test_fine_tuning_needs_the_same_classes(labelled_folder, saved_pipeline_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = train_main([*folder_args(labelled_folder), "--pretrained_model_name_or_path", str(saved_pipeline_dir),
                       "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    assert (
        "has no classes (unconditional), the training data 3 classes"
        in capsys.readouterr().err.strip().splitlines()[-1]
    )


# --- Label sources ------------------------------------------------------------------------------------------


def test_emoji_categories_of_twemoji_files():
    assert emoji_category("1f431.png") == "Animals & Nature"  # cat face
    assert emoji_category("1f600.png") == "Smileys & Emotion"
    assert emoji_category("2764.png") == "Smileys & Emotion"  # red heart, named without fe0f
    assert emoji_category("1f44b-1f3fd.png") == "People & Body"  # waving hand, medium skin tone
    assert emoji_category("1f1eb-1f1f7.png") == "Flags"
    assert emoji_category("1f355.png") == "Food & Drink"
    assert emoji_category("1f1e6.png") is None  # a lone regional-indicator letter has no category


def test_twemoji_grouped_by_category():
    images = load_images("twemoji", resolution=8, class_conditional=True, max_train_samples=48)
    assert images.label_names == [
        "Activities", "Animals & Nature", "Component", "Flags", "Food & Drink", "Objects", "People & Body",
        "Smileys & Emotion", "Symbols", "Travel & Places",
    ]  # fmt: skip
    assert images.pixels.shape == (48, 3, 8, 8) and images.labels.shape == (48,) and images.labels.dtype == torch.long
    assert 0 <= images.labels.min() and images.labels.max() < 10 and len(images.labels.unique()) > 3


def test_class_column_of_a_saved_dataset(tmp_path):
    import datasets

    rng = np.random.default_rng(0)
    pictures = [PIL.Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(
        {"image": pictures, "kind": ["b", "a", "b", "c", "a", "b"], "n": [10, 2, 10, 1, 2, 10]}
    ).save_to_disk(str(saved))
    by_name = load_images(str(saved), resolution=8, class_column="kind")
    assert by_name.label_names == ["a", "b", "c"] and by_name.labels.tolist() == [1, 0, 1, 2, 0, 1]
    by_number = load_images(str(saved), resolution=8, class_column="n")
    assert by_number.label_names == ["1", "2", "10"] and by_number.labels.tolist() == [2, 1, 2, 0, 1, 2]
