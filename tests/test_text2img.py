"""Tests of `text2img.py` and `ddpm_hub.text2img.Text2Image` against a tiny Stable Diffusion pipeline.

The pipeline (tests/tiny_sd.py) is built from seeded random weights and saved once per session; every test loads
it through diffusers' real `from_pretrained`. Images are 32x32 with 2 steps, a few milliseconds each on a CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, clean_env
from PIL import Image
from tiny_sd import build_tiny_sd, build_tiny_sdxl

from ddpm_hub.pipeline_ddpm_hub import SAMPLERS
from ddpm_hub.text2img import ImageMetadata, Text2Image, main

SMALL = dict(num_inference_steps=2, height=32, width=32)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-sd") / "model"
    build_tiny_sd(path)
    return path


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-sdxl") / "model"
    build_tiny_sdxl(path)
    return path


@pytest.fixture(scope="module")
def text2image(tiny_sd_dir) -> Text2Image:
    return Text2Image.from_pretrained(str(tiny_sd_dir), device="cpu")


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def max_difference(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


# Batched and single-image UNet calls round differently in the last float bits; one 8-bit level covers that.
SAME = 1


# ---------------------------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------------------------


def test_per_image_seeds_regenerate_each_image_alone(text2image):
    output = text2image.generate("a cat wearing a hat", num_images_per_prompt=3, seed=10, progress=False, **SMALL)

    assert [meta.seed for meta in output.metadata] == [10, 11, 12]
    assert [meta.index for meta in output.metadata] == [0, 1, 2]
    # Different seeds give different images...
    assert max_difference(output.images[0], output.images[1]) > 20
    assert max_difference(output.images[1], output.images[2]) > 20
    # ...and the second image, regenerated alone from its metadata, is the same picture.
    alone = text2image.generate(**output.metadata[1].generate_kwargs(), progress=False)
    assert alone.metadata[0].seed == 11
    assert max_difference(alone.images[0], output.images[1]) <= SAME
    # The same call twice gives the same pixels exactly.
    again = text2image.generate("a cat wearing a hat", num_images_per_prompt=3, seed=10, progress=False, **SMALL)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(output.images, again.images))


def test_random_seeds_are_recorded_and_reproduce(text2image):
    first = text2image.generate(["a cat", "a dog"], num_images_per_prompt=2, progress=False, **SMALL)
    second = text2image.generate(["a cat", "a dog"], num_images_per_prompt=2, progress=False, **SMALL)

    seeds = [meta.seed for meta in first.metadata]
    assert seeds == list(range(seeds[0], seeds[0] + 4))  # consecutive across prompts
    assert [meta.prompt for meta in first.metadata] == ["a cat", "a cat", "a dog", "a dog"]
    assert seeds[0] != second.metadata[0].seed  # drawn afresh for each run
    regenerated = text2image.generate(**first.metadata[3].generate_kwargs(), progress=False)
    assert max_difference(regenerated.images[0], first.images[3]) <= SAME


def test_negative_prompt_changes_the_image_and_is_recorded(text2image):
    plain = text2image.generate("a cat", seed=3, progress=False, **SMALL)
    negative = text2image.generate("a cat", negative_prompt="blurry, dark", seed=3, progress=False, **SMALL)

    assert max_difference(plain.images[0], negative.images[0]) > 20
    assert plain.metadata[0].negative_prompt is None
    assert negative.metadata[0].negative_prompt == "blurry, dark"


def test_default_size_is_the_models_training_size(text2image):
    output = text2image.generate("a cat", seed=0, num_inference_steps=2, progress=False)
    # unet sample_size 16 x VAE downsampling 2
    assert output.images[0].size == (32, 32)
    assert (output.metadata[0].height, output.metadata[0].width) == (32, 32)
    wide = text2image.generate("a cat", seed=0, num_inference_steps=2, height=16, width=48, progress=False)
    assert wide.images[0].size == (48, 16)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_scheduler_name_samples_stable_diffusion(tiny_sd_dir, name):
    text2image = Text2Image.from_pretrained(str(tiny_sd_dir), device="cpu", scheduler=name)
    scheduler = text2image.pipeline.scheduler

    assert type(scheduler).__name__ == SAMPLERS[name][0]
    # from_config keeps the model's training schedule and parameterisation.
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_schedule == "scaled_linear"
    output = text2image.generate("a cat", seed=0, progress=False, **SMALL)
    image = pixels(output.images[0])
    assert image.shape == (32, 32, 3)
    assert image.std() > 5, f"{name} produced a flat image"
    assert (output.metadata[0].scheduler, output.metadata[0].scheduler_class) == (name, SAMPLERS[name][0])


def test_model_scheduler_is_kept_by_default(text2image):
    output = text2image.generate("a cat", seed=0, progress=False, **SMALL)
    assert output.metadata[0].scheduler is None
    assert output.metadata[0].scheduler_class == "DDIMScheduler"


def test_long_prompt_warns_how_many_tokens_were_dropped(text2image, caplog):
    # "a" is one token; 100 of them plus the start and end tokens exceed the 77-token limit by 25.
    long_prompt = "a " * 100
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.text2img"):
        text2image.generate("a cat", seed=0, progress=False, **SMALL)
        assert not caplog.records
        output = text2image.generate(long_prompt, seed=0, progress=False, **SMALL)
    messages = [record.getMessage() for record in caplog.records if record.name == "ddpm_hub.text2img"]
    assert len(messages) == 1 and "25 tokens were dropped" in messages[0]
    assert output.metadata[0].prompt == long_prompt  # recorded in full: regenerating truncates the same way


def test_metadata_round_trips_through_png_text_and_json_sidecar(tiny_sd_dir, text2image, tmp_path):
    prompt = "un chat à chapeau 🎩"  # outside latin-1: stored in an iTXt chunk
    output = text2image.generate(
        prompt, negative_prompt="flou", num_images_per_prompt=2, seed=7, guidance_scale=6.5, progress=False, **SMALL
    )
    paths = output.save(tmp_path)

    pngs = [path for path in paths if path.suffix == ".png"]
    assert [path.suffix for path in paths] == [".png", ".json"] * 2
    assert re.fullmatch(r"\d{8}-\d{6}-000-7-un-chat-chapeau\.png", pngs[0].name)
    assert re.fullmatch(r"\d{8}-\d{6}-001-8-un-chat-chapeau\.png", pngs[1].name)
    for png, expected, image in zip(pngs, output.metadata, output.images):
        sidecar = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
        with Image.open(png) as saved:
            text = dict(saved.text)
            assert np.array_equal(pixels(saved.convert("RGB")), pixels(image))
        assert sidecar == expected.to_dict()
        assert ImageMetadata.load(png) == ImageMetadata.load(png.with_suffix(".json")) == expected
        # Human-readable chunks: text as is, numbers as JSON, absent values left out.
        assert text["prompt"] == prompt and text["negative_prompt"] == "flou"
        assert (text["seed"], text["guidance_scale"], text["num_inference_steps"]) == (str(expected.seed), "6.5", "2")
        assert text["model"] == str(tiny_sd_dir.resolve()) and "revision" not in text
        assert set(text) >= {"dtype", "width", "height", "ddpm_hub_version", "scheduler_class", "pipeline_class"}


def test_saving_again_never_overwrites(text2image, tmp_path):
    output = text2image.generate("a dog", num_images_per_prompt=2, seed=1, progress=False, **SMALL)
    first = output.save(tmp_path, grid=True)
    before = {path: path.read_bytes() for path in first}
    second = output.save(tmp_path, grid=True)  # same timestamp, index, seed and prompt: every name is taken

    assert not set(first) & set(second)
    assert all(path.stem.endswith("-1") for path in second)
    assert all(path.read_bytes() == content for path, content in before.items())
    assert len(list(tmp_path.iterdir())) == 2 * len(first)  # no temporary files left behind


def test_bf16_on_cpu(tiny_sd_dir):
    text2image = Text2Image.from_pretrained(str(tiny_sd_dir), device="cpu", dtype="bf16")
    output = text2image.generate("a cat", seed=0, progress=False, **SMALL)

    assert text2image.pipeline.unet.dtype == torch.bfloat16
    assert output.metadata[0].dtype == "bf16"
    assert pixels(output.images[0]).std() > 5


def test_memory_options_are_applied_and_keep_the_pixels(tiny_sd_dir, text2image):
    saving = Text2Image.from_pretrained(
        str(tiny_sd_dir), device="cpu", attention_slicing=True, vae_slicing=True, vae_tiling=True
    )
    processors = saving.pipeline.unet.attn_processors.values()

    assert saving.pipeline.vae.use_slicing and saving.pipeline.vae.use_tiling
    assert processors and all(type(p).__name__ == "SlicedAttnProcessor" for p in processors)
    expected = text2image.generate("a cat", num_images_per_prompt=2, seed=4, progress=False, **SMALL)
    output = saving.generate("a cat", num_images_per_prompt=2, seed=4, progress=False, **SMALL)
    assert all(max_difference(a, b) <= SAME for a, b in zip(output.images, expected.images))


def test_compile_compiles_the_unet_in_place(tiny_sd_dir):
    text2image = Text2Image.from_pretrained(str(tiny_sd_dir), device="cpu", compile=True)
    # torch.compile is lazy: this checks the wiring; test_compiled_unet_generates runs it. In place (nn.Module.compile),
    # the UNet keeps its class.
    unet = text2image.pipeline.unet
    assert type(unet).__name__ == "UNet2DConditionModel" and unet._compiled_call_impl is not None


@pytest.mark.slow
def test_compiled_unet_generates(tiny_sd_dir, text2image):
    compiled = Text2Image.from_pretrained(str(tiny_sd_dir), device="cpu", compile=True)
    output = compiled.generate("a cat", seed=0, progress=False, **SMALL)
    expected = text2image.generate("a cat", seed=0, progress=False, **SMALL)
    assert max_difference(output.images[0], expected.images[0]) <= 2


def test_safety_checker_stays_on_by_default_and_can_be_disabled(tmp_path, edit_inputs):
    # This model's safety checker flags every image (see tiny_sd.build_flagging_safety_checker).
    model = str(tmp_path / "with-checker")
    build_tiny_sd(model, safety_checker=True)

    checked_t2i = Text2Image.from_pretrained(model, device="cpu")
    checked = checked_t2i.generate("a cat", seed=0, progress=False, **SMALL)
    assert checked.metadata[0].safety_checker is True
    assert checked.metadata[0].nsfw_content_detected is True
    assert pixels(checked.images[0]).max() == 0  # blacked out by the checker
    # The edit pipelines share the checker.
    edited = checked_t2i.generate("a cat", image=str(edit_inputs["init"]), seed=0, progress=False, **SMALL)
    assert (edited.metadata[0].safety_checker, edited.metadata[0].nsfw_content_detected) == (True, True)
    assert pixels(edited.images[0]).max() == 0

    unchecked_t2i = Text2Image.from_pretrained(model, device="cpu", disable_safety_checker=True)
    unchecked = unchecked_t2i.generate("a cat", seed=0, progress=False, **SMALL)
    assert unchecked_t2i.pipeline.safety_checker is None
    assert unchecked.metadata[0].safety_checker is False
    assert unchecked.metadata[0].nsfw_content_detected is None
    assert pixels(unchecked.images[0]).std() > 5
    edited = unchecked_t2i.generate("a cat", image=str(edit_inputs["init"]), seed=0, progress=False, **SMALL)
    assert (edited.metadata[0].safety_checker, edited.metadata[0].nsfw_content_detected) == (False, None)
    assert pixels(edited.images[0]).std() > 5


def test_sdxl_loads_through_the_auto_pipeline(tiny_sdxl_dir):
    # SDXL has no safety checker: asking to disable it is accepted and changes nothing.
    text2image = Text2Image.from_pretrained(
        str(tiny_sdxl_dir), device="cpu", scheduler="dpmpp_2m", disable_safety_checker=True
    )
    output = text2image.generate(
        "a cat", negative_prompt="dark", num_images_per_prompt=2, seed=5, progress=False, num_inference_steps=2
    )

    meta = output.metadata[1]
    assert (meta.pipeline_class, meta.scheduler_class) == ("StableDiffusionXLPipeline", "DPMSolverMultistepScheduler")
    assert (meta.safety_checker, meta.nsfw_content_detected) == (False, None)
    assert output.images[1].size == (32, 32)  # the model's default size
    alone = text2image.generate(**meta.generate_kwargs(), progress=False)
    assert max_difference(alone.images[0], output.images[1]) <= SAME
    assert max_difference(output.images[0], output.images[1]) > 20


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scheduler="dpm_fast"), "'dpm_fast'"),
        (dict(device="cpu", dtype="fp16"), "fp16"),
        (dict(device="cpu", dtype="fp8"), "'fp8'"),
        (dict(device="cpu", cpu_offload=True), "cpu_offload"),
        (dict(model="./no/such/model"), "'./no/such/model'"),
    ],
)
def test_from_pretrained_rejects_bad_arguments(tiny_sd_dir, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        Text2Image.from_pretrained(**{"model": str(tiny_sd_dir), **kwargs})


def test_uncached_hub_id_offline_raises_the_clients_error():
    # conftest sets HF_HUB_OFFLINE=1 and an empty HF_HOME, as on a machine without network.
    with pytest.raises(OSError, match="org/not-cached"):
        Text2Image.from_pretrained("org/not-cached", device="cpu")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt=""), "''"),
        (dict(prompt=["a cat", "  "]), "'  '"),
        (dict(prompt=[]), "at least one prompt"),
        (dict(height=30), "height must be a positive multiple of 8 (the VAE's downsampling), got 30."),
        (dict(width=0), "width must be a positive multiple of 8 (the VAE's downsampling), got 0."),
        (dict(num_inference_steps=0), "num_inference_steps must be a positive integer, got 0"),
        (dict(num_inference_steps=1001), "1001"),
        (dict(num_images_per_prompt=-1), "num_images_per_prompt must be a positive integer, got -1"),
        (dict(seed=-5), "-5"),
        (dict(negative_prompt="x", guidance_scale=1.0), "guidance_scale is 1.0"),
    ],
)
def test_generate_rejects_bad_arguments(text2image, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        text2image.generate(**{"prompt": "a cat", **SMALL, **kwargs})


# ---------------------------------------------------------------------------------------------------------------
# Image to image and inpainting
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edit_inputs(tmp_path_factory) -> dict[str, Path]:
    """An init image 32 wide and 48 high (not the model's 32x32, so the output size shows where it came from),
    a mask of its size with a white box to repaint, a mask of another size, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("edit-inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 32, 3), dtype=np.uint8)).save(folder / "init.png")
    Image.fromarray(rng.integers(0, 256, (48, 32, 3), dtype=np.uint8)).save(folder / "other-init.png")
    mask = np.zeros((48, 32), dtype=np.uint8)
    mask[12:36, 8:24] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(mask[::-1].T.copy()).save(folder / "other-mask.png")  # 48 wide: only for the wrong size
    Image.fromarray(np.roll(mask, 8, axis=1)).save(folder / "shifted-mask.png")
    (folder / "not-an-image.png").write_text("no pixels here\n", encoding="utf-8")
    return {path.stem: path for path in folder.iterdir()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_kwargs(mode: str, inputs: dict[str, Path]) -> dict:
    if mode == "img2img":
        return dict(image=str(inputs["init"]), strength=0.75)
    return dict(image=str(inputs["init"]), mask_image=str(inputs["mask"]))


@pytest.mark.parametrize(
    "mode, pipeline_class, strength",
    [("img2img", "StableDiffusionImg2ImgPipeline", 0.75), ("inpaint", "StableDiffusionInpaintPipeline", 1.0)],
)
def test_edits_reproduce_per_seed_and_record_their_sources(text2image, edit_inputs, mode, pipeline_class, strength):
    kwargs = edit_kwargs(mode, edit_inputs)
    output = text2image.generate(
        "a cat", num_images_per_prompt=2, seed=10, num_inference_steps=2, progress=False, **kwargs
    )

    init = edit_inputs["init"]
    meta = output.metadata[1]
    assert [m.seed for m in output.metadata] == [10, 11]
    assert (meta.mode, meta.pipeline_class, meta.strength) == (mode, pipeline_class, strength)  # 1.0: diffusers'
    assert (meta.init_image, meta.init_image_sha256) == (str(init.resolve()), sha256(init))
    if mode == "inpaint":
        mask = edit_inputs["mask"]
        assert (meta.mask_image, meta.mask_image_sha256) == (str(mask.resolve()), sha256(mask))
    else:
        assert meta.mask_image is meta.mask_image_sha256 is None
    # The output takes the init image's size, not the model's default 32x32.
    assert all(image.size == (32, 48) for image in output.images) and (meta.height, meta.width) == (48, 32)
    assert max_difference(output.images[0], output.images[1]) > 20
    # Image 1 regenerated alone from its metadata is the same picture (one copy of the init image per generator).
    alone = text2image.generate(**meta.generate_kwargs(), progress=False)
    assert alone.metadata[0] == dataclasses.replace(meta, index=0, created=alone.metadata[0].created)
    assert max_difference(alone.images[0], output.images[1]) <= SAME
    # The init image, and the mask, are really used.
    other = dict(kwargs, image=str(edit_inputs["other-init"]))
    if mode == "inpaint":
        other = dict(kwargs, mask_image=str(edit_inputs["shifted-mask"]))
    changed = text2image.generate("a cat", seed=10, num_inference_steps=2, progress=False, **other)
    assert max_difference(changed.images[0], output.images[0]) > 20


def test_edit_pipelines_reuse_the_loaded_weights(tiny_sd_dir, edit_inputs, monkeypatch):
    from diffusers import DiffusionPipeline, ModelMixin
    from transformers import PreTrainedModel

    # A sampler with step state (Euler's step and begin index), shared by all three pipelines.
    text2image = Text2Image.from_pretrained(str(tiny_sd_dir), device="cpu", scheduler="euler")
    before = text2image.generate("a cat", seed=0, progress=False, **SMALL)

    def load_again(*args, **kwargs):
        raise AssertionError("a model was loaded a second time")

    for cls in (DiffusionPipeline, ModelMixin, PreTrainedModel):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(load_again))
    for mode, pipeline_class in (
        ("img2img", "StableDiffusionImg2ImgPipeline"),
        ("inpaint", "StableDiffusionInpaintPipeline"),
    ):
        output = text2image.generate(
            "a cat", seed=0, num_inference_steps=2, progress=False, **edit_kwargs(mode, edit_inputs)
        )
        assert output.metadata[0].pipeline_class == pipeline_class
        pipeline = text2image.pipeline_for(mode)
        assert text2image.pipeline_for(mode) is pipeline  # built once
        shared = {name: component for name, component in text2image.pipeline.components.items()}
        assert {"unet", "vae", "text_encoder", "scheduler"} <= set(shared)
        assert all(pipeline.components[name] is component for name, component in shared.items())
    # Editing left the text-to-image pipeline and its shared sampler as they were.
    after = text2image.generate("a cat", seed=0, progress=False, **SMALL)
    assert np.array_equal(pixels(after.images[0]), pixels(before.images[0]))


def test_sdxl_img2img_and_inpaint(tiny_sdxl_dir, edit_inputs):
    text2image = Text2Image.from_pretrained(str(tiny_sdxl_dir), device="cpu")
    for mode, pipeline_class in (
        ("img2img", "StableDiffusionXLImg2ImgPipeline"),
        ("inpaint", "StableDiffusionXLInpaintPipeline"),
    ):
        kwargs = dict(edit_kwargs(mode, edit_inputs), strength=0.5)
        output = text2image.generate(
            "a cat", num_images_per_prompt=2, seed=5, num_inference_steps=2, progress=False, **kwargs
        )
        meta = output.metadata[1]
        assert (meta.mode, meta.pipeline_class, meta.strength) == (mode, pipeline_class, 0.5)
        assert output.images[1].size == (32, 48)
        alone = text2image.generate(**meta.generate_kwargs(), progress=False)
        assert max_difference(alone.images[0], output.images[1]) <= SAME
        assert max_difference(output.images[0], output.images[1]) > 20
        assert text2image.pipeline_for(mode).unet is text2image.pipeline.unet


def test_edit_size_is_the_init_images_unless_height_and_width_are_given(text2image, edit_inputs, tmp_path, caplog):
    resized = text2image.generate(
        "a cat",
        image=str(edit_inputs["init"]),
        mask_image=str(edit_inputs["mask"]),
        height=16,
        width=24,
        seed=0,
        num_inference_steps=2,
        progress=False,
    )
    assert resized.images[0].size == (24, 16) and (resized.metadata[0].height, resized.metadata[0].width) == (16, 24)

    # Sides that are not multiples of 8 are rounded down, as diffusers does, with a warning.
    odd = tmp_path / "odd.png"
    with Image.open(edit_inputs["init"]) as image:
        image.crop((0, 0, 30, 45)).save(odd)
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.text2img"):
        output = text2image.generate("a cat", image=str(odd), seed=0, num_inference_steps=2, progress=False)
    assert output.images[0].size == (24, 40)
    assert [record.getMessage() for record in caplog.records if record.name == "ddpm_hub.text2img"] == [
        "The init image's height of 45 pixels is not a multiple of 8; using 40.",
        "The init image's width of 30 pixels is not a multiple of 8; using 24.",
    ]


def test_in_memory_init_image_is_used_but_not_recorded(text2image, edit_inputs):
    from_file = text2image.generate(
        "a cat", image=str(edit_inputs["init"]), strength=0.5, seed=1, num_inference_steps=2, progress=False
    )
    with Image.open(edit_inputs["init"]) as image:
        in_memory = text2image.generate(
            "a cat", image=image, strength=0.5, seed=1, num_inference_steps=2, progress=False
        )

    assert np.array_equal(pixels(in_memory.images[0]), pixels(from_file.images[0]))
    meta = in_memory.metadata[0]
    assert (meta.mode, meta.init_image, meta.init_image_sha256) == ("img2img", None, None)
    with pytest.raises(ValueError, match="in-memory init image"):
        meta.generate_kwargs()


def test_text_to_image_sidecars_from_before_editing_still_load(text2image, tmp_path):
    sidecar = text2image.generate("a cat", seed=2, progress=False, **SMALL).save(tmp_path)[1]
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    assert (data["mode"], data["init_image"], data["strength"]) == ("text2img", None, None)
    old = {
        key: value
        for key, value in data.items()
        if key not in ("mode", "init_image", "init_image_sha256", "strength", "mask_image", "mask_image_sha256")
    }
    sidecar.write_text(json.dumps(old), encoding="utf-8")

    meta = ImageMetadata.load(sidecar)
    assert meta.mode == "text2img" and "image" not in meta.generate_kwargs()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image="{missing}"), "The init image '{missing}' does not exist."),
        (dict(image="{not-an-image}"), "The init image '{not-an-image}' is not an image"),
        (dict(image="{folder}"), "The init image '{folder}' is a folder, not an image file."),
        (dict(image="{tiny}"), "The init image is 4x4 pixels; without --height and --width"),
        (dict(image=42), "file path or a PIL image, got int"),
        (dict(image="{init}", mask_image="{not-an-image}"), "The mask image '{not-an-image}' is not an image"),
        (
            dict(image="{init}", mask_image="{other-mask}"),
            "The mask image '{other-mask}' is 48x32 but the init image is 32x48 (width x height); they must be the "
            "same size.",
        ),
        (dict(mask_image="{mask}"), "needs the image to inpaint"),
        (dict(strength=0.5), "strength (0.5) only applies to an init image"),
        (dict(image="{init}", strength=0.0), "strength must be in (0, 1], got 0.0."),
        (dict(image="{init}", strength=1.5), "strength must be in (0, 1], got 1.5."),
        (dict(image="{init}", strength=math.nan), "got nan"),
        (dict(image="{init}", strength=0.4), "strength 0.4 x num_inference_steps 2 leaves no denoising step"),
    ],
)
def test_edit_rejects_bad_arguments(text2image, edit_inputs, tmp_path, kwargs, match):
    Image.new("RGB", (4, 4)).save(tmp_path / "tiny.png")
    paths = {
        **{name: str(path) for name, path in edit_inputs.items()},
        "missing": str(tmp_path / "missing.png"),
        "folder": str(tmp_path),
        "tiny": str(tmp_path / "tiny.png"),
    }
    kwargs = {key: value.format(**paths) if isinstance(value, str) else value for key, value in kwargs.items()}
    with pytest.raises(ValueError, match=re.escape(match.format(**paths))):
        text2image.generate("a cat", seed=0, num_inference_steps=2, progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run `python text2img.py ARGS` from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, "text2img.py", *args],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def test_cli_end_to_end(tiny_sd_dir, tmp_path, capsys):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a dog\n\n  a hat  \n", encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(
        "--model", str(tiny_sd_dir), "--prompt", "a cat", "--prompts_file", str(prompts_file),
        "--num_images_per_prompt", "2", "--seed", "5", "--num_inference_steps", "2", "--height", "32",
        "--width", "32", "--negative_prompt", "blurry", "--scheduler", "euler_a", "--grid", "--output_dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    # stdout lists exactly the files written: 6 images with sidecars, then one grid per prompt.
    listed = [Path(line) for line in result.stdout.splitlines()]
    assert sorted(listed) == sorted(out.iterdir())
    images = [path for path in listed if path.suffix == ".png" and "-grid-" not in path.name]
    grids = [path for path in listed if "-grid-" in path.name]
    assert len(images) == 6 and len(grids) == 3 and len(listed) == 15
    assert "prompt 3/3" in result.stderr  # the progress bar

    metadata = [ImageMetadata.load(path.with_suffix(".json")) for path in images]
    assert [meta.prompt for meta in metadata] == ["a cat", "a cat", "a dog", "a dog", "a hat", "a hat"]
    assert [meta.seed for meta in metadata] == [5, 6, 7, 8, 9, 10]
    assert {meta.negative_prompt for meta in metadata} == {"blurry"}
    assert {(meta.scheduler, meta.num_inference_steps, meta.guidance_scale) for meta in metadata} == {
        ("euler_a", 2, 7.5)
    }
    assert all(ImageMetadata.load(path) == meta for path, meta in zip(images, metadata))

    # The grid of "a dog" is its two images side by side.
    with Image.open(grids[1]) as grid:
        assert grid.size == (64, 32)
        assert json.loads(grid.text["seeds"]) == [7, 8]
        cells = [grid.crop((0, 0, 32, 32)), grid.crop((32, 0, 64, 32))]
    for cell, path in zip(cells, images[2:4]):
        with Image.open(path) as image:
            assert np.array_equal(pixels(cell), pixels(image.convert("RGB")))

    # --from_metadata regenerates one image (the 4th, "a dog" with seed 8) alone, same pixels.
    again = tmp_path / "again"
    assert main(["--from_metadata", str(images[3].with_suffix(".json")), "--output_dir", str(again)]) == 0
    regenerated = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert [path.suffix for path in regenerated] == [".png", ".json"]
    assert ImageMetadata.load(regenerated[1]).generate_kwargs() == metadata[3].generate_kwargs()
    with Image.open(regenerated[0]) as new, Image.open(images[3]) as old:
        assert max_difference(new, old) <= SAME


