"""Super-resolution and cascades: the pipeline's `upscale`, its low-resolution input, saving and loading, the cascade
and `ddpm-hub sample --upscaler`, `ddpm-hub eval` of an upscaler, and the explorer's Upscaling panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import TINY_UNET, run_python
from diffusers import UNet2DModel

from ddpm_hub import SAMPLERS, DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.assembly import PipelineParts
from ddpm_hub.cli import main as cli_main
from ddpm_hub.pipeline_superres import augmentation_alpha_bar, downsample, low_res_condition, upsample
from ddpm_hub.superres import DDPMHubCascade

LOW = 8  # the tiny upscaler takes 8x8 images to the 16x16 of TINY_UNET


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def make_upscaler(low: int = LOW, size: int = 16, noise_max: int = 200, seed: int = 0) -> DDPMHubPipeline:
    torch.manual_seed(seed)
    unet = UNet2DModel(**{**TINY_UNET, "sample_size": size, "in_channels": 6, "class_embed_type": "timestep"}).eval()
    pipe = DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler(), low_resolution=low, low_res_noise_max=noise_max)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_base(size: int = LOW, seed: int = 0) -> DDPMHubPipeline:
    torch.manual_seed(seed)
    unet = UNet2DModel(**{**TINY_UNET, "sample_size": size}).eval()
    pipe = DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def low_res_images(count: int = 2, size: int = LOW) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def upscaler() -> DDPMHubPipeline:
    return make_upscaler()


@pytest.fixture(scope="module")
def saved_upscaler(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("superres") / "tiny-sr"
    make_upscaler().save_pretrained(path)
    return path


# --- The low-resolution input ---------------------------------------------------------------------------------


def test_resampling_is_antialiased_bicubic_and_keeps_the_range():
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    ours = (downsample(pixels, 16) + 1) * 127.5
    pil = np.asarray(image.resize((16, 16), PIL.Image.Resampling.BICUBIC), dtype=np.float32)
    # PIL's antialiased bicubic resize, to rounding; plain (aliased) bicubic sampling of noise is far from it.
    assert np.abs(ours[0].permute(1, 2, 0).numpy() - pil).max() < 1.5
    aliased = torch.nn.functional.interpolate(pixels, size=(16, 16), mode="bicubic", align_corners=False)
    assert np.abs(((aliased[0] + 1) * 127.5).permute(1, 2, 0).numpy() - pil).max() > 20
    assert downsample(pixels * 3, 16).abs().max() <= 1 and upsample(pixels[:, :, :8, :8] * 3, 32).abs().max() <= 1


def test_augmentation_level_zero_is_clean_and_level_s_is_the_forward_process_at_t_equals_s():
    scheduler = make_noise_scheduler()
    alpha_bar = augmentation_alpha_bar(scheduler.alphas_cumprod, torch.tensor([0, 1, 250]))
    assert alpha_bar[0] == 1 and alpha_bar[1] == scheduler.alphas_cumprod[0]
    assert alpha_bar[2] == scheduler.alphas_cumprod[249]
    low = torch.rand(3, 3, 4, 4) * 2 - 1
    noise = torch.randn(3, 3, 16, 16)
    condition = low_res_condition(low, 16, torch.tensor([0, 1, 250]), scheduler.alphas_cumprod, noise)
    torch.testing.assert_close(condition[0], upsample(low, 16)[0])
    expected = scheduler.add_noise(upsample(low, 16)[2:], noise[2:], torch.tensor([249]))
    torch.testing.assert_close(condition[2:], expected)


def test_the_unet_sees_x_t_then_the_upsampled_image_and_the_level_as_class_label(upscaler):
    seen = []
    hook = upscaler.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0].clone(), kwargs["class_labels"].clone())), with_kwargs=True
    )
    try:
        low = low_res_images()
        PipelineParts.of(upscaler).pipeline("ddim").upscale(
            low, noise_level=[0, 7], generator=seeded(0, 1), num_inference_steps=2
        )
    finally:
        hook.remove()
    model_input, labels = seen[0]
    assert model_input.shape == (2, 6, 16, 16) and labels.tolist() == [0, 7]
    torch.testing.assert_close(model_input[0, 3:], upsample(low[:1] * 2 - 1, 16)[0])  # level 0: the clean input
    assert not torch.allclose(model_input[1, 3:], upsample(low[1:] * 2 - 1, 16)[0])  # level 7: noised


# --- upscale ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_upscales_reproducibly(upscaler, sampler):
    pipe = PipelineParts.of(upscaler).pipeline(sampler)
    first = pipe.upscale(low_res_images(), generator=seeded(0, 1), num_inference_steps=3, output_type="np").images
    again = pipe.upscale(low_res_images(), generator=seeded(0, 1), num_inference_steps=3, output_type="np").images
    assert first.shape == (2, 16, 16, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "euler"])
def test_device_steps_upscale_as_the_schedulers_own_steps(upscaler, sampler):
    pipe = PipelineParts.of(upscaler).pipeline(sampler)
    results = []
    for device_steps in (True, False):
        pipe.device_steps = device_steps
        results.append(pipe.upscale(low_res_images(), generator=seeded(3, 4), num_inference_steps=4, output_type="pt"))
    torch.testing.assert_close(results[0].images, results[1].images, atol=1e-4, rtol=0)


def test_another_noise_level_gives_another_image_and_each_image_its_own_generator(upscaler):
    pipe = PipelineParts.of(upscaler).pipeline("ddpm")
    low = low_res_images()
    run = lambda **kw: pipe.upscale(num_inference_steps=3, output_type="pt", **kw).images  # noqa: E731
    batch = run(image=low, generator=seeded(0, 1))
    alone = run(image=low[1:], generator=seeded(1))
    torch.testing.assert_close(batch[1:], alone, atol=1e-4, rtol=0)  # batched convolutions round differently
    assert (run(image=low, generator=seeded(0, 1), noise_level=150) - batch).abs().max() > 0.05
    assert (run(image=low, generator=seeded(5, 6)) - batch).abs().max() > 0.05


def test_pil_images_arrays_and_tensors_upscale_alike(upscaler):
    low = low_res_images(1)
    array = low[0].permute(1, 2, 0).numpy()
    image = PIL.Image.fromarray((array * 255).round().astype(np.uint8))
    outputs = [
        upscaler.upscale(item, generator=seeded(0), num_inference_steps=2, output_type="np").images
        for item in (low, array, [image])
    ]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)
    np.testing.assert_allclose(outputs[0], outputs[2], atol=0.05)  # the PIL image is rounded to 8 bits


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p.upscale(torch.rand(1, 3, 9, 9)), r"`image` must be 8x8 pixels, the size this model upscales from"),
        (lambda p: p.upscale([PIL.Image.new("RGB", (16, 16))]), r"must be 8x8 pixels.*; got 16x16"),
        (lambda p: p.upscale(low_res_images(), noise_level=201), r"`noise_level` must be an integer in \[0, 200\]"),
        (lambda p: p.upscale(low_res_images(), noise_level=[1, 2, 3]), r"Got 3 noise levels for 2 images"),
        (lambda p: p(num_inference_steps=2), r"super-resolution model \(8 to 16 px\): it needs a low-resolution"),
        (lambda p: p.img2img(torch.rand(1, 3, 16, 16), num_inference_steps=2), r"call `pipe.upscale\(image\)`"),
    ],
)
def test_bad_input_fails_in_one_line(upscaler, call, message):
    with pytest.raises(ValueError, match=message) as error:
        call(upscaler)
    assert "\n" not in str(error.value)


def test_models_that_cannot_upscale_are_refused_in_one_line(tiny_pipeline):
    with pytest.raises(ValueError, match="not a super-resolution model .*call `pipe\\(...\\)`"):
        tiny_pipeline.upscale(low_res_images())
    timestep_unet = UNet2DModel(**{**TINY_UNET, "in_channels": 6, "class_embed_type": "timestep"})
    scheduler = make_noise_scheduler()
    cases = [
        (dict(unet=timestep_unet), r"a super-resolution model with `low_resolution` takes \"timestep\""),
        (dict(unet=UNet2DModel(**TINY_UNET), low_resolution=8), r'class_embed_type="timestep", got None'),
        (dict(unet=timestep_unet, low_resolution=5), r"`low_resolution` 5 must divide the UNet's sample size 16"),
        (dict(unet=timestep_unet, low_resolution=16), r"must divide the UNet's sample size 16 and be smaller"),
        (dict(unet=timestep_unet, low_resolution=8, low_res_noise_max=1001), r"must be an integer in \[0, 1000\]"),
        (dict(unet=timestep_unet, low_resolution=8, low_res_upsampling="nearest"), r"is not one of: bicubic"),
        (dict(unet=UNet2DModel(**TINY_UNET), low_res_noise_max=3), r"apply to a super-resolution model only"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            DDPMHubPipeline(scheduler=scheduler, **kwargs)


def test_half_precision_unet_takes_its_level(upscaler):
    pipe = PipelineParts.of(make_upscaler()).pipeline("ddim")
    pipe.unet.to(torch.bfloat16)  # diffusers' UNet2DModel alone fails here: its level embedding arrives in float32
    images = pipe.upscale(low_res_images(), generator=seeded(0, 1), num_inference_steps=2, output_type="pt").images
    assert torch.isfinite(images).all()


# --- Saving, loading, the Hub ------------------------------------------------------------------------------------


def test_saved_upscaler_records_its_input_and_loads_as_itself(saved_upscaler):
    index = json.loads((saved_upscaler / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "DDPMHubPipeline"]  # a stock DDPMPipeline could not upscale
    assert (index["low_resolution"], index["low_res_noise_max"], index["low_res_upsampling"]) == (8, 200, "bicubic")
    assert (saved_upscaler / "pipeline_superres.py").is_file()
    loaded = DDPMHubPipeline.from_pretrained(saved_upscaler)
    loaded.set_progress_bar_config(disable=True)
    assert (loaded.low_resolution, loaded.low_res_noise_max, loaded.sample_shape) == (8, 200, (3, 16, 16))
    run = lambda pipe: (
        pipe.upscale(  # noqa: E731
            low_res_images(), generator=seeded(0, 1), num_inference_steps=2, noise_level=9, output_type="np"
        ).images
    )
    np.testing.assert_allclose(run(loaded), run(make_upscaler()))


PUSH_AND_SAMPLE = """
from ddpm_hub.cli import main
for folder, repo in (({base!r}, "test-org/base-8"), ({sr!r}, "test-org/sr-8-16")):
    assert main(["push", folder, "--repo_id", repo]) == 0
