"""Latent models in the pipeline: a `vae` decodes every path and encodes every edit; saving and loading everywhere.

The VAEs are tiny random `AutoencoderKL` and `VQModel`s (f = 2: 32 px images, 16 px latents with 4 channels), so
their round trip is far from the input: the tests compare against the round trip `decode(encode(x))`, not x.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_UNET, make_tiny_pipeline, run_python
from diffusers import AutoencoderKL, UNet2DModel, VQModel

from ddpm_hub import SAMPLERS, DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.assembly import PipelineParts
from ddpm_hub.export import export_pipeline, sample_grid
from ddpm_hub.pipeline import PIPELINE_SOURCE_FILES

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
)
LATENT_UNET = {**TINY_UNET, "in_channels": 4, "out_channels": 4}  # 16 px latents of 32 px images
LABELS = ["cat", "dog", "fish"]


def make_vae(kind: str):
    torch.manual_seed(1)
    if kind == "kl":
        return AutoencoderKL(sample_size=32, **VAE_CONFIG).eval()
    return VQModel(num_vq_embeddings=16, **VAE_CONFIG).eval()


def make_latent_pipeline(kind: str = "kl", conditional: bool = False, **kwargs) -> DDPMHubPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(**LATENT_UNET, **({"num_class_embeds": 4} if conditional else {})).eval()
    labels = {"label_names": LABELS} if conditional else {}
    pipe = DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler(), vae=make_vae(kind), **labels, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(count: int = 1, seed: int = 3) -> torch.Tensor:
    return torch.rand(count, 3, 32, 32, generator=seeded(seed))


def round_trip(pipe: DDPMHubPipeline, image: torch.Tensor) -> torch.Tensor:
    """decode(encode(x)) in [0, 1]: what a latent model can give back of an image at best."""
    return pipe.postprocess(pipe.encode_images(image * 2 - 1), "pt")


@pytest.fixture(params=["kl", "vq"])
def latent_pipe(request) -> DDPMHubPipeline:
    return make_latent_pipeline(request.param)


@pytest.fixture(scope="module")
def latent_dirs(tmp_path_factory) -> dict[str, object]:
    """Saved latent pipelines: KL and VQ with the VAE's own factor, KL with an overridden factor."""
    root = tmp_path_factory.mktemp("latent")
    dirs = {}
    for name, kind, kwargs in (("kl", "kl", {}), ("vq", "vq", {}), ("kl-scaled", "kl", {"latent_scaling_factor": 0.5})):
        dirs[name] = root / name
        make_latent_pipeline(kind, **kwargs).save_pretrained(dirs[name])
    return dirs


# --- Generation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_decodes_to_the_image_size(kind, sampler):
    pipe = make_latent_pipeline(kind).set_sampler(sampler)
    out = pipe(batch_size=2, num_inference_steps=3, output_type="np", generator=[seeded(0), seeded(1)]).images
    assert out.shape == (2, 32, 32, 3) and np.isfinite(out).all() and out.std() > 0
    latents = pipe(batch_size=2, num_inference_steps=3, output_type="latent", generator=[seeded(0), seeded(1)]).images
    assert latents.shape == (2, 4, 16, 16)
    # The images are the VAE's decoding of exactly those latents.
    np.testing.assert_allclose(pipe.postprocess(latents, "np"), out, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "euler"])
def test_device_steps_match_the_scheduler_step_on_latents(sampler):
    pipe = make_latent_pipeline("kl").set_sampler(sampler)
    run = lambda: pipe(num_inference_steps=4, output_type="latent", generator=seeded(2)).images  # noqa: E731
    on_device = run()
    pipe.device_steps = False
    torch.testing.assert_close(on_device, run(), atol=1e-3, rtol=1e-3)  # float32 coefficients vs the scheduler's


def test_trajectory_is_decoded_unless_latent(latent_pipe):
    out = latent_pipe(num_inference_steps=3, output_type="np", return_trajectory=True, generator=seeded(0))
    assert len(out.trajectory) == len(out.pred_original_trajectory) == 3
    assert out.trajectory[0].shape == out.pred_original_trajectory[-1].shape == (1, 32, 32, 3)
    raw = latent_pipe(num_inference_steps=3, output_type="latent", return_trajectory=True, generator=seeded(0))
    assert raw.trajectory[0].shape == (1, 4, 16, 16)
    np.testing.assert_allclose(latent_pipe.postprocess(raw.trajectory[1], "np"), out.trajectory[1], atol=1e-5)


