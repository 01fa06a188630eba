"""DDPMHubPipeline through its public API: shapes, determinism, every sampler, trajectory, q_sample."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import TINY_UNET, make_tiny_pipeline
from diffusers import UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from ddpm_hub import SAMPLERS, DDPMHubPipeline, make_noise_scheduler


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_output_types_and_shapes(tiny_pipeline, output_type):
    images = tiny_pipeline(batch_size=3, num_inference_steps=2, output_type=output_type, generator=seeded(0)).images
    if output_type == "pil":
        assert len(images) == 3 and all(isinstance(im, PIL.Image.Image) and im.size == (16, 16) for im in images)
    elif output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (3, 16, 16, 3)
        assert images.min() >= 0 and images.max() <= 1
    else:
        assert isinstance(images, torch.Tensor) and images.shape == (3, 3, 16, 16)
        assert images.min() >= 0 and images.max() <= 1


def test_fixed_generator_is_deterministic_and_seeds_differ(tiny_pipeline):
    first = tiny_pipeline(num_inference_steps=3, output_type="np", generator=seeded(7)).images
    again = tiny_pipeline(num_inference_steps=3, output_type="np", generator=seeded(7)).images
    other = tiny_pipeline(num_inference_steps=3, output_type="np", generator=seeded(8)).images
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_return_dict_false_gives_the_same_images(tiny_pipeline):
    as_dict = tiny_pipeline(num_inference_steps=2, output_type="np", generator=seeded(1)).images
    as_tuple = tiny_pipeline(num_inference_steps=2, output_type="np", generator=seeded(1), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    np.testing.assert_array_equal(as_dict, as_tuple[0])


def test_per_image_generators_regenerate_one_image_alone(tiny_pipeline):
    # DDPM is stochastic at every step, so this also checks that step noise comes from each image's generator.
    batch = tiny_pipeline(
        batch_size=3, num_inference_steps=4, output_type="np", generator=[seeded(s) for s in (10, 11, 12)]
    ).images
    alone = tiny_pipeline(batch_size=1, num_inference_steps=4, output_type="np", generator=[seeded(11)]).images
    np.testing.assert_allclose(alone[0], batch[1], atol=1e-4)


def test_latents_are_used_and_checked(tiny_pipeline):
    latents = torch.randn(2, 3, 16, 16, generator=seeded(3))
    tiny_pipeline.set_sampler("ddim")
    a = tiny_pipeline(batch_size=2, latents=latents, num_inference_steps=3, output_type="np").images
    b = tiny_pipeline(batch_size=2, latents=latents.clone(), num_inference_steps=3, output_type="np").images
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"latents.*shape"):
        tiny_pipeline(batch_size=2, latents=torch.randn(2, 3, 8, 8))


def test_ddim_eta_controls_stochasticity(tiny_pipeline):
    tiny_pipeline.set_sampler("ddim")
    latents = torch.randn(1, 3, 16, 16, generator=seeded(0))
    run = lambda eta, seed: (
        tiny_pipeline(  # noqa: E731
            latents=latents, eta=eta, generator=seeded(seed), num_inference_steps=4, output_type="np"
        ).images
    )
    np.testing.assert_array_equal(run(0.0, 1), run(0.0, 2))  # eta=0: the noise generator plays no part
    assert np.abs(run(1.0, 1) - run(1.0, 2)).max() > 1e-4


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_generates_finite_images(tiny_pipeline, sampler):
    tiny_pipeline.set_sampler(sampler)
    assert type(tiny_pipeline.scheduler).__name__ == SAMPLERS[sampler][0]
    images = tiny_pipeline(batch_size=2, num_inference_steps=3, output_type="pt", generator=seeded(0)).images
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_karras_sampler_uses_karras_sigmas(tiny_pipeline):
    assert tiny_pipeline.set_sampler("dpmpp_2m_karras").scheduler.config.use_karras_sigmas
    assert not tiny_pipeline.set_sampler("dpmpp_2m").scheduler.config.use_karras_sigmas


class OracleUNet(UNet2DModel):
    """A denoiser that knows the data: one fixed image x*. It returns the exact noise, v or x_0 for any x_t."""

    def __init__(self, target: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str):
        super().__init__(**TINY_UNET)
        self.target, self.alphas_cumprod, self.prediction_type = target, alphas_cumprod, prediction_type

    def forward(self, sample, timestep, **kwargs):
        # Karras/DPM timesteps may be fractional: interpolate alpha_bar linearly between neighbours.
        t = float(timestep)
        lo, frac = int(np.floor(t)), t - np.floor(t)
        hi = min(lo + 1, len(self.alphas_cumprod) - 1)
        alpha_prod = (1 - frac) * self.alphas_cumprod[lo] + frac * self.alphas_cumprod[hi]
        eps = (sample - alpha_prod.sqrt() * self.target) / (1 - alpha_prod).sqrt()
        if self.prediction_type == "epsilon":
            return UNet2DOutput(sample=eps)
        if self.prediction_type == "v_prediction":
            return UNet2DOutput(sample=alpha_prod.sqrt() * eps - (1 - alpha_prod).sqrt() * self.target)
        return UNet2DOutput(sample=self.target.expand_as(sample))


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_samplers_reach_the_data_with_a_perfect_denoiser(sampler, prediction_type):
    # With an exact denoiser for a one-image data set every correct sampler must end on that image. This catches a
    # missing `init_noise_sigma` or `scale_model_input` (sigma-space samplers), a wrong prediction type, or a
    # scheduler that lost the training betas when it was swapped in.
    scheduler = make_noise_scheduler("cosine", prediction_type=prediction_type)
    target = torch.rand(1, 3, 16, 16, generator=seeded(0)) * 1.6 - 0.8
    pipe = DDPMHubPipeline(unet=OracleUNet(target, scheduler.alphas_cumprod, prediction_type), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_sampler(sampler)
    if sampler == "ddpm":
        steps = 200  # ancestral DDPM with few steps is exact too, but takes the long way round
    else:
        steps = 25
    image = pipe(num_inference_steps=steps, output_type="pt", generator=seeded(1)).images
    np.testing.assert_allclose(image, (target / 2 + 0.5), atol=0.02)


def test_callback_on_step_end_sees_and_replaces_latents(tiny_pipeline):
    seen = []

    def callback(pipe, step, timestep, callback_kwargs):
        seen.append((step, int(timestep), callback_kwargs["latents"].shape))
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    images = tiny_pipeline(num_inference_steps=3, output_type="pt", callback_on_step_end=callback).images
    assert [s[0] for s in seen] == [0, 1, 2]
    assert [s[1] for s in seen] == tiny_pipeline.scheduler.timesteps.tolist()
    torch.testing.assert_close(images, torch.full_like(images, 0.5))  # zero latents decode to mid grey
    with pytest.raises(ValueError, match="callback tensor inputs"):
        tiny_pipeline(num_inference_steps=1, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["x"])


@pytest.mark.parametrize("sampler", ["ddpm", "euler", "dpmpp_2m"])
def test_trajectory_shapes_and_timesteps(tiny_pipeline, sampler):
    tiny_pipeline.set_sampler(sampler)
    out = tiny_pipeline(
        batch_size=2, num_inference_steps=5, output_type="np", return_trajectory=True, trajectory_stride=2
    )
    timesteps = tiny_pipeline.scheduler.timesteps.tolist()
    assert out.trajectory_timesteps == [int(timesteps[i]) for i in (0, 2, 4)]
    assert len(out.trajectory) == len(out.pred_original_trajectory) == 3
    for x_t, x_0 in zip(out.trajectory, out.pred_original_trajectory):
        assert x_t.shape == x_0.shape == (2, 16, 16, 3)
    images, trajectory, pred_x0, steps = tiny_pipeline(
        batch_size=2, num_inference_steps=5, output_type="np", return_trajectory=True, return_dict=False
    )
    assert len(trajectory) == len(pred_x0) == len(steps) == 5


def test_trajectory_ends_at_the_denoised_image_with_a_perfect_denoiser():
    scheduler = make_noise_scheduler("linear")
    target = torch.rand(1, 3, 16, 16, generator=seeded(2)) * 2 - 1
    pipe = DDPMHubPipeline(unet=OracleUNet(target, scheduler.alphas_cumprod, "epsilon"), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_sampler("ddim")
    out = pipe(num_inference_steps=10, output_type="pt", return_trajectory=True, trajectory_stride=3)
    # Every predicted x_0 is the data point; the noisy x_t move towards it.
    for pred in out.pred_original_trajectory:
        torch.testing.assert_close(pred, (target / 2 + 0.5).clamp(0, 1), atol=1e-3, rtol=0)
    distances = [float((x - (target / 2 + 0.5)).abs().mean()) for x in out.trajectory]
    assert distances == sorted(distances, reverse=True)


def test_q_sample_matches_the_closed_form(tiny_pipeline):
    image = torch.rand(2, 3, 16, 16, generator=seeded(0))
    noise = torch.randn(2, 3, 16, 16, generator=seeded(1))
    alphas_cumprod = tiny_pipeline.scheduler.alphas_cumprod
    x_t = tiny_pipeline.q_sample(image, [10, 900], noise=noise)
    for i, t in enumerate((10, 900)):
        expected = alphas_cumprod[t].sqrt() * (image[i] * 2 - 1) + (1 - alphas_cumprod[t]).sqrt() * noise[i]
        torch.testing.assert_close(x_t[i], expected)


@pytest.mark.parametrize("t", [0, 250, 999])
def test_q_sample_statistics(tiny_pipeline, t):
    # A flat grey image noised many times: per-pixel mean sqrt(alpha_bar) x_0, std sqrt(1 - alpha_bar) (DDPM eq. 4).
    value = 0.8  # in [0, 1]; x_0 = 0.6 in the model's [-1, 1] scale
    image = PIL.Image.new("RGB", (16, 16), color=(int(value * 255),) * 3)
    x0 = int(value * 255) / 255 * 2 - 1
    alpha_bar = float(tiny_pipeline.scheduler.alphas_cumprod[t])
    samples = torch.cat([tiny_pipeline.q_sample([image] * 64, t, generator=seeded(s)) for s in range(8)])
    assert samples.mean().item() == pytest.approx(np.sqrt(alpha_bar) * x0, abs=0.01)
    assert samples.std().item() == pytest.approx(np.sqrt(1 - alpha_bar), rel=0.02, abs=0.002)


def test_q_sample_uses_the_training_schedule_whatever_the_sampler(tiny_pipeline):
    image = torch.rand(1, 3, 16, 16, generator=seeded(0))
    noise = torch.randn(1, 3, 16, 16, generator=seeded(1))
    reference = tiny_pipeline.q_sample(image, 500, noise=noise)
    tiny_pipeline.set_sampler("euler")
    torch.testing.assert_close(tiny_pipeline.q_sample(image, 500, noise=noise), reference)
    with pytest.raises(ValueError, match=r"timestep.*\[0, 1000\)"):
        tiny_pipeline.q_sample(image, 1000)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_inference_steps=1001), "cannot exceed"),
        (dict(output_type="numpy"), "output_type"),
        (dict(batch_size=2, generator=[torch.Generator()]), "one per image"),
        (dict(trajectory_stride=0, return_trajectory=True), "trajectory_stride"),
    ],
)
def test_bad_call_arguments_raise_clear_errors(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**kwargs)


def test_unknown_sampler_lists_the_choices(tiny_pipeline):
    with pytest.raises(ValueError, match="choose one of: ddpm, ddim"):
        tiny_pipeline.set_sampler("dpm++")


def test_zero_terminal_snr_models_refuse_samplers_that_cannot_rescale():
    pipe = make_tiny_pipeline(rescale_betas_zero_snr=True, prediction_type="v_prediction")
    assert float(pipe.scheduler.alphas_cumprod[-1]) == 0.0
    with pytest.raises(ValueError, match="zero terminal SNR"):
        pipe.set_sampler("pndm")
    images = pipe.set_sampler("euler")(num_inference_steps=3, output_type="pt", generator=seeded(0)).images
    assert torch.isfinite(images).all()


def test_grayscale_models_give_grayscale_images():
    torch.manual_seed(0)
    unet = UNet2DModel(**{**TINY_UNET, "in_channels": 1, "out_channels": 1})
    pipe = DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler())
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2).images
    assert images[0].mode == "L" and images[0].size == (16, 16)
    assert pipe.q_sample(images, 10).shape == (2, 1, 16, 16)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sampling_on_cuda(dtype):
    pipe = make_tiny_pipeline().to("cuda", dtype)
    for sampler in ("ddpm", "ddim", "dpmpp_2m", "euler"):
        images = pipe.set_sampler(sampler)(batch_size=4, num_inference_steps=10, output_type="pt").images
        assert torch.isfinite(images).all() and images.std() > 0