def test_cli_bad_input_exits_2_through_the_entry_point(tiny_sd_dir, tmp_path):
    out = tmp_path / "out"
    result = run_cli("--model", str(tiny_sd_dir), "--prompt", "a cat", "--height", "30", "--output_dir", str(out))

    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "text2img.py: error: height must be a positive multiple of 8 (the VAE's downsampling), got 30."
    ]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_cli_mask_of_another_size_exits_2(tiny_sd_dir, edit_inputs, tmp_path, capsys):
    # In this process: the exit status through the entry point is test_cli_bad_input_exits_2_through_the_entry_point's.
    out = tmp_path / "out"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["--model", str(tiny_sd_dir), "--prompt", "a hat", "--init_image", str(edit_inputs["init"]),
              "--mask_image", str(edit_inputs["other-mask"]), "--output_dir", str(out)])  # fmt: skip
    stderr = capsys.readouterr().err

    assert exit.value.code == 2
    assert error_lines(stderr) == [
        f"text2img.py: error: The mask image {str(edit_inputs['other-mask'])!r} is 48x32 but the init image is "
        "32x48 (width x height); they must be the same size."
    ]
    assert "Traceback" not in stderr
    assert not out.exists()


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_cli_edits_save_metadata_and_regenerate_from_it(tiny_sd_dir, edit_inputs, tmp_path, capsys, mode):
    # Copies, so that the test can change and remove them afterwards.
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    init.write_bytes(edit_inputs["init"].read_bytes())
    mask.write_bytes(edit_inputs["mask"].read_bytes())
    edit_args = ["--strength", "0.5"] if mode == "img2img" else ["--mask_image", str(mask)]
    out = tmp_path / "out"
    status = main(
        [
            "--model",
            str(tiny_sd_dir),
            "--device",
            "cpu",
            "--prompt",
            "a cat",
            "--init_image",
            str(init),
            *edit_args,
            "--seed",
            "3",
            "--num_images_per_prompt",
            "2",
            "--num_inference_steps",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    assert status == 0
    listed = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert [path.suffix for path in listed] == [".png", ".json"] * 2

    png, sidecar = listed[2], listed[3]
    meta = ImageMetadata.load(sidecar)
    assert ImageMetadata.load(png) == meta
    assert (meta.mode, meta.seed, meta.strength) == (mode, 4, 0.5 if mode == "img2img" else 1.0)
    with Image.open(png) as saved:
        text = dict(saved.text)
        assert saved.size == (32, 48)
    assert (text["mode"], text["init_image"], text["init_image_sha256"]) == (mode, str(init.resolve()), sha256(init))
    assert text["strength"] == json.dumps(meta.strength)
    if mode == "inpaint":
        assert (text["mask_image"], text["mask_image_sha256"]) == (str(mask.resolve()), sha256(mask))
    else:
        assert "mask_image" not in text and json.loads(sidecar.read_text(encoding="utf-8"))["mask_image"] is None

    # --from_metadata finds the init image (and mask) again and regenerates the same pixels.
    again = tmp_path / "again"
    assert main(["--from_metadata", str(png), "--device", "cpu", "--output_dir", str(again)]) == 0
    regenerated = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert ImageMetadata.load(regenerated[1]).generate_kwargs() == meta.generate_kwargs()
    with Image.open(regenerated[0]) as new, Image.open(png) as old:
        assert max_difference(new, old) <= SAME

    # A source that changed, or is gone, is refused in one line before the model loads.
    source = mask if mode == "inpaint" else init
    Image.new("RGB", (32, 48), "white").save(source)
    status, stderr = run_main(["--from_metadata", str(sidecar), "--output_dir", str(tmp_path / "changed")], capsys)
    assert status == 2 and len(error_lines(stderr)) == 1
    assert f"{str(source.resolve())!r} has changed since this image was made" in stderr
    source.unlink()
    status, stderr = run_main(["--from_metadata", str(sidecar), "--output_dir", str(tmp_path / "gone")], capsys)
    assert status == 2 and len(error_lines(stderr)) == 1
    assert f"{str(source.resolve())!r} does not exist" in stderr
    assert not (tmp_path / "changed").exists() and not (tmp_path / "gone").exists()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """The command line in-process: (exit status, stderr)."""
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    return status, capsys.readouterr().err


@pytest.fixture
def sidecar(text2image, tmp_path) -> Path:
    output = text2image.generate("a cat", seed=0, progress=False, **SMALL)
    return output.save(tmp_path / "earlier")[1]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--prompt", ""], "''"),
        (["--prompt", "   "], "'   '"),
        ([], "--prompt or --prompts_file"),
        (["--prompt", "a", "--height", "30"], "got 30"),
        (["--prompt", "a", "--width", "100"], "got 100"),
        (["--prompt", "a", "--num_inference_steps", "0"], "num_inference_steps must be a positive integer, got 0"),
        (["--prompt", "a", "--num_inference_steps", "-3"], "got -3"),
        (["--prompt", "a", "--num_inference_steps", "5000"], "(5000)"),
        (["--prompt", "a", "--num_images_per_prompt", "0"], "num_images_per_prompt must be a positive integer, got 0"),
        (["--prompt", "a", "--guidance_scale", "-1"], "got -1.0"),
        (["--prompt", "a", "--negative_prompt", "x", "--guidance_scale", "1"], "guidance_scale is 1.0"),
        (["--prompt", "a", "--seed", "-1"], "got -1"),
        (["--prompt", "a", "--scheduler", "dpm_fast"], "'dpm_fast'"),
        (["--prompt", "a", "--dtype", "fp16"], "fp16"),
        (["--prompt", "a", "--cpu_offload"], "--cpu_offload"),
        (["--prompt", "a", "--device", "tpu"], "'tpu'"),
        (["--prompt", "a", "--model", "./no/such/model"], "'./no/such/model'"),
        (["--prompt", "a", "--model", "org/not-cached"], "'org/not-cached'"),
        (["--prompt", "a", "--model", "{empty_dir}"], "{empty_dir}"),
        (["--prompts_file", "{missing}"], "{missing}"),
        (["--prompts_file", "{blank_file}"], "holds no prompt"),
        (["--from_metadata", "{missing}"], "{missing}"),
        (["--from_metadata", "{sidecar}", "--prompt", "a dog"], "drop --prompt"),
        (["--from_metadata", "{sidecar}", "--scheduler", "ddim"], "drop --scheduler"),
        (["--from_metadata", "{sidecar}", "--init_image", "{init}"], "drop --init_image"),
        (["--prompt", "a", "--init_image", "{missing}"], "The init image '{missing}' does not exist."),
        (["--prompt", "a", "--init_image", "{not_image}"], "The init image '{not_image}' is not an image"),
        (
            ["--prompt", "a", "--init_image", "{init}", "--mask_image", "{not_image}"],
            "The mask image '{not_image}' is not an image",
        ),
        (
            ["--prompt", "a", "--init_image", "{init}", "--mask_image", "{other_mask}"],
            "The mask image '{other_mask}' is 48x32 but the init image is 32x48",
        ),
        (["--prompt", "a", "--mask_image", "{mask}"], "(--init_image, image=)"),
        (["--prompt", "a", "--strength", "0.5"], "strength (0.5) only applies to an init image"),
        (["--prompt", "a", "--init_image", "{init}", "--strength", "0"], "strength must be in (0, 1], got 0.0."),
        (["--prompt", "a", "--init_image", "{init}", "--strength", "1.01"], "got 1.01"),
        (["--prompt", "a", "--init_image", "{init}", "--strength", "0.01"], "leaves no denoising step"),
        # Without --strength, diffusers' default (0.8 for SD) is checked once the model is loaded.
        (
            ["--prompt", "a", "--init_image", "{init}", "--num_inference_steps", "1"],
            "strength 0.8 x num_inference_steps 1 leaves no denoising step",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(
    tiny_sd_dir, sidecar, edit_inputs, tmp_path, capsys, args, match
):
    blank_file = tmp_path / "blank.txt"
    blank_file.write_text("\n  \n", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    paths = dict(
        empty_dir=tmp_path / "empty",
        missing=tmp_path / "missing.txt",
        blank_file=blank_file,
        sidecar=sidecar,
        init=edit_inputs["init"],
        mask=edit_inputs["mask"],
        other_mask=edit_inputs["other-mask"],
        not_image=edit_inputs["not-an-image"],
    )
    args = [arg.format(**paths) for arg in args]
    match = match.format(**paths)
    out = tmp_path / "out"
    defaults = ["--device", "cpu", "--output_dir", str(out)]
    if "--model" not in args and "--from_metadata" not in args:
        defaults += ["--model", str(tiny_sd_dir)]

    status, stderr = run_main(defaults + args, capsys)  # later flags win: the case's own come last

    assert status == 2
    errors = error_lines(stderr)
    assert len(errors) == 1 and match in errors[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_on_cuda(tiny_sd_dir, dtype, torch_dtype):
    text2image = Text2Image.from_pretrained(str(tiny_sd_dir), device="cuda", dtype=dtype)
    output = text2image.generate("a cat", num_images_per_prompt=2, seed=0, progress=False, **SMALL)

    assert text2image.pipeline.unet.dtype == torch_dtype
    assert [meta.dtype for meta in output.metadata] == [dtype, dtype]
    assert output.metadata[0].device.startswith("cuda")
    assert all(pixels(image).std() > 5 for image in output.images)
    alone = text2image.generate(**output.metadata[1].generate_kwargs(), progress=False)
    assert max_difference(alone.images[0], output.images[1]) <= 2


@pytest.mark.gpu
def test_cpu_offload_on_cuda(tiny_sd_dir):
    offloaded = Text2Image.from_pretrained(str(tiny_sd_dir), device="cuda", dtype="fp16", cpu_offload=True)
    output = offloaded.generate("a cat", seed=0, progress=False, **SMALL)

    assert offloaded.pipeline.unet.device.type == "cpu"  # parked between calls
    assert output.metadata[0].device.startswith("cuda")
    assert pixels(output.images[0]).std() > 5


@pytest.mark.gpu
def test_cpu_offload_on_cuda_covers_the_edit_pipelines(tiny_sd_dir, edit_inputs):
    offloaded = Text2Image.from_pretrained(str(tiny_sd_dir), device="cuda", dtype="fp16", cpu_offload=True)
    for mode in ("img2img", "inpaint"):
        output = offloaded.generate(
            "a cat", seed=0, num_inference_steps=2, progress=False, **edit_kwargs(mode, edit_inputs)
        )
        assert output.metadata[0].device.startswith("cuda")
        assert pixels(output.images[0]).std() > 5
        # Every model is parked on the CPU again after an edit, as after text to image.
        assert {offloaded.pipeline.unet.device.type, offloaded.pipeline.vae.device.type} == {"cpu"}