def test_guidance_on_a_conditional_latent_model():
    pipe = make_latent_pipeline("kl", conditional=True)
    run = lambda **kw: pipe(num_inference_steps=3, output_type="latent", generator=seeded(4), **kw).images  # noqa: E731
    guided, conditional = run(class_labels="dog", guidance_scale=3.0), run(class_labels="dog", guidance_scale=1.0)
    unconditional = run(class_labels="dog", guidance_scale=0.0)
    assert guided.shape == (1, 4, 16, 16) and not torch.allclose(guided, conditional)
    assert not torch.allclose(conditional, unconditional)
    assert pipe(class_labels=["cat", "fish"], num_inference_steps=2, output_type="np").images.shape == (2, 32, 32, 3)


def test_compiled_latent_pipeline_matches_eager():
    pipe = make_latent_pipeline("kl").set_sampler("ddim")
    run = lambda: pipe(batch_size=2, num_inference_steps=3, output_type="np", generator=[seeded(0), seeded(1)]).images  # noqa: E731
    eager = run()
    pipe.compile(backend="aot_eager")  # traces like inductor without generating code (batch 1 trips aot_eager)
    np.testing.assert_allclose(run(), eager, atol=1e-4)


def test_q_sample_noises_latents_and_decodes_for_viewing(latent_pipe):
    image = images(2)
    noisy = latent_pipe.q_sample(image, 0, noise=torch.zeros(2, 4, 16, 16))
    torch.testing.assert_close(noisy, latent_pipe.encode_images(image * 2 - 1))  # t = 0 keeps x_0 (alpha_bar ~ 1)
    assert latent_pipe.q_sample(image, [10, 900], generator=seeded(0)).shape == (2, 4, 16, 16)
    assert latent_pipe.q_sample(image, 500, generator=seeded(0), output_type="np").shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match=r"`noise` must have shape \(2, 4, 16, 16\)"):
        latent_pipe.q_sample(image, 5, noise=torch.zeros(2, 3, 32, 32))


# --- Editing ----------------------------------------------------------------------------------------------------


def test_img2img_at_strength_zero_returns_the_vae_round_trip(latent_pipe):
    image = images(2)
    out = latent_pipe.img2img(image, strength=0.0, output_type="pt").images
    torch.testing.assert_close(out, round_trip(latent_pipe, image))
    latents = latent_pipe.img2img(image, strength=0.0, output_type="latent").images
    torch.testing.assert_close(latents, latent_pipe.encode_images(image * 2 - 1))
    # The round trip of a random VAE is far from the input: the comparison above is the meaningful one.
    assert (out - image).abs().mean() > 0.05


def test_img2img_at_full_strength_is_generation_and_in_between_decodes(latent_pipe):
    pipe = latent_pipe.set_sampler("ddim")
    full = pipe.img2img(images(), strength=1.0, num_inference_steps=4, generator=seeded(5), output_type="latent")
    again = pipe(num_inference_steps=4, generator=seeded(5), output_type="latent").images
    torch.testing.assert_close(full.images, again)
    half = pipe.img2img(images(), strength=0.5, num_inference_steps=4, generator=seeded(5), output_type="np").images
    assert half.shape == (1, 32, 32, 3)


