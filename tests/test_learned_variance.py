"""A model with learned variances (Improved DDPM's `learned_range`: a UNet with twice the image channels) in the
pipeline: the ancestral `ddpm` sampler steps with its variance, also respaced to fewer steps; every other sampler,
editing method and trajectory uses the mean prediction only; it saves and loads like every pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_UNET, run_python
from diffusers import UNet2DModel

from ddpm_hub import DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.pipeline_steps import SAMPLERS


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_learned_unet(seed: int = 0, **config) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(**{**TINY_UNET, "out_channels": 6, **config}).eval()
    # A variance output well inside (-1, 1) and varying per pixel, as a trained model's.
    torch.nn.init.normal_(unet.conv_out.weight[3:], std=0.05)
    return unet


def mean_twin(unet: UNet2DModel) -> UNet2DModel:
    """The same network without the variance channels: its output is the learned model's first half."""
    twin = UNet2DModel.from_config(unet.config, out_channels=3).eval()
    state = unet.state_dict()
    state["conv_out.weight"], state["conv_out.bias"] = state["conv_out.weight"][:3], state["conv_out.bias"][:3]
    twin.load_state_dict(state)
    return twin


def pipelines(**scheduler_kwargs) -> tuple[DDPMHubPipeline, DDPMHubPipeline]:
    """(learned-variance pipeline, its mean twin with the fixed small variance)."""
    unet = make_learned_unet()
    learned = DDPMHubPipeline(
        unet=unet, scheduler=make_noise_scheduler(variance_type="learned_range", **scheduler_kwargs)
    )
    twin = DDPMHubPipeline(unet=mean_twin(unet), scheduler=make_noise_scheduler(**scheduler_kwargs))
    for pipe in (learned, twin):
        pipe.set_progress_bar_config(disable=True)
    return learned, twin


def generate(pipe, steps: int = 3, seed: int = 0, **kwargs) -> torch.Tensor:
    return pipe(batch_size=2, num_inference_steps=steps, output_type="pt", generator=seeded(seed), **kwargs).images


@pytest.mark.parametrize("steps", [3, 10])
def test_ddpm_steps_with_the_learned_variance_on_the_device_as_diffusers_does(steps):
    learned, twin = pipelines()
    assert learned.learns_variance and not twin.learns_variance
    on_device = generate(learned, steps)
    learned.device_steps = False  # diffusers' DDPMScheduler.step, respaced betas included
    np.testing.assert_allclose(on_device, generate(learned, steps), atol=1e-5)
    # The variance matters: the same weights with the fixed variance sample other images, as the twin does.
    learned.set_sampler("ddpm", variance_type="fixed_small")
    fixed = generate(learned, steps)
    assert (fixed - on_device).abs().max() > 1e-3
    np.testing.assert_allclose(fixed, generate(twin, steps), atol=1e-5)


@pytest.mark.parametrize("sampler", [name for name in SAMPLERS if name != "ddpm"])
def test_every_other_sampler_uses_the_mean_only(sampler):
    learned, twin = pipelines()
    for pipe in (learned, twin):
        pipe.set_sampler(sampler)
    np.testing.assert_allclose(generate(learned), generate(twin), atol=1e-5)
    # Switching back, ddpm steps with the learned variance again.
    learned.set_sampler("ddpm")
    assert learned.scheduler.config.variance_type == "learned_range"


def test_guidance_extrapolates_the_mean_and_keeps_the_conditional_variance():
    unet = make_learned_unet(num_class_embeds=3)
    torch.nn.init.normal_(unet.class_embedding.weight, std=1.0)
    pipe = DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler(variance_type="learned_range"))
    pipe.set_progress_bar_config(disable=True)
    x, t, labels = torch.randn(2, 3, 16, 16, generator=seeded(0)), 500, torch.tensor([0, 1])
    with torch.no_grad():
        conditional = unet(x, t, class_labels=labels).sample
        unconditional = unet(x, t, class_labels=torch.full_like(labels, 2)).sample
        guided = pipe._model_output(x, t, labels, 3.0, with_variance=True)
        mean_only = pipe._model_output(x, t, labels, 3.0)
    expected = unconditional[:, :3] + 3.0 * (conditional[:, :3] - unconditional[:, :3])
    torch.testing.assert_close(guided[:, :3], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided[:, 3:], conditional[:, 3:], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mean_only, guided[:, :3])
    images = pipe(class_labels=[0, 1], num_inference_steps=3, output_type="pt", generator=seeded(1)).images
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_editing_trajectories_and_q_sample_use_the_mean():
    learned, twin = pipelines()
    image = torch.rand(1, 3, 16, 16, generator=seeded(4))
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    for pipe in (learned, twin):
        pipe.set_sampler("ddim")
    edits = [
        lambda p: p.img2img(image, strength=0.6, num_inference_steps=4, output_type="pt", generator=seeded(1)).images,
        lambda p: p.inpaint(image, mask, num_inference_steps=4, output_type="pt", generator=seeded(1)).images,
        lambda p: p.invert(image, num_inference_steps=4, output_type="pt").latents,
        lambda p: p.interpolate(seed_a=0, seed_b=1, num_frames=3, num_inference_steps=3, output_type="pt").images,
        lambda p: p.q_sample(image, 300, generator=seeded(2)),
    ]
    for edit in edits:
        np.testing.assert_allclose(edit(learned), edit(twin), atol=1e-5)
    # img2img with the ancestral sampler steps with the learned variance; trajectories show the mean's x_0.
    learned.set_sampler("ddpm")
    out = learned.img2img(image, strength=0.6, num_inference_steps=4, output_type="pt", generator=seeded(1)).images
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    traced = learned(num_inference_steps=3, output_type="pt", return_trajectory=True, generator=seeded(0))
    assert len(traced.pred_original_trajectory) == 3 and traced.pred_original_trajectory[0].shape == (1, 3, 16, 16)


