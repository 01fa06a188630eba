"""The saved-pipeline loading matrix, each case in a fresh interpreter.

A saved DDPMHubPipeline must load (1) with stock diffusers where ddpm_hub is not installed, (2) as the full custom
class through diffusers' custom-pipeline mechanism from the code stored beside the weights, again without
ddpm_hub, and (3) as `DDPMHubPipeline` with no trust flag. Weights are safetensors only.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_python

from ddpm_hub import DDPMHubPipeline


def test_saved_layout(saved_pipeline_dir):
    files = sorted(str(p.relative_to(saved_pipeline_dir)) for p in saved_pipeline_dir.rglob("*") if p.is_file())
    assert files == [
        "model_index.json",
        "pipeline.py",
        "pipeline_editing.py",
        "pipeline_guidance.py",
        "pipeline_parameterization.py",
        "pipeline_steps.py",
        "pipeline_superres.py",
        "pipeline_variance.py",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    index = json.loads((saved_pipeline_dir / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDPMScheduler"]


def test_stock_diffusers_loads_and_generates_without_ddpm_hub_as_the_ddpm_hub_class_does(saved_pipeline_dir):
    import numpy as np
    import torch

    out = run_python(
        f"""
import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained({str(saved_pipeline_dir)!r})
pipe.set_progress_bar_config(disable=True)
images = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
print(type(pipe).__name__, images.shape, float(images.std()) > 0)
images = pipe(batch_size=1, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(5)).images
print(repr(images.reshape(-1)[:8].tolist()))
""",
        without_ddpm_hub=True,
    )
    assert "DDPMPipeline (2, 16, 16, 3) True" in out

    # (3) DDPMHubPipeline loads the folder with no trust flag, and samples what stock DDPMPipeline samples: the same
    # noise from the same seed, the same scheduler math.
    pipe = DDPMHubPipeline.from_pretrained(saved_pipeline_dir)
    assert type(pipe) is DDPMHubPipeline
    pipe.set_progress_bar_config(disable=True)
    ours = pipe(
        batch_size=1, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(5)
    ).images
    np.testing.assert_allclose(ours.reshape(-1)[:8], eval(out.strip().splitlines()[-1]), atol=1e-4)


def test_custom_pipeline_mechanism_loads_the_full_class_without_ddpm_hub(saved_pipeline_dir):
    out = run_python(
        f"""
import torch
from diffusers import DiffusionPipeline
path = {str(saved_pipeline_dir)!r}
pipe = DiffusionPipeline.from_pretrained(path, custom_pipeline=path, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
pipe.set_sampler("dpmpp_2m")
out = pipe(batch_size=2, num_inference_steps=3, output_type="np", return_trajectory=True,
           generator=torch.Generator().manual_seed(0))
print(type(pipe).__name__, type(pipe.scheduler).__name__, out.images.shape, len(out.trajectory))
try:
    DiffusionPipeline.from_pretrained(path, custom_pipeline=path)
except ValueError as error:
    print("refused without trust:", "trust_remote_code" in str(error))
""",
        without_ddpm_hub=True,
    )
    assert "DDPMHubPipeline DPMSolverMultistepScheduler (2, 16, 16, 3) 3" in out
    assert "refused without trust: True" in out


def test_weights_are_safetensors_only(saved_pipeline_dir, tiny_pipeline, tmp_path):
    assert not [p for p in saved_pipeline_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    with pytest.raises(ValueError, match="safetensors"):
        tiny_pipeline.save_pretrained(tmp_path / "pickled", safe_serialization=False)