def test_inpainting_keeps_the_known_latents_exactly_and_the_known_pixels_near_the_round_trip(latent_pipe):
    image, mask = images(2), torch.zeros(1, 32, 32)
    mask[:, :, 21:] = 1  # fill the right third; on the 16 px latent grid columns 10 and up (21 // 2 = 10)
    kwargs = dict(num_inference_steps=4, jump_length=2, jump_n_sample=2, generator=[seeded(0), seeded(1)])
    latents = latent_pipe.inpaint(image, mask, output_type="latent", **kwargs).images
    clean = latent_pipe.encode_images(image * 2 - 1)
    # The mask reaches the latent grid by max pooling: a cell with any white pixel is filled (column 10 has 21).
    assert torch.equal(latents[..., :10], clean[..., :10])
    assert (latents[..., 10:] - clean[..., 10:]).abs().mean() > 0.1
    # In pixels the decoder spreads the new latents over the kept region too: its convolutions a few pixels, its
    # GroupNorm statistics (global) a little everywhere. For this tiny random VAE the kept left half stays within
    # 0.15 (mean, of the [0, 1] range) of the round trip, and closer to it than a free sample.
    reference = round_trip(latent_pipe, image)
    kept = (latent_pipe.postprocess(latents, "pt") - reference)[..., :16].abs().mean()
    sample = latent_pipe(batch_size=2, num_inference_steps=4, output_type="pt", generator=seeded(9)).images
    assert kept < 0.15 and kept < 0.9 * (sample - reference)[..., :16].abs().mean()


def test_invert_and_interpolate_work_on_latents(latent_pipe):
    inverted = latent_pipe.invert(images(), num_inference_steps=3, output_type="np")
    assert inverted.latents.shape == (1, 4, 16, 16) and inverted.images.shape == (1, 32, 32, 3)
    frames = latent_pipe.interpolate(images(), seed_b=1, num_frames=3, num_inference_steps=3, output_type="latent")
    assert frames.images.shape == (3, 4, 16, 16)
    # The seed end is the DDIM sample of that seed, decoded like any other.
    strip = latent_pipe.interpolate(seed_a=0, seed_b=1, num_frames=3, num_inference_steps=3, output_type="np").images
    ddim = latent_pipe.set_sampler("ddim", clip_sample=False)
    np.testing.assert_allclose(
        strip[:1], ddim(num_inference_steps=3, generator=seeded(0), output_type="np").images, atol=1e-5
    )
    assert strip.shape == (3, 32, 32, 3)


def test_inpaint_mask_smaller_than_a_latent_cell_still_fills_one():
    pipe = make_latent_pipeline("kl")
    mask = torch.zeros(1, 32, 32)
    mask[:, 5, 7] = 1  # one white pixel: its latent cell (2, 3) is filled
    fill = pipe._prepare_mask(mask, images(), 1)
    assert fill.shape == (1, 1, 16, 16) and fill.sum() == 1 and fill[0, 0, 2, 3] == 1


@pytest.mark.parametrize("latent", [False, True], ids=["pixels", "latents"])
def test_editing_methods_take_class_labels_and_guidance(latent):
    if latent:
        pipe, size = make_latent_pipeline("kl", conditional=True), 32
    else:
        torch.manual_seed(0)
        unet = UNet2DModel(**TINY_UNET, num_class_embeds=4).eval()
        pipe, size = DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler(), label_names=LABELS), 16
        pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, size, size, generator=seeded(1))

    def edit(**kw):
        return pipe.img2img(
            image, strength=0.75, num_inference_steps=4, generator=seeded(2), output_type="pt", **kw
        ).images

    towards_cat, towards_fish = edit(class_labels=[0]), edit(class_labels="fish")
    assert towards_cat.shape == (1, 3, size, size) and not torch.allclose(towards_cat, towards_fish)
    torch.testing.assert_close(edit(class_labels="cat", guidance_scale=3.0), towards_cat)  # 3 is the default scale
    assert not torch.allclose(edit(class_labels="cat", guidance_scale=1.0), towards_cat)
    # One image with several labels is redrawn once per label.
    assert (
        pipe.img2img(
            image, strength=0.5, num_inference_steps=2, class_labels=["cat", "dog"], output_type="np"
        ).images.shape[0]
        == 2
    )
    mask = torch.zeros(1, size, size)
    mask[:, :, size // 2 :] = 1
    painted = pipe.inpaint(
        image,
        mask,
        num_inference_steps=3,
        jump_length=1,
        jump_n_sample=1,
        class_labels="dog",
        generator=seeded(0),
        output_type="np",
    )
    assert painted.images.shape == (1, size, size, 3)
    frames = pipe.interpolate(
        seed_a=0,
        seed_b=1,
        num_frames=2,
        num_inference_steps=2,
        class_labels="dog",
        guidance_scale=2.0,
        output_type="np",
    )
    assert frames.images.shape == (2, size, size, 3)
    with pytest.raises(ValueError, match="Unknown class label 'horse'"):
        pipe.img2img(image, strength=0.5, num_inference_steps=2, class_labels="horse")
    with pytest.raises(ValueError, match="one class for every frame"):
        pipe.interpolate(seed_a=0, seed_b=1, class_labels=["cat", "dog"])


def test_unconditional_editing_refuses_labels_in_one_line(tiny_pipeline):
    with pytest.raises(ValueError, match="This model is unconditional"):
        tiny_pipeline.img2img(torch.rand(1, 3, 16, 16), strength=0.5, num_inference_steps=2, class_labels=[0])
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        tiny_pipeline.invert(torch.rand(1, 3, 16, 16), num_inference_steps=2, guidance_scale=2.0)


def test_sample_cli_edits_towards_a_class(tmp_path, capsys):
    import PIL.Image

    from ddpm_hub.cli import main as ddpm_hub_main

    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET, num_class_embeds=4).eval()
    DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler(), label_names=LABELS).save_pretrained(tmp_path / "m")
    PIL.Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "in.png")
    common = ["sample", str(tmp_path / "m"), "--init_image", str(tmp_path / "in.png"), "--num_inference_steps", "4",
              "--device", "cpu", "--num_images", "2", "--strength", "0.75"]  # fmt: skip
    assert ddpm_hub_main([*common, "--output", str(tmp_path / "g.png"), "--class_label", "cat,fish"]) == 0
    assert PIL.Image.open(tmp_path / "g.png").size == (32, 32)  # one row per label, two columns
    grid = np.asarray(PIL.Image.open(tmp_path / "g.png"), dtype=np.int16)
    assert np.abs(grid[:16] - grid[16:]).max() > 0  # the rows differ by their class only


