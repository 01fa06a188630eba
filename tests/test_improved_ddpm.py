"""Training with learned variances and the variational bound (Improved DDPM) through the real training CLI: the
saved model, the timestep sampler's state in checkpoints and an exact resume, `--eval_metrics nll` and the card, and
the refusals of combinations that cannot train."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch
from test_train import TINY, assert_same_weights

from ddpm_hub import DDPMHubPipeline


def run_args(loss_type: str) -> list[str]:
    # T = 2 timesteps: the vlb sampler has 10 losses at both after 20 images or so, so it leaves its uniform start
    # (16 images per optimizer step) before the checkpoint at step 3, and resume must restore it.
    return [*TINY, "--max_train_samples", "32", "--max_train_steps", "7", "--gradient_accumulation_steps", "2",
            "--random_flip", "--loss_type", loss_type, "--ddpm_num_steps", "2", "--checkpointing_steps", "3",
            "--eval_steps", "7", "--eval_metrics", "nll", "--eval_num_samples", "4", "--post_hoc_ema",
            "--ema_snapshot_steps", "3"]  # fmt: skip


def resume_matches(args: list[str], tmp_path) -> tuple:
    """Train straight, then again from the first run's checkpoint-3; assert the same weights; return both folders."""
    from test_train import metrics_log

    from ddpm_hub.train import main as train_main

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_main([*args, "--output_dir", str(straight)]) == 0
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-3", resumed / "checkpoint-3")  # as if the first run had died here
    assert train_main([*args, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]) == 0
    assert min(row["step"] for row in metrics_log(resumed)) > 3  # it went on from step 3
    assert_same_weights(straight / "checkpoint-7" / "model.safetensors", resumed / "checkpoint-7" / "model.safetensors")
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight / unet, resumed / unet)
    return straight, resumed


def test_vlb_run_learns_variances_keeps_its_timestep_sampler_and_resumes_bit_identically(tmp_path):
    straight, _ = resume_matches(run_args("vlb"), tmp_path)
    # The model: twice the output channels, the scheduler's learned variance, the sampler's state in checkpoints.
    assert json.loads((straight / "unet" / "config.json").read_text())["out_channels"] == 6
    assert (
        json.loads((straight / "scheduler" / "scheduler_config.json").read_text())["variance_type"] == "learned_range"
    )
    state = json.loads((straight / "checkpoint-3" / "training_state.json").read_text())
    sampler = state["parts"]["improved_ddpm"]["timestep_sampler"]
    assert min(sampler["written"]) >= sampler["history"]  # warm: timesteps were importance-sampled after it
    # Likelihood during training, on the card, with the variance and the loss.
    logged = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    nll = [entry["eval_nll_bits_per_dim"] for entry in logged if "eval_nll_bits_per_dim" in entry]
    assert nll and all(math.isfinite(value) and value > 0 for value in nll)
    card = (straight / "README.md").read_text()
    assert "| variance_type | learned_range |" in card and "| loss_type | vlb |" in card
    assert re.search(r"\| final_nll_bits_per_dim \| \d+\.\d+ \|", card) and "It learns the variance" in card
    pipe = DDPMHubPipeline.from_pretrained(straight).set_sampler("ddpm")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.learns_variance and torch.isfinite(pipe(num_inference_steps=2, output_type="pt").images).all()
    # A post-hoc EMA of the run is a learned-variance pipeline too, without the run's likelihood on its card.
    from ddpm_hub.cli import main as cli_main

    assert cli_main(["ema", str(straight), "--sigma_rel", "0.08", "--output_dir", str(tmp_path / "ema")]) == 0
    ema = DDPMHubPipeline.from_pretrained(tmp_path / "ema")
    assert ema.learns_variance and ema.scheduler.config.variance_type == "learned_range"
    card = (tmp_path / "ema" / "README.md").read_text()
    assert "It learns the variance" in card and "sigma_rel 0.08" in card and "final_nll_bits_per_dim" not in card


@pytest.mark.slow
def test_hybrid_run_resumes_bit_identically(tmp_path):
    resume_matches([*run_args("hybrid"), "--prediction_type", "epsilon", "--snr_gamma", "5"], tmp_path)


@pytest.fixture(scope="module")
def plain_pretrained(tmp_path_factory):
    from conftest import make_tiny_pipeline

    folder = tmp_path_factory.mktemp("plain") / "pipeline"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss_type", "kl"], r"--loss_type 'kl' is not one of: simple, hybrid, vlb"),
        (["--variance_type", "learned"], r"--variance_type 'learned' is not one of: fixed_small, fixed_large"),
        (["--variance_type", "learned_range"], r"learned_range needs --loss_type hybrid or vlb"),
        (["--loss_type", "hybrid", "--variance_type", "fixed_large"], r"--loss_type hybrid trains a learned variance"),
        (["--loss_type", "vlb", "--rescale_betas_zero_snr", "--prediction_type", "epsilon"], r"zero-terminal-SNR"),
        (
            ["--variance_type", "learned_range", "--loss_type", "hybrid", "--pretrained_model_name_or_path", "PLAIN"],
            r"has in/out channels 3/3, but learned variances \(--variance_type learned_range\) need twice the sample "
            r"channels as outputs; use a UNet config with in_channels=3 and out_channels=6",
        ),
        (["--loss_type", "hybrid", "--pretrained_model_name_or_path", "PLAIN"], r"hybrid trains a learned variance"),
    ],
)
def test_combinations_that_cannot_train_fail_in_one_line(tmp_path, capsys, plain_pretrained, args, message):
    from ddpm_hub.train import main as train_main

    args = [str(plain_pretrained) if arg == "PLAIN" else arg for arg in args]
    try:
        code = train_main(["--output_dir", str(tmp_path / "out"), "--model", "tiny", *args])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train_unconditional.py: error: ") and re.search(message, error), error
    assert not (tmp_path / "out").exists()


