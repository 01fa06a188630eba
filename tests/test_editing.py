"""Editing with a trained model: img2img (SDEdit), inpaint (RePaint), DDIM inversion, interpolation, and their CLI."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import TINY_UNET
from diffusers import RePaintScheduler, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from ddpm_hub import DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.cli import main as ddpm_hub_main
from ddpm_hub.pipeline_ddpm_hub import repaint_levels, slerp


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 16, 16, generator=seeded(seed))


def as_np(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


class ExactUNet(UNet2DModel):
    """The exact denoiser of Gaussian data x_0 ~ N(mean, std^2 I): E[x_0 | x_t] is linear in x_t, so the model is
    smooth everywhere and its DDIM ODE maps any image to a noise and back. std 0 is a one-image data set (mean)."""

    def __init__(self, mean: torch.Tensor, std: float, alphas_cumprod: torch.Tensor, prediction_type: str):
        super().__init__(**TINY_UNET)
        self.mean, self.std, self.alphas_cumprod, self.prediction_type = mean, std, alphas_cumprod, prediction_type
        self.calls: list[int] = []

    def forward(self, sample, timestep, **kwargs):
        self.calls.append(int(timestep))
        alpha_prod = self.alphas_cumprod[int(timestep)]
        alpha, sigma = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
        x0 = self.mean + alpha * self.std**2 * (sample - alpha * self.mean) / (alpha_prod * self.std**2 + sigma**2)
        eps = (sample - alpha * x0) / sigma
        output = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[self.prediction_type]
        return UNet2DOutput(sample=output)


def exact_pipeline(prediction_type: str = "epsilon", std: float = 0.5, schedule: str = "linear") -> DDPMHubPipeline:
    scheduler = make_noise_scheduler(schedule, prediction_type=prediction_type)
    mean = torch.rand(1, 3, 16, 16, generator=seeded(1)) - 0.5
    pipe = DDPMHubPipeline(unet=ExactUNet(mean, std, scheduler.alphas_cumprod, prediction_type), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# img2img (SDEdit)


def test_img2img_at_strength_zero_returns_the_input(tiny_pipeline):
    pixels = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    image = PIL.Image.fromarray(pixels)
    out = tiny_pipeline.img2img(image, strength=0.0).images[0]
    np.testing.assert_array_equal(np.asarray(out), pixels)  # exact after the uint8 round trip
    batch = random_images(2)
    np.testing.assert_allclose(tiny_pipeline.img2img(batch, strength=0, output_type="pt").images, batch, atol=1e-6)


def test_img2img_at_strength_one_is_plain_generation(tiny_pipeline):
    tiny_pipeline.set_sampler("ddim")
    from_image = tiny_pipeline.img2img(
        random_images(1), 1.0, generator=seeded(3), num_inference_steps=4, output_type="np"
    )
    generated = tiny_pipeline(generator=seeded(3), num_inference_steps=4, output_type="np")
    np.testing.assert_array_equal(from_image.images, generated.images)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "heun", "dpmpp_2m", "unipc"])
def test_img2img_runs_the_last_strength_fraction_of_the_steps(sampler):
    # SDEdit starts at the first timestep of the last int(steps * strength) steps, like diffusers' img2img, with any
    # sampler; a stronger edit moves the result further from the input.
    pipe = exact_pipeline().set_sampler(sampler)
    image = random_images(1)
    distances = []
    for strength in (0.3, 0.9):
        pipe.unet.calls.clear()
        out = pipe.img2img(image, strength, generator=seeded(0), num_inference_steps=10, output_type="pt").images
        pipe.scheduler.set_timesteps(10)
        skipped = (10 - int(10 * strength)) * pipe.scheduler.order
        assert pipe.unet.calls == [int(t) for t in pipe.scheduler.timesteps[skipped:]]
        assert torch.isfinite(out).all()
        distances.append(float((out - image).abs().mean()))
    assert distances[0] < distances[1]


def test_img2img_is_reproducible_per_image(tiny_pipeline):
    images = random_images(2)
    generators = [seeded(4), seeded(5)]
    batch = tiny_pipeline.img2img(images, 0.5, generator=generators, num_inference_steps=4, output_type="np")
    alone = tiny_pipeline.img2img(images[1:], 0.5, generator=[seeded(5)], num_inference_steps=4, output_type="np")
    np.testing.assert_allclose(alone.images[0], batch.images[1], atol=1e-5)


# inpaint (RePaint)


def center_mask(size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.float32)
    mask[4:12, 4:12] = 1  # white = fill
    return mask


def test_inpaint_keeps_the_black_region_and_fills_the_white_one(tiny_pipeline):
    pixels = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
    mask = center_mask()
    out = tiny_pipeline.inpaint(
        PIL.Image.fromarray(pixels),
        PIL.Image.fromarray((mask * 255).astype(np.uint8)),
        generator=seeded(0),
        num_inference_steps=6,
        jump_length=2,
        jump_n_sample=2,
    ).images[0]
    out = np.asarray(out).astype(int)
    keep = mask == 0
    # The known region is the input noised to level 0, i.e. the input itself: equal after the uint8 round trip.
    assert np.abs(out[keep] - pixels[keep]).max() <= 1
    assert np.abs(out[~keep] - pixels[~keep]).mean() > 10


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_inpaint_fills_with_what_the_model_knows(prediction_type):
    # A one-image data set (std 0): the exact model knows the image, so the filled region must become that image,
    # whatever the model predicts; the kept region stays the input.
    pipe = exact_pipeline(prediction_type, std=0.0)
    target = pipe.unet.mean / 2 + 0.5
    image = random_images(1, seed=7)
    mask = center_mask()
    out = pipe.inpaint(
        image, mask, generator=seeded(0), num_inference_steps=20, jump_length=5, jump_n_sample=2, output_type="pt"
    )
    fill = torch.from_numpy(mask).bool().expand_as(image)
    torch.testing.assert_close(out.images[fill], target.clamp(0, 1)[fill], atol=2e-3, rtol=0)
    torch.testing.assert_close(out.images[~fill], image[~fill], atol=1e-5, rtol=0)


def test_inpaint_resampling_jumps_follow_repaint():
    # The jump schedule is RePaint's (diffusers' RePaintScheduler counts the same levels times its step), and the model
    # is called once per step down: N + (jump_n_sample - 1) * jump_length per jump point.
    for steps, length, n_sample in [(8, 2, 3), (20, 5, 4), (10, 10, 10), (6, 1, 1)]:
        repaint = RePaintScheduler(num_train_timesteps=steps)
        repaint.set_timesteps(steps, jump_length=length, jump_n_sample=n_sample)
        assert repaint_levels(steps, length, n_sample) == repaint.timesteps.tolist()
    pipe = exact_pipeline()
    pipe.inpaint(random_images(1), center_mask(), num_inference_steps=8, jump_length=2, jump_n_sample=3)
    assert len(pipe.unet.calls) == 8 + 2 * 2 * len(range(0, 8 - 2, 2))
    pipe.scheduler.set_timesteps(8)
    assert sorted(set(pipe.unet.calls)) == sorted(pipe.scheduler.timesteps.tolist())


def test_masks_in_every_format_mean_the_same(tiny_pipeline):
    mask = center_mask()
    formats = [
        PIL.Image.fromarray((mask * 255).astype(np.uint8)).convert("RGB"),  # RGB black/white files are common
        mask,
        (mask * 255).astype(np.uint8)[..., None],
        torch.from_numpy(mask)[None],
        np.kron(mask, np.ones((2, 2), dtype=np.float32)),  # larger masks are resized with the image
    ]
    images = [random_images(1)[0]] * 4 + [torch.nn.functional.interpolate(random_images(1), scale_factor=2)[0]]
    run = lambda image, mask: (
        tiny_pipeline.inpaint(  # noqa: E731
            image, mask, generator=seeded(0), num_inference_steps=3, jump_n_sample=1, output_type="np"
        ).images
    )
    results = [run(image, m) for image, m in zip(images, formats)]
    for other in results[1:4]:
        np.testing.assert_array_equal(results[0], other)
    keep = np.broadcast_to(mask[None, ..., None] == 0, results[0].shape)
    resized_input = tiny_pipeline.img2img(images[4], strength=0, output_type="np").images
    np.testing.assert_allclose(results[4][keep], resized_input[keep], atol=1e-6)
    assert not np.allclose(results[0], as_np(images[0][None]))


# DDIM inversion and interpolation


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_inversion_then_ddim_sampling_reconstructs_the_image(prediction_type):
    # Measured with this exact model (linear schedule): max error 0.237 at 10 steps, 0.051 at 50, 0.026 at 100, the
    # same for eps, v and x_0 models (first order in the step). A random tiny UNet does NOT invert: its outputs are no
    # consistent score, and the reconstruction error stays ~0.45 mean even at 200 steps.
    pipe = exact_pipeline(prediction_type)
    images = random_images(2)
    errors = {}
    for steps in (10, 50):
        latents = pipe.invert(images, num_inference_steps=steps).latents
        assert latents.shape == (2, 3, 16, 16)
        pipe.set_sampler("ddim", clip_sample=False)
        again = pipe(batch_size=2, latents=latents, num_inference_steps=steps, eta=0.0, output_type="pt").images
        errors[steps] = float((again - images).abs().max())
    assert errors[50] < 0.055  # 0.051 measured; converting v or x_0 at the wrong noise level gives 0.060
    assert errors[50] < errors[10] / 3  # the error shrinks with the step, as an Euler scheme's should


def test_invert_output_forms(tiny_pipeline):
    out = tiny_pipeline.invert(random_images(1), num_inference_steps=3)
    assert out.latents.dtype == torch.float32 and len(out.images) == 1 and out.images[0].size == (16, 16)
    latents, images = tiny_pipeline.invert(random_images(1), num_inference_steps=3, output_type="np", return_dict=False)
    torch.testing.assert_close(latents, out.latents)
    assert images.shape == (1, 16, 16, 3)


def test_interpolation_end_frames_match_the_inputs():
    pipe = exact_pipeline("v_prediction")
    images = random_images(2, seed=3)
    pil = [PIL.Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()) for image in images]
    frames = pipe.interpolate(pil[0], pil[1], num_frames=5, num_inference_steps=50, output_type="pt").images
    assert frames.shape == (5, 3, 16, 16)
    assert float((frames[0] - images[0]).abs().max()) < 0.055
    assert float((frames[-1] - images[1]).abs().max()) < 0.055
    assert float((frames[2] - images[0]).abs().mean()) > 0.05 and float((frames[2] - images[1]).abs().mean()) > 0.05


def test_interpolation_between_seeds_starts_and_ends_at_their_samples(tiny_pipeline):
    frames = tiny_pipeline.interpolate(seed_a=0, seed_b=1, num_frames=3, num_inference_steps=3, output_type="np").images
    tiny_pipeline.set_sampler("ddim", clip_sample=False)
    for frame, seed in ((frames[0], 0), (frames[-1], 1)):
        sample = tiny_pipeline(generator=seeded(seed), num_inference_steps=3, output_type="np").images[0]
        np.testing.assert_allclose(frame, sample, atol=1e-5)
    assert len(frames) == 3 and not np.allclose(frames[1], frames[0])


def test_slerp_keeps_the_ends_and_the_norm():
    a, b = torch.randn(2, 3, 16, 16, generator=seeded(0)), torch.randn(2, 3, 16, 16, generator=seeded(1))
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    b = b / b.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * a.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    middle = slerp(a, b, 0.5)
    torch.testing.assert_close(middle.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1))
    torch.testing.assert_close(slerp(a, a, 0.3), a)  # parallel: the straight line


# Bad input: one clear sentence, before any denoising.


@pytest.mark.parametrize(
    "method, kwargs, message",
    [
        ("img2img", dict(image="cat.png"), r"`image` must be a PIL image.*got str"),
        ("img2img", dict(image=None), r"`image` must be a PIL image.*got NoneType"),
        ("img2img", dict(image=np.zeros(16)), r"got ndarray of shape \(16,\)"),
        ("img2img", dict(image=torch.rand(3, 16, 16), strength=1.5), r"`strength` must be a number in \[0, 1\]"),
        ("img2img", dict(image=torch.rand(3, 16, 16), strength=0.05, num_inference_steps=10), "runs no step"),
        ("inpaint", dict(image=torch.rand(3, 16, 16), mask_image="hole.png"), r"`mask_image` must be a single.*str"),
        ("inpaint", dict(image=torch.rand(3, 16, 16), mask_image=np.ones((16, 16, 3))), "must have one channel"),
        ("inpaint", dict(image=torch.rand(3, 16, 16), mask_image=np.ones((8, 8))), "is 8x8 but `image` is 16x16"),
        ("inpaint", dict(image=torch.rand(3, 16, 16), mask_image=np.zeros((16, 16))), "no white pixel"),
        ("inpaint", dict(image=torch.rand(3, 16, 16), mask_image=np.full((16, 16), 2.0)), r"lie in \[0, 1\]"),
        ("inpaint", dict(image=torch.rand(3, 16, 16), mask_image=np.ones((16, 16)), jump_length=0), "`jump_length`"),
        ("invert", dict(image=[]), "`image` must be a PIL image"),
        ("interpolate", dict(), "exactly one of `image_a` and `seed_a`"),
        ("interpolate", dict(seed_a=0, seed_b=1, num_frames=1), "`num_frames` must be an integer >= 2"),
        ("interpolate", dict(image_a=torch.rand(2, 3, 16, 16), seed_b=1), "must be one image, got a batch"),
    ],
)
def test_bad_editing_inputs_fail_in_one_line(tiny_pipeline, method, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        getattr(tiny_pipeline, method)(**kwargs)
    assert "\n" not in str(error.value)


# The CLI: `ddpm-hub sample` with editing options, on a saved pipeline.


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit-inputs")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        PIL.Image.fromarray((rng.random((32, 32, 4)) * 255).astype(np.uint8), "RGBA").save(folder / f"{name}.png")
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    PIL.Image.fromarray(mask).save(folder / "mask.png")
    PIL.Image.fromarray(mask[:16]).save(folder / "small-mask.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def sample_cli(saved_pipeline_dir, output, *args):
    return ddpm_hub_main(
        ["sample", str(saved_pipeline_dir), "--output", str(output), "--num_inference_steps", "4", *args]
    )


def test_cli_img2img_inpaint_and_interpolate(saved_pipeline_dir, image_files, tmp_path, capsys):
    a, b, mask = image_files / "a.png", image_files / "b.png", image_files / "mask.png"
    assert sample_cli(saved_pipeline_dir, tmp_path / "img2img.png", "--init_image", str(a), "--strength", "0.5",
                      "--num_images", "2") == 0  # fmt: skip
    assert sample_cli(saved_pipeline_dir, tmp_path / "inpaint.png", "--init_image", str(a), "--mask_image", str(mask),
                      "--num_images", "2", "--jump_length", "2", "--jump_n_sample", "2") == 0  # fmt: skip
    assert sample_cli(saved_pipeline_dir, tmp_path / "strip.png", "--interpolate", str(a), str(b),
                      "--num_frames", "3") == 0  # fmt: skip
    assert sample_cli(saved_pipeline_dir, tmp_path / "seeds.png", "--interpolate", "0", "1", "--num_frames", "4") == 0
    assert "Saved" in capsys.readouterr().out
    sizes = {name: PIL.Image.open(tmp_path / f"{name}.png").size for name in ("img2img", "inpaint", "strip", "seeds")}
    assert sizes == {"img2img": (32, 16), "inpaint": (32, 16), "strip": (48, 16), "seeds": (64, 16)}
    with PIL.Image.open(tmp_path / "inpaint.png") as grid:
        # The kept border of the (RGBA on white, resized to 16 px) input survives inpainting in both tiles.
        kept = np.asarray(grid.convert("RGB")).astype(int)[:4]
    pipe = DDPMHubPipeline.from_pretrained(saved_pipeline_dir)
    expected = pipe.img2img(_model_mode(a), strength=0.0, output_type="np").images[0]
    assert np.abs(kept[:, :16] - np.rint(expected[:4] * 255)).max() <= 1
    assert not list(tmp_path.glob(".*.tmp"))


def _model_mode(path):
    from ddpm_hub.data import open_image, to_model_mode

    return to_model_mode(open_image(str(path)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--init_image", "{missing}"], "--init_image '{missing}' is not a readable image: no such file."),
        (["--init_image", "{broken}"], "--init_image '{broken}' is not a readable image"),
        (["--init_image", "{a}", "--mask_image", "{small}"], "--mask_image is 32x16 but --init_image is 32x32"),
        (["--init_image", "{a}", "--strength", "2"], "--strength must lie in [0, 1], got 2.0."),
        (["--mask_image", "{mask}"], "--mask_image needs --init_image"),
        (["--init_image", "{a}", "--mask_image", "{mask}", "--strength", "0.5"], "--strength applies to image to"),
        (["--interpolate", "{a}", "3", "--init_image", "{a}"], "--interpolate cannot be combined"),
        (["--interpolate", "0", "1", "--num_frames", "1"], "--num_frames must be at least 2, got 1."),
    ],
)
def test_cli_bad_editing_options_exit_2_in_one_line(saved_pipeline_dir, image_files, tmp_path, capsys, args, message):
    names = dict(missing=image_files / "missing.png", broken=image_files / "broken.png", a=image_files / "a.png",
                 mask=image_files / "mask.png", small=image_files / "small-mask.png")  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        sample_cli(saved_pipeline_dir, tmp_path / "out.png", *[arg.format(**names) for arg in args])
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("ddpm-hub: error: ") and message.format(**names) in last_line
    assert not (tmp_path / "out.png").exists()