# --- Saving, loading, defaults ----------------------------------------------------------------------------------


def test_saved_latent_folder_holds_the_vae_and_its_factor(latent_dirs):
    folder = latent_dirs["kl"]
    assert (folder / "vae" / "config.json").is_file() and (
        folder / "vae" / "diffusion_pytorch_model.safetensors"
    ).is_file()
    for name in PIPELINE_SOURCE_FILES:
        assert (folder / name).is_file()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "DDPMHubPipeline"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["latent_scaling_factor"] == pytest.approx(0.18215)
    assert json.loads((latent_dirs["kl-scaled"] / "model_index.json").read_text())["latent_scaling_factor"] == 0.5
    assert json.loads((latent_dirs["vq"] / "model_index.json").read_text())["vae"] == ["diffusers", "VQModel"]


@pytest.mark.parametrize("name", ["kl", "vq", "kl-scaled"])
def test_latent_folder_loads_as_ddpm_hub_pipeline_with_the_same_images(latent_dirs, name):
    kind, kwargs = name.split("-")[0], ({"latent_scaling_factor": 0.5} if name == "kl-scaled" else {})
    original = make_latent_pipeline(kind, **kwargs)
    loaded = DDPMHubPipeline.from_pretrained(latent_dirs[name])
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.vae) is type(original.vae) and loaded.latent_scaling_factor == original.latent_scaling_factor
    run = lambda pipe: pipe(num_inference_steps=3, output_type="np", generator=seeded(7)).images  # noqa: E731
    np.testing.assert_allclose(run(loaded), run(original), atol=1e-5)  # a VQ's nearest code: float ties differ


LOAD_WITHOUT_DDPM_HUB = """
import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained({path!r}, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
pipe.set_sampler("ddim")
out = pipe(num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(7)).images
edit = pipe.img2img(torch.rand(1, 3, 32, 32), strength=0.0, output_type="np").images
print(type(pipe).__name__, type(pipe.vae).__name__, pipe.latent_scaling_factor, out.shape, edit.shape)
print(repr(out.reshape(-1)[:6].tolist()))
"""


def ours_ddim(folder) -> list[float]:
    pipe = DDPMHubPipeline.from_pretrained(folder).set_sampler("ddim")
    pipe.set_progress_bar_config(disable=True)
    return pipe(num_inference_steps=3, output_type="np", generator=seeded(7)).images.reshape(-1)[:6]


