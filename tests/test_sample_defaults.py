"""Front ends sample at the pipeline's own step count when the user gives none: a distilled student's few steps.

A student-like pipeline is a tiny one that records `default_num_inference_steps` (what `ddpm-hub distill` saves);
the UNet's calls are counted through a global forward hook while the real CLI runs in this process.
"""

from __future__ import annotations

import contextlib

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_pipeline
from diffusers import UNet2DModel

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.cli import main as ddpm_hub_main

STUDENT_STEPS = 3


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A tiny pipeline saved as a student is: its config records a small default step count."""
    tiny = make_tiny_pipeline()
    path = tmp_path_factory.mktemp("student") / "student"
    student = DDPMHubPipeline(tiny.unet, tiny.scheduler, default_num_inference_steps=STUDENT_STEPS)
    student.save_pretrained(path)
    return path


@contextlib.contextmanager
def counted_unet_calls():
    """A list that holds one entry per UNet forward call made inside the block."""
    calls = []

    def hook(module, args, output):
        if isinstance(module, UNet2DModel):
            calls.append(module)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def sample(model, tmp_path, *args) -> int:
    """UNet calls of one `ddpm-hub sample MODEL ...` (a one-image grid, so one call per step)."""
    with counted_unet_calls() as calls:
        argv = ["sample", str(model), "--output", str(tmp_path / "grid.png"), "--num_images", "1", *map(str, args)]
        assert ddpm_hub_main([*argv, "--device", "cpu"]) == 0
    return len(calls)


def test_sample_uses_the_students_steps_unless_told(student_dir, tmp_path):
    assert sample(student_dir, tmp_path) == STUDENT_STEPS
    assert sample(student_dir, tmp_path, "--sampler", "dpmpp_2m") == STUDENT_STEPS
    assert sample(student_dir, tmp_path, "--num_inference_steps", "5") == 5  # the flag still wins


def test_sample_of_a_trained_pipeline_keeps_50_steps(saved_pipeline_dir, tmp_path):
    # A trained pipeline records no default (pipe() would take 1000): `ddpm-hub sample` keeps its 50.
    assert "default_num_inference_steps" not in DDPMHubPipeline.from_pretrained(saved_pipeline_dir).config
    assert sample(saved_pipeline_dir, tmp_path) == 50


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "a.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_edit_modes_of_a_student(student_dir, tmp_path, image_file):
    # img2img at strength 1 denoises every one of the student's steps; interpolation samples its frames (one batch)
    # at the student's steps; RePaint inpainting keeps 50 levels (its jumps need many of them).
    assert sample(student_dir, tmp_path, "--init_image", image_file, "--strength", "1") == STUDENT_STEPS
    assert sample(student_dir, tmp_path, "--init_image", image_file, "--strength", "1",
                  "--num_inference_steps", "4") == 4  # fmt: skip
    assert sample(student_dir, tmp_path, "--interpolate", "0", "1", "--num_frames", 2) == STUDENT_STEPS
    mask = tmp_path / "mask.png"
    PIL.Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).save(mask)
    repaint = sample(student_dir, tmp_path, "--init_image", image_file, "--mask_image", mask, "--jump_n_sample", "1")
    assert repaint == 50


def test_sample_help_says_the_default(capsys):
    with pytest.raises(SystemExit):
        ddpm_hub_main(["sample", "--help"])
    assert "the model's own count if it records one" in " ".join(capsys.readouterr().out.split())


def test_zero_steps_is_still_refused(student_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ddpm_hub_main(["sample", str(student_dir), "--num_inference_steps", "0"])
    assert exit_info.value.code == 2
    assert "--num_inference_steps must be positive, got 0." in capsys.readouterr().err


@pytest.mark.parametrize("model", ["student", "trained"])
def test_eval_scores_a_student_at_its_steps_and_a_trained_model_at_50(model, student_dir, saved_pipeline_dir, tmp_path):
    import json

    from test_evaluation import SMALL, save_shapes

    folder, steps = (student_dir, STUDENT_STEPS) if model == "student" else (saved_pipeline_dir, 50)
    argv = ["eval", str(folder), "--reference", str(save_shapes(tmp_path / "reference", 4)), "--features", SMALL,
            "--num_samples", "4", "--batch_size", "4", "--metrics", "kid", "--cache_dir", str(tmp_path / "cache"),
            "--device", "cpu", "--output", str(tmp_path / "result.json")]  # fmt: skip
    with counted_unet_calls() as calls:
        assert ddpm_hub_main(argv) == 0
    assert len(calls) == steps  # one batch: one UNet call per step
    assert json.loads((tmp_path / "result.json").read_text())["num_inference_steps"] == steps
    if model == "student":  # the flag still wins
        with counted_unet_calls() as calls:
            assert ddpm_hub_main([*argv, "--num_inference_steps", "2"]) == 0
        assert len(calls) == 2