def test_a_latent_run_learns_the_variances_of_its_latents_and_refuses_nll(tmp_path, capsys):
    from test_latent_training import LATENT
    from test_latents import save_tiny_vae

    from ddpm_hub.train import main as train_main

    vae = save_tiny_vae(tmp_path / "vae", "kl")
    args = [*LATENT, "--vae_name_or_path", str(vae), "--cache_dir", str(tmp_path / "cache"), "--loss_type", "hybrid"]
    assert train_main([*args, "--max_train_steps", "2", "--output_dir", str(tmp_path / "run")]) == 0
    pipe = DDPMHubPipeline.from_pretrained(tmp_path / "run")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae is not None and pipe.learns_variance
    assert pipe.unet.config.out_channels == 2 * pipe.unet.config.in_channels
    images = pipe(num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()

    refused = [*args, "--eval_steps", "1", "--eval_metrics", "nll", "--output_dir", str(tmp_path / "nll")]
    assert train_main(refused) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--eval_metrics nll is the likelihood of 8-bit pixels" in error and not (tmp_path / "nll").exists()


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["hybrid", "vlb"])
def test_compiled_bound_losses_follow_the_eager_loss_trajectory(tmp_path, loss_type):
    from safetensors.torch import load_file
    from test_train import metrics_log

    from ddpm_hub.train import main as train_main

    args = [*TINY, "--max_train_steps", "3", "--checkpointing_steps", "3", "--loss_type", loss_type,
            "--ddpm_num_steps", "2", "--save_images_epochs", "100"]  # fmt: skip
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile", "--compile_backend", "aot_eager"])):
        assert train_main([*args, *extra, "--output_dir", str(tmp_path / name)]) == 0
        runs[name] = [row["loss"] for row in metrics_log(tmp_path / name) if "loss" in row]
    assert len(runs["eager"]) == 2 and runs["compiled"] == pytest.approx(runs["eager"], rel=1e-5)
    first, second = (load_file(str(tmp_path / n / "checkpoint-3/model.safetensors")) for n in ("eager", "compiled"))
    assert max((first[k] - second[k]).abs().max().item() for k in first) < 1e-5


def test_train_classifier_reads_a_learned_variance_model_and_its_classifier_guides_it(tmp_path):
    """`ddpm-hub train-classifier` trains nothing of the diffusion model: a learned variance needs no --loss_type."""
    from test_likelihood import make_learned_pipeline
    from test_train_classifier import colour_folder, quick, train_classifier

    from ddpm_hub.classifier import load_classifier

    model, out = tmp_path / "model", tmp_path / "classifier"
    make_learned_pipeline().save_pretrained(model)
    data = colour_folder(tmp_path / "colours", count=8)
    assert train_classifier(*quick(model, data, out, "--max_train_steps", 2, "--validation_images", 4)) == 0
    pipe = DDPMHubPipeline.from_pretrained(model).set_sampler("ddpm")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.learns_variance
    guided = pipe(
        class_labels="red", classifier=load_classifier(str(out)), classifier_scale=2.0, num_inference_steps=2,
        output_type="pt", generator=torch.Generator().manual_seed(0),
    ).images  # fmt: skip
    assert guided.shape == (1, 3, 16, 16) and torch.isfinite(guided).all()


def test_a_class_conditional_hybrid_run_on_prepared_shards_learns_variances_and_samples_with_guidance(tmp_path):
    from ddpm_hub.data import draw_shapes
    from ddpm_hub.prepare import main as prepare_main
    from ddpm_hub.train import main as train_main

    for i, image in enumerate(draw_shapes(16, size=16, seed=3)):  # two classes, as sub-folders
        folder = tmp_path / "images" / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:03d}.png")
    shards = tmp_path / "shards"
    assert prepare_main([str(tmp_path / "images"), str(shards), "--resolution", "16", "--shard_size", "8"]) == 0
    args = ["--train_shards", str(shards / "train-{000000..000001}.tar"), "--class_conditional", "--model", "tiny",
            "--loss_type", "hybrid", "--ddpm_num_steps", "10", "--train_batch_size", "8", "--max_train_steps", "2",
            "--ddpm_num_inference_steps", "2", "--eval_batch_size", "4", "--logger", "none",
            "--save_images_epochs", "100", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    assert train_main(args) == 0

    pipe = DDPMHubPipeline.from_pretrained(tmp_path / "run").set_sampler("ddpm")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.num_classes == 2 and pipe.label_names == ["even", "odd"]
    assert pipe.learns_variance and pipe.scheduler.config.variance_type == "learned_range"

    def sample(guidance_scale: float) -> torch.Tensor:
        return pipe(
            class_labels=["even", "odd"], guidance_scale=guidance_scale, num_inference_steps=3, output_type="pt",
            generator=[torch.Generator().manual_seed(i) for i in range(2)],
        ).images  # fmt: skip

    guided = sample(3.0)
    assert guided.shape == (2, 3, 16, 16) and torch.isfinite(guided).all()
    assert (guided - sample(1.0)).abs().max() > 1e-4  # the guidance moves the samples
    pipe.set_sampler("ddpm", variance_type="fixed_small")
    assert (guided - sample(3.0)).abs().max() > 1e-4  # the ancestral steps used the learned variance