def test_bad_pairings_of_variance_and_unet_fail_in_one_line(tmp_path):
    plain = UNet2DModel(**TINY_UNET)
    with pytest.raises(ValueError, match="variance_type 'learned_range' needs a UNet with twice the sample's 3"):
        DDPMHubPipeline(unet=plain, scheduler=make_noise_scheduler(variance_type="learned_range"))
    pipe = DDPMHubPipeline(unet=plain, scheduler=make_noise_scheduler())
    with pytest.raises(ValueError, match="needs a UNet with twice"):
        pipe.set_sampler("ddpm", variance_type="learned_range")
    learned, _ = pipelines()
    learned.set_sampler("ddim")
    with pytest.raises(ValueError, match=r"saved with its DDPMScheduler .*set_sampler\('ddpm'\)"):
        learned.save_pretrained(tmp_path / "ddim")
    assert not (tmp_path / "ddim" / "unet").exists()


def test_saved_folder_loads_everywhere_and_samples_with_the_learned_variance(hub_server, tmp_path):
    from test_hub import ddpm_hub_cli, hub_env

    learned, _ = pipelines()
    folder = tmp_path / "learned"
    learned.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and (folder / "pipeline_variance.py").is_file()
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["variance_type"] == "learned_range"
    ours = generate(DDPMHubPipeline.from_pretrained(folder).set_sampler("ddpm"), 5, seed=3)
    np.testing.assert_allclose(ours, generate(learned, 5, seed=3), atol=1e-6)

    pushed = ddpm_hub_cli("push", str(folder), "--repo_id", "test-org/learned", env=hub_env(hub_server, tmp_path),
                          cwd=tmp_path)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    out = run_python(
        f"""
import torch
from diffusers import DiffusionPipeline
stock = DiffusionPipeline.from_pretrained("test-org/learned")
stock.set_progress_bar_config(disable=True)
images = stock(batch_size=2, num_inference_steps=5, output_type="np", generator=torch.Generator().manual_seed(3)).images
print(type(stock).__name__, stock.scheduler.config.variance_type, images.reshape(-1)[:6].tolist())
path = {str(folder)!r}
full = DiffusionPipeline.from_pretrained(path, custom_pipeline=path, trust_remote_code=True)
print(type(full).__name__, full.learns_variance)
""",
        without_ddpm_hub=True,
        env=hub_env(hub_server, tmp_path, "fresh-cache"),
    )
    stock_line, full_line = [line for line in out.splitlines() if line.startswith(("DDPMPipeline", "DDPMHub"))]
    assert stock_line.startswith("DDPMPipeline learned_range") and full_line == "DDPMHubPipeline True"
    # Stock diffusers' DDPMPipeline draws the same noise in the same order: its images are ours.
    stock_values = json.loads(stock_line.split(" ", 2)[2])
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).reshape(-1)[:6], stock_values, atol=1e-5)


def test_distillation_refuses_a_learned_variance_teacher_in_one_line(tmp_path, capsys):
    from ddpm_hub.cli import main as cli_main

    teacher = tmp_path / "teacher"
    pipelines()[0].save_pretrained(teacher)
    code = cli_main(["distill", str(teacher), "--output_dir", str(tmp_path / "student"), "--dataset_name", "shapes",
                     "--start_steps", "8", "--end_steps", "4"])  # fmt: skip
    assert code == 2 and not (tmp_path / "student").exists()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "outputs 6 channels for 3 input channels (learned variances)" in error


@pytest.mark.slow
def test_compiled_learned_variance_pipeline_matches_eager():
    learned, _ = pipelines()
    eager = generate(learned, 3)
    learned.compile(backend="aot_eager")
    np.testing.assert_allclose(generate(learned, 3), eager, atol=1e-5)


def test_the_explorer_samples_and_describes_a_learned_variance_model():
    from ddpm_hub.app.models import describe_pipeline
    from ddpm_hub.app.panels import compare_samplers, sample_trajectory

    learned, _ = pipelines()
    trajectory = sample_trajectory(learned, "ddpm", num_inference_steps=3)
    assert len(trajectory.noisy) == len(trajectory.predicted) == 3 and trajectory.image.size == (16, 16)
    assert [name for name, *_ in compare_samplers(learned, ["ddpm", "dpmpp_2m"], num_inference_steps=2)] == [
        "ddpm", "dpmpp_2m",
    ]  # fmt: skip
    assert "predicts epsilon and its variances" in describe_pipeline(learned, "model")