assert main(["sample", "test-org/base-8", "--upscaler", "test-org/sr-8-16", "--num_images", "2",
             "--num_inference_steps", "2", "--noise_level", "3", "--output", {grid!r}]) == 0
"""

WITHOUT_DDPM_HUB = """
import numpy as np, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("test-org/sr-8-16", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
low = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
images = pipe.upscale(low, noise_level=9, generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                      num_inference_steps=2, output_type="np").images
print("remote:", type(pipe).__name__, pipe.low_resolution, images.shape, repr(images.reshape(-1)[:6].tolist()))
"""


def test_cascade_through_the_hub_and_the_upscaler_without_ddpm_hub(hub_server, saved_upscaler, tmp_path):
    from test_hub import hub_env

    base = tmp_path / "base-8"
    make_base().save_pretrained(base)
    grid = tmp_path / "cascade.png"
    run_python(PUSH_AND_SAMPLE.format(base=str(base), sr=str(saved_upscaler), grid=str(grid)),
               env=hub_env(hub_server, tmp_path), cwd=tmp_path)  # fmt: skip
    assert PIL.Image.open(grid).size == (2 * 16, 16)  # two images at the last stage's resolution
    out = run_python(WITHOUT_DDPM_HUB, without_ddpm_hub=True, env=hub_env(hub_server, tmp_path, "cache-2"))
    remote = next(line for line in out.splitlines() if line.startswith("remote:"))
    assert "DDPMHubPipeline 8 (2, 16, 16, 3)" in remote
    ours = DDPMHubPipeline.from_pretrained(saved_upscaler)
    ours.set_progress_bar_config(disable=True)
    expected = ours.upscale(low_res_images(), noise_level=9, generator=seeded(0, 1), num_inference_steps=2,
                            output_type="np").images  # fmt: skip
    np.testing.assert_allclose(expected.reshape(-1)[:6], eval(remote.split("(2, 16, 16, 3) ")[1]), atol=1e-5)


# --- Cascades ---------------------------------------------------------------------------------------------------


def test_cascade_chains_stages_reproducibly_and_refuses_stages_that_do_not_chain(upscaler):
    second = make_upscaler(low=16, size=32, seed=1)
    cascade = DDPMHubCascade([make_base(), upscaler, second]).set_sampler("ddim")
    run = lambda: cascade(batch_size=2, generator=seeded(0, 1), num_inference_steps=2, return_stages=True)  # noqa: E731
    output = run()
    assert [stage[0].size for stage in output.stages] == [(8, 8), (16, 16), (32, 32)]
    assert output.images[0].size == (32, 32)
    np.testing.assert_array_equal(np.asarray(output.images[1]), np.asarray(run().images[1]))
    # A cascade that starts with an upscaler takes the images to upscale.
    upscaled = DDPMHubCascade([upscaler, second])(image=low_res_images(), generator=seeded(0, 1), num_inference_steps=2)
    assert upscaled.images[0].size == (32, 32)
    with pytest.raises(ValueError, match=r"takes 16x16 images but .* makes 8x8 ones"):
        DDPMHubCascade([make_base(), second])
    with pytest.raises(ValueError, match="is not a super-resolution model"):
        DDPMHubCascade([make_base(), make_base()])
    with pytest.raises(ValueError, match="is an upscaler: give the `image`"):
        DDPMHubCascade([upscaler])(num_inference_steps=2)


def test_sample_cli_upscales_a_given_image_and_refuses_bad_input_in_one_line(saved_upscaler, tmp_path, capsys):
    PIL.Image.new("RGB", (LOW, LOW), (200, 40, 40)).save(tmp_path / "low.png")
    PIL.Image.new("RGB", (12, 12)).save(tmp_path / "wrong.png")
    base = tmp_path / "base-8"
    make_base().save_pretrained(base)
    common = ["--num_inference_steps", "2", "--output", str(tmp_path / "out.png")]
    assert cli_main(["sample", str(saved_upscaler), "--low_res_image", str(tmp_path / "low.png"),
                     "--num_images", "4", *common]) == 0  # fmt: skip
    assert PIL.Image.open(tmp_path / "out.png").size == (2 * 16, 2 * 16)
    bad = [
        ([str(saved_upscaler), "--low_res_image", str(tmp_path / "wrong.png")], "is 12x12; .* upscales 8x8 images"),
        ([str(base), "--upscaler", str(saved_upscaler), "--upscaler", str(saved_upscaler)], "takes 8x8 images but"),
        ([str(base), "--low_res_image", str(tmp_path / "low.png")], "--low_res_image needs a super-resolution MODEL"),
        ([str(base), "--upscaler", str(saved_upscaler), "--noise_level", "500"], "--noise_level 500 is above"),
        ([str(saved_upscaler), "--low_res_image", str(tmp_path / "low.png"), "--strength", "1"], "cannot be combined"),
        ([str(base), "--upscaler", str(saved_upscaler), "--classifier", str(base)], "cannot be combined with --class"),
        # An option that cannot apply is refused before any model loads (this one does not exist).
        (
            [str(tmp_path / "absent"), "--low_res_image", str(tmp_path / "low.png"), "--class_label", "3"],
            "--class_label and --guidance_scale apply to a base model",
        ),
    ]
    for args, message in bad:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["sample", *args, *common])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and re.search(message, error), error


# --- Evaluation, the card and the explorer -----------------------------------------------------------------------


def test_the_card_says_what_an_upscaler_upscales_and_other_cards_say_nothing_of_it():
    from ddpm_hub.model_card import build_model_card, card_info_for_run

    settings = {"resolution": 64, "model": "small", "low_res_noise_max": None}
    plain = str(build_model_card(card_info_for_run({**settings, "low_resolution": None})))
    upscaler = str(build_model_card(card_info_for_run({**settings, "low_resolution": 16, "low_res_noise_max": 9})))
    assert "low_res" not in plain and "upscale" not in plain and "pipeline_tag: unconditional-image-generation" in plain
    assert "it upscales 16x16 images to 64x64 pixels" in upscaler and "pipeline_tag: image-to-image" in upscaler
    assert "| low_res_noise_max | 9 |" in upscaler and ".upscale(low_res" in upscaler


def test_eval_scores_the_upscaler_beside_bicubic(saved_upscaler, tmp_path):
    from ddpm_hub.data import draw_shapes
    from ddpm_hub.evaluation.evaluate import evaluate_model, format_table
    from ddpm_hub.evaluation.upscaler import consistency, low_res_inputs

    reference = tmp_path / "reference"
    reference.mkdir()
    for i, image in enumerate(draw_shapes(num_images=6, size=16, seed=0)):
        image.save(reference / f"{i}.png")
    result = evaluate_model(
        str(saved_upscaler), str(reference), metrics="psnr,ssim,consistency", num_samples=4, num_inference_steps=2,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert result["num_images"] == 4 and result["upscaler"] == "8px to 16px"
    model, bicubic = result, result["bicubic"]
    # Bicubic upscaling keeps its input (downsampled again it is the input, to rounding and clipping); the untrained
    # model's noise does not, and is far from the originals.
    assert bicubic["consistency"] < 1e-3 < model["consistency"]
    assert bicubic["psnr"] > model["psnr"] + 5 and bicubic["ssim"] > model["ssim"]
    table = format_table(result)
    assert "bicubic" in table.splitlines()[0] and "PSNR (dB)" in table
    originals = np.stack([np.asarray(PIL.Image.open(reference / f"{i}.png")).transpose(2, 0, 1) for i in range(4)])
    assert consistency(originals, low_res_inputs(originals, LOW)).max() == 0  # the originals are their own input
    make_base(16).save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="score a super-resolution model .* generates from noise"):
        evaluate_model(str(tmp_path / "base"), str(reference), metrics="psnr", num_samples=4)
    with pytest.raises(ValueError, match="likelihood is conditional"):
        evaluate_model(str(saved_upscaler), str(reference), metrics="nll", num_samples=4)


def test_upscaling_panel_shows_input_bicubic_upscaled_and_original(upscaler):
    from ddpm_hub.app import panels

    result = panels.upscale_image(upscaler, panels.builtin_image("cat (Twemoji)"), "ddim", 2, noise_level=3)
    assert result.upscaled.size == (16, 16) and result.strip.width == 4 * 128
    given = panels.upscale_image(upscaler, PIL.Image.new("RGB", (LOW, LOW), "blue"), "ddim", 2)
    assert given.strip.width == 3 * 128  # a low-resolution image has no original to show
    with pytest.raises(ValueError, match="load a super-resolution model"):
        panels.upscale_image(make_base(), PIL.Image.new("RGB", (LOW, LOW)), "ddim", 2)
