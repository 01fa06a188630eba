"""Training a super-resolution model (`--low_resolution`, the `SuperResolution` part): it learns to follow its input,
resumes bit-identically, compiles, previews and evaluates as an upscaler, and refuses what it cannot be in one line."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from test_train import assert_same_weights, metrics_log

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.cli import main as cli_main
from ddpm_hub.data import draw_shapes
from ddpm_hub.evaluation.metrics import psnr
from ddpm_hub.evaluation.upscaler import consistency, low_res_inputs, upscale_images
from ddpm_hub.run_folder import RUN_FILES
from ddpm_hub.train import main as train_main

# An 8 -> 32 upscaler of the tiny preset on the procedural shapes: 0.15 s of CPU per step.
SR = [
    "--dataset_name", "shapes", "--model", "tiny", "--low_resolution", "8", "--resolution", "32",
    "--max_train_samples", "256", "--train_batch_size", "8", "--lr_warmup_steps", "10", "--logger", "none",
    "--ddpm_num_inference_steps", "2", "--eval_batch_size", "4", "--logging_steps", "50",
]  # fmt: skip


def upscales(pipeline: DDPMHubPipeline, low_res: torch.Tensor) -> np.ndarray:
    pipeline.set_sampler("ddim").set_progress_bar_config(disable=True)
    indices = list(range(len(low_res)))
    return upscale_images(pipeline, low_res, indices, batch_size=len(indices), seed=0, num_inference_steps=10)


def test_a_briefly_trained_upscaler_follows_its_input(tmp_path):
    # 160 steps (about 30 s of CPU on one thread): the consistency ratio below is 14 (6 after 120 steps, 2 after 40).
    out = tmp_path / "sr-8-32"
    assert train_main([*SR, "--max_train_steps", "160", "--low_res_noise_max", "50", "--save_images_epochs", "100",
                       "--checkpointing_steps", "1000", "--output_dir", str(out)]) == 0  # fmt: skip
    index = json.loads((out / "model_index.json").read_text())
    assert (index["low_resolution"], index["low_res_noise_max"], index["low_res_upsampling"]) == (8, 50, "bicubic")
    card = (out / "README.md").read_text()
    assert "it upscales 8x8 images to 32x32 pixels" in card and "| low_resolution | 8 |" in card
    assert PIL.Image.open(out / "sample_grid.png").size == (2 * 64, 2 * 32)  # 4 cells of low-res | upscaled
    # Held-out images (another seed), downsampled as training does, upscaled by the model and by the same network
    # with its low-resolution input channels zeroed: the one that sees its input follows it.
    originals = np.stack([np.asarray(image).transpose(2, 0, 1) for image in draw_shapes(16, size=32, seed=123)])
    low_res = low_res_inputs(originals, 8)
    ours = upscales(DDPMHubPipeline.from_pretrained(out), low_res)
    blind = DDPMHubPipeline.from_pretrained(out)
    with torch.no_grad():
        blind.unet.conv_in.weight[:, 3:] = 0
    theirs = upscales(blind, low_res)
    assert consistency(ours, low_res).mean() * 5 <= consistency(theirs, low_res).mean()
    assert psnr(ours, originals).mean() > psnr(theirs, originals).mean()


def test_resume_is_bit_identical_and_the_compiled_step_matches(tmp_path):
    # The conditioning draws (level, augmentation noise) come after the flip and before eps and t: a resumed run must
    # draw them as the uninterrupted one did. aot_eager traces the step with its low-resolution input.
    args = [*SR, "--max_train_samples", "16", "--max_train_steps", "4", "--random_flip", "--checkpointing_steps", "2",
            "--save_images_epochs", "100", "--logging_steps", "1"]  # fmt: skip
    straight, resumed, compiled = tmp_path / "straight", tmp_path / "resumed", tmp_path / "compiled"
    assert train_main([*args, "--output_dir", str(straight)]) == 0
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    assert train_main([*args, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]) == 0
    assert_same_weights(straight / "checkpoint-4" / "model.safetensors", resumed / "checkpoint-4" / "model.safetensors")
    assert train_main([*args, "--output_dir", str(compiled), "--compile", "--compile_backend", "aot_eager",
                       "--compile_cache_dir", str(tmp_path / "cache")]) == 0  # fmt: skip
    losses = [[row["loss"] for row in metrics_log(run) if "loss" in row] for run in (straight, compiled)]
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_evaluation_during_training_and_post_hoc_ema_work_for_an_upscaler(tmp_path, capsys):
    out = tmp_path / "evaluated"
    assert train_main([*SR, "--max_train_samples", "16", "--max_train_steps", "4", "--eval_steps", "4",
                       "--eval_num_samples", "8", "--eval_metrics", "psnr,ssim,consistency",
                       "--eval_num_inference_steps", "2", "--save_images_epochs", "100", "--post_hoc_ema",
                       "--ema_snapshot_steps", "2", "--output_dir", str(out)]) == 0  # fmt: skip
    row = next(row for row in metrics_log(out) if "eval_psnr" in row)
    assert np.isfinite(row["eval_psnr"]) and 0 <= row["eval_consistency"] and -1 <= row["eval_ssim"] <= 1
    written = {path.name for path in out.iterdir() if not path.name.startswith("checkpoint-")}
    assert written <= set(RUN_FILES), written - set(RUN_FILES)  # the upscaler's run writes only a run's names
    # A reconstruction is an upscaler as the run's own pipeline is; the sweep, which scores images generated from
    # noise, is refused before any scoring.
    assert cli_main(["ema", str(out), "--sigma_rel", "0.1", "--output_dir", str(tmp_path / "ema")]) == 0
    reconstruction = DDPMHubPipeline.from_pretrained(tmp_path / "ema")
    assert (reconstruction.low_resolution, reconstruction.low_res_noise_max) == (8, 100)
    assert "it upscales 8x8 images to 32x32 pixels" in (tmp_path / "ema" / "README.md").read_text()
    capsys.readouterr()
    assert cli_main(["ema", str(out), "--sweep", "0.05:0.1:2", "--output_dir", str(tmp_path / "sweep")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after diffusers' loading bar
    assert error.startswith("ddpm-hub ema: error: ") and "is a super-resolution model: --sweep scores" in error
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--low_resolution", "5", "--resolution", "32"], r"--low_resolution 5 must divide --resolution 32"),
        (["--low_resolution", "16", "--model", "tiny"], r"--low_resolution 16 must divide --resolution 16 and be"),
        (["--low_res_noise_max", "10"], r"--low_res_noise_max applies to a super-resolution run"),
        (["--low_resolution", "8", "--low_res_noise_max", "1001"], r"--low_res_noise_max 1001 exceeds the 1000"),
        (["--low_resolution", "4", "--class_conditional"], r"Class-conditional super-resolution is not supported"),
        (["--low_resolution", "4", "--vae_name_or_path", "vae"], r"Latent super-resolution is not supported"),
        (["--eval_steps", "2", "--eval_metrics", "psnr"], r"--eval_metrics psnr score a super-resolution run"),
        (["--low_resolution", "4", "--loss_type", "hybrid"], r"does not go with --variance_type learned_range or"),
        (["--low_resolution", "4", "--eval_steps", "2", "--eval_metrics", "nll"], r"an upscaler's likelihood is"),
    ],
)
def test_bad_super_resolution_flags_fail_in_one_line(tmp_path, capsys, args, message):
    try:
        code = train_main(["--output_dir", str(tmp_path / "out"), "--dataset_name", "shapes", *args])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train_unconditional.py: error: ") and re.search(message, error), error
    assert not (tmp_path / "out" / "model_index.json").exists()


def test_the_augmentation_level_is_checked_against_a_fine_tuned_pipelines_own_timesteps(tmp_path, capsys):
    from test_superres import make_upscaler

    from ddpm_hub import make_noise_scheduler

    pretrained = make_upscaler(noise_max=50)
    DDPMHubPipeline(
        unet=pretrained.unet, scheduler=make_noise_scheduler(num_train_timesteps=100), low_resolution=8,
        low_res_noise_max=50,
    ).save_pretrained(tmp_path / "sr-100")  # fmt: skip
    args = ["--pretrained_model_name_or_path", str(tmp_path / "sr-100"), "--low_resolution", "8", "--max_train_steps",
            "1", "--output_dir", str(tmp_path / "out"), "--dataset_name", "shapes", "--logger", "none"]  # fmt: skip
    assert train_main([*args, "--low_res_noise_max", "150"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--low_res_noise_max 150 exceeds the 100 timesteps" in error, error
    assert not (tmp_path / "out" / "model_index.json").exists()


def test_distilling_an_upscaler_is_refused_in_one_line(tmp_path, capsys):
    from test_superres import make_upscaler

    make_upscaler().save_pretrained(tmp_path / "sr")
    assert cli_main(["distill", str(tmp_path / "sr"), "--output_dir", str(tmp_path / "student")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is a super-resolution model: distilling upscalers is not supported" in error