@pytest.mark.parametrize("name", ["kl", "vq"])
def test_latent_folder_loads_with_stock_diffusers_and_remote_code_without_ddpm_hub(latent_dirs, name):
    out = run_python(LOAD_WITHOUT_DDPM_HUB.format(path=str(latent_dirs[name])), without_ddpm_hub=True, timeout=900)
    vae_class = {"kl": "AutoencoderKL", "vq": "VQModel"}[name]
    assert f"DDPMHubPipeline {vae_class} 0.18215 (1, 32, 32, 3) (1, 32, 32, 3)" in out
    np.testing.assert_allclose(eval(out.strip().splitlines()[-1]), ours_ddim(latent_dirs[name]), atol=1e-5)


LDM_FROM_PARTS = """
import torch
from diffusers import AutoencoderKL, DDIMScheduler, LDMPipeline, UNet2DModel, VQModel
path = {path!r}
vae_class = {{"kl": AutoencoderKL, "vq": VQModel}}[{kind!r}]
try:
    LDMPipeline.from_pretrained(path)
except ValueError as error:
    print("as itself:", "trust_remote_code" in str(error))
parts = dict(
    vqvae=vae_class.from_pretrained(path, subfolder="vae"),
    unet=UNet2DModel.from_pretrained(path, subfolder="unet"),
    scheduler=DDIMScheduler.from_pretrained(path, subfolder="scheduler"),
)
pipe = LDMPipeline(**parts)
pipe.set_progress_bar_config(disable=True)
out = pipe(num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(7)).images
print(repr(out.reshape(-1)[:6].tolist()))
"""


@pytest.mark.parametrize("name", ["kl", "vq", "kl-scaled"])
def test_stock_ldm_pipeline_decodes_a_latent_folder_built_from_its_parts_only_with_the_vae_factor(latent_dirs, name):
    out = run_python(
        LDM_FROM_PARTS.format(path=str(latent_dirs[name]), kind=name.split("-")[0]), without_ddpm_hub=True, timeout=900
    )
    assert "as itself: True" in out  # LDMPipeline.from_pretrained follows model_index.json to pipeline.py
    theirs, ours = np.array(eval(out.strip().splitlines()[-1])), ours_ddim(latent_dirs[name])
    if name == "kl-scaled":  # LDMPipeline divides by vqvae.config.scaling_factor, not by the pipeline's factor
        assert np.abs(theirs - ours).max() > 1e-3
    else:
        np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_latent_pipeline_from_the_local_hub(hub_server, latent_dirs, tmp_path):
    from test_hub import hub_env

    # `ddpm-hub push`, then our class by repo id into an empty cache, in one fresh process.
    ours = run_python(
        "from ddpm_hub.cli import main\n"
        f"print('push status', main(['push', {str(latent_dirs['kl'])!r}, '--repo_id', 'test-org/latent']))\n"
        "from ddpm_hub import DDPMHubPipeline\n"
        f"pipe = DDPMHubPipeline.from_pretrained('test-org/latent', cache_dir={str(tmp_path / 'cache-2')!r})\n"
        "print(type(pipe).__module__, type(pipe.vae).__name__, pipe.image_shape)\n",
        env=hub_env(hub_server, tmp_path),
        timeout=900,
    )
    assert "push status 0" in ours and "ddpm_hub.pipeline AutoencoderKL (3, 32, 32)" in ours
    files = hub_server.repo_files("test-org/latent")
    assert {"vae/config.json", *PIPELINE_SOURCE_FILES} <= set(files)
    remote = run_python(
        LOAD_WITHOUT_DDPM_HUB.format(path="test-org/latent"),
        without_ddpm_hub=True,
        env=hub_env(hub_server, tmp_path, "cache-1"),
        timeout=900,
    )
    assert "DDPMHubPipeline AutoencoderKL 0.18215 (1, 32, 32, 3) (1, 32, 32, 3)" in remote
    np.testing.assert_allclose(eval(remote.strip().splitlines()[-1]), ours_ddim(latent_dirs["kl"]), atol=1e-5)


def test_export_pipeline_with_a_vae_and_a_default_step_count(tmp_path):
    pipe = make_latent_pipeline("vq")
    parts = PipelineParts(
        pipe.unet, pipe.scheduler, vae=pipe.vae, latent_scaling_factor=0.25, default_num_inference_steps=4
    )
    out = export_pipeline(parts, tmp_path / "run")
    index = json.loads((out / "model_index.json").read_text())
    assert index["latent_scaling_factor"] == 0.25 and index["default_num_inference_steps"] == 4
    assert (out / "vae" / "config.json").is_file() and not list(out.glob(".pipeline.*"))
    loaded = DDPMHubPipeline.from_pretrained(out)
    assert loaded.latent_scaling_factor == 0.25 and loaded.default_num_inference_steps == 4
    grid = sample_grid(
        PipelineParts(pipe.unet, pipe.scheduler, vae=pipe.vae), num_images=4, sampler="ddim", num_inference_steps=2,
        seed=0,
    )  # fmt: skip
    assert grid.size == (64, 64)  # 2 x 2 decoded 32 px images


def test_default_step_count_is_saved_and_used(tmp_path):
    pipe = make_tiny_pipeline()
    student = DDPMHubPipeline(unet=pipe.unet, scheduler=pipe.scheduler, default_num_inference_steps=4)
    student.set_progress_bar_config(disable=True)
    calls = []
    count = lambda pipe, i, t, kwargs: calls.append(int(t)) or kwargs  # noqa: E731
    student(callback_on_step_end=count, output_type="np")
    assert len(calls) == 4
    calls.clear()
    student(num_inference_steps=2, callback_on_step_end=count, output_type="np")
    assert len(calls) == 2
    assert pipe.default_num_inference_steps == 1000  # without one saved: as before
    export_pipeline(PipelineParts(pipe.unet, pipe.scheduler, default_num_inference_steps=4), tmp_path / "student")
    assert json.loads((tmp_path / "student" / "model_index.json").read_text())["default_num_inference_steps"] == 4
    out = run_python(
        f"""
from diffusers import DiffusionPipeline
path = {str(tmp_path / "student")!r}
stock = DiffusionPipeline.from_pretrained(path)  # an unconditional pixel model stays a stock DDPMPipeline
ours = DiffusionPipeline.from_pretrained(path, custom_pipeline=path, trust_remote_code=True)
ours.set_progress_bar_config(disable=True)
steps = []
ours(callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw, output_type="np")
print(type(stock).__name__, type(ours).__name__, ours.default_num_inference_steps, len(steps))
""",
        without_ddpm_hub=True,
        timeout=900,
    )
    assert "DDPMPipeline DDPMHubPipeline 4 4" in out
    with pytest.raises(ValueError, match="`default_num_inference_steps` must be a positive integer"):
        DDPMHubPipeline(unet=pipe.unet, scheduler=pipe.scheduler, default_num_inference_steps=0)


def test_bad_vae_combinations_are_refused_in_one_line(tiny_pipeline):
    with pytest.raises(ValueError, match="UNet takes 3 channels but the VAE's latents have 4"):
        DDPMHubPipeline(unet=tiny_pipeline.unet, scheduler=tiny_pipeline.scheduler, vae=make_vae("kl"))
    with pytest.raises(ValueError, match="`latent_scaling_factor` applies to a latent model"):
        DDPMHubPipeline(unet=tiny_pipeline.unet, scheduler=tiny_pipeline.scheduler, latent_scaling_factor=0.5)
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        make_latent_pipeline("kl", latent_scaling_factor=float("nan"))


def test_the_explorer_panels_sample_a_latent_student_with_all_its_parts():
    from ddpm_hub.app import panels

    pipe = make_latent_pipeline("kl", conditional=True, default_num_inference_steps=3)
    trajectory = panels.sample_trajectory(pipe, "ddim")
    assert len(trajectory.timesteps) == 3  # the student's own step count
    for frame in [trajectory.image, *trajectory.noisy, *trajectory.predicted]:
        assert frame.size == (32, 32) and frame.mode == "RGB"  # decoded by the VAE, not 16 px latents
    for _, image, _ in panels.compare_samplers(pipe, ["ddim", "euler"]):
        assert image.size == (32, 32) and image.mode == "RGB"
    sampling = panels.with_sampler(pipe, "euler")
    assert sampling.label_names == LABELS and sampling.default_num_inference_steps == 3
    assert sampling.scheduler is not pipe.scheduler and sampling.unet is pipe.unet
