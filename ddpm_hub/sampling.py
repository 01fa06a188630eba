"""Sample grids from pipelines: previews during training, and `ddpm-hub sample` for any saved or pushed model."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import PIL.Image
import torch
from diffusers.utils import make_image_grid

from .choices import SAMPLE_STEPS
from .data import open_image, to_model_mode
from .devices import resolve_device
from .files import save_image
from .input_checks import check_finite_model, check_mask_marks_something, check_output_file, check_output_folder
from .labels import preview_class_ids
from .pipeline import DDPMHubPipeline
from .pipeline_guidance import class_id, classifier_label_names
from .pipeline_steps import check_compile_options
from .safe_loading import check_local_model, weights_kwargs

if TYPE_CHECKING:
    from .cli_config import SampleConfig


def default_steps(pipeline: DDPMHubPipeline | None, fallback: int = SAMPLE_STEPS, requested: int | None = None) -> int:
    """The steps a front end samples with: `requested` when the user gave it, else the count the pipeline records as
    its own (`default_num_inference_steps`, e.g. a distilled student's 4, what `pipe()` takes), else the front end's
    `fallback` (`SAMPLE_STEPS` or `EXPLORER_STEPS`, from `ddpm_hub.choices`).

    A pipeline that records none (every trained one) keeps `fallback` rather than `pipe()`'s 1000.
    """
    if requested is not None:
        return requested
    own = pipeline.config.get("default_num_inference_steps") if pipeline is not None else None
    return own or fallback


def grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of the squarest grid holding exactly `count` images."""
    rows = int(count**0.5)
    while count % rows:
        rows -= 1
    return rows, count // rows


@dataclass
class SampleBatch:
    """Images laid out in a grid of `rows` x `columns`, each with a file name that says how to make it again."""

    images: list[PIL.Image.Image]
    names: list[str]
    rows: int
    columns: int

    def grid(self) -> PIL.Image.Image:
        return make_image_grid(self.images, self.rows, self.columns)

    def save_each(self, folder: str | os.PathLike) -> list[Path]:
        """Every image as its own PNG in `folder` (created if missing); files of the same names are replaced."""
        return [save_image(image, Path(folder) / f"{name}.png") for image, name in zip(self.images, self.names)]


def image_names(seeds: Sequence[int], labels: Sequence | None = None, label_names: Sequence[str] | None = None):
    """File names (no suffix) of images by their seed, e.g. "seed-7", and their class if any: "cat-seed-7"."""
    if labels is None:
        return [f"seed-{seed}" for seed in seeds]
    names = []
    for label, seed in zip(labels, seeds):
        if label_names is not None and not isinstance(label, str):
            label = label_names[int(label)]
        names.append(f"{re.sub(r'[^A-Za-z0-9._-]+', '_', str(label)).strip('_.') or 'class'}-seed-{seed}")
    return names


@torch.no_grad()
def sample_batch(
    pipeline: DDPMHubPipeline,
    num_images: int,
    num_inference_steps: int,
    seed: int,
    class_labels: Sequence[int | str] | None = None,
    guidance_scale: float | None = None,
    classifier=None,
    classifier_scale: float | None = None,
) -> SampleBatch:
    """`num_images` samples for a grid; image i always comes from seed + i, so grids stay comparable.

    A class-conditional model, or any model with a `classifier` (classifier guidance), gets one row per class of
    `class_labels` (default: every class, or 16 evenly spaced ones), with at least 2 and enough columns for
    `num_images`; column j uses seed + j in every row, so rows differ by their class only.
    """
    label_names = pipeline.label_names
    if classifier is not None and not pipeline.num_classes:
        label_names = classifier_label_names(classifier)
    if class_labels is None and (pipeline.num_classes or label_names):
        class_labels = preview_class_ids(pipeline.num_classes or len(label_names))
    if not class_labels:
        rows, columns = grid_shape(num_images)
        labels = None
    else:
        rows, columns = len(class_labels), max(2, math.ceil(num_images / len(class_labels)))
        labels = [label for label in class_labels for _ in range(columns)]
    seeds = (
        [seed + i for i in range(rows * columns)]
        if labels is None
        else [seed + j for _ in range(rows) for j in range(columns)]
    )
    guidance = {"classifier": classifier, "classifier_scale": classifier_scale} if classifier is not None else {}
    images = pipeline(
        batch_size=rows * columns,
        class_labels=labels,
        guidance_scale=guidance_scale,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=num_inference_steps,
        output_type="pil",
        **guidance,
    ).images
    return SampleBatch(images, image_names(seeds, labels, label_names), rows, columns)


def generate_grid(
    pipeline: DDPMHubPipeline,
    num_images: int,
    num_inference_steps: int,
    seed: int,
    class_labels: Sequence[int | str] | None = None,
    guidance_scale: float | None = None,
):
    """The grid of `sample_batch` (one image)."""
    return sample_batch(pipeline, num_images, num_inference_steps, seed, class_labels, guidance_scale).grid()


@torch.no_grad()
def upscaled_grid(pipeline: DDPMHubPipeline, originals, num_inference_steps: int, seed: int):
    """A super-resolution model's grid: original images (uint8 (N, C, H, W) at its output size) downsampled to its
    low resolution as training does (`pipeline_superres.downsample`) and upscaled, image i from seed + i; each cell is
    the low-resolution input (enlarged, its pixels kept) beside its upscale."""
    from .pipeline_superres import downsample

    originals = torch.as_tensor(originals)
    size = originals.shape[-1]
    low_res = downsample(originals.float() / 127.5 - 1, pipeline.low_resolution)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(originals))]
    upscaled = pipeline.upscale(
        (low_res + 1) / 2, generator=generators, num_inference_steps=num_inference_steps, output_type="pt"
    ).images
    enlarged = torch.nn.functional.interpolate(low_res, size=(size, size), mode="nearest").to(upscaled)
    pairs = torch.cat([(enlarged + 1) / 2, upscaled], dim=-1)  # input | upscale, side by side
    images = pipeline.image_processor.postprocess(pairs * 2 - 1, output_type="pil")
    return make_image_grid(images, *grid_shape(len(images)))


def render_grid(config: SampleConfig) -> Path:
    """Load the pipeline `config.model` names, sample a grid (or an edit) as `config` says, and save it.

    `config` is `ddpm-hub sample`'s options (`ddpm_hub.cli_config.SampleConfig`). A conditional model's rows are the
    class labels, one per label; see `generate_grid`. With `compile`, the UNet is compiled first
    (`DDPMHubPipeline.compile`); the grid is the same, to floating-point rounding. With `init_image` the grid holds
    `num_images` img2img results; with `mask_image` too, inpainted ones (RePaint); with `interpolate` a strip of
    `num_frames` frames. The steps default to the pipeline's own count (`default_steps`: a distilled student's,
    else `SAMPLE_STEPS`); inpainting, whose RePaint jumps need many levels, to `SAMPLE_STEPS` for every model.
    With `classifier`, a noise-aware classifier steers each row towards its class (classifier guidance); with
    `output_dir`, every image is also saved as its own PNG, named by its seed (and class).
    Options and images are checked before the model loads.
    """
    check_output_file(config.output)  # a folder, an unknown suffix or an unwritable place fails before any sampling
    if config.output_dir is not None:
        check_output_folder(config.output_dir, "--output_dir")
    if config.compile:
        check_compile_options(config.compile_mode, config.compile_backend)  # before loading anything
    if config.classifier is not None and (config.init_image is not None or config.interpolate is not None):
        raise ValueError("--classifier guides sampling from noise; it cannot be combined with --init_image or "
                         "--interpolate.")  # fmt: skip
    edit = EditInputs.check(config)
    class_labels = config.class_labels()
    if edit is not None and edit.mode == "interpolate" and class_labels and len(class_labels) > 1:
        raise ValueError(f"--interpolate takes one --class_label (the class of every frame), got {class_labels}.")
    check_local_model(config.model)  # safetensors weights and a readable model_index.json, before loading anything
    classifier = _load_classifier(config.classifier, class_labels)
    pipeline = DDPMHubPipeline.from_pretrained(config.model, revision=config.revision, **weights_kwargs())
    pipeline = pipeline.to(resolve_device(config.device))
    check_finite_model(pipeline.unet, config.model)
    pipeline.set_sampler(config.sampler)
    if classifier is not None:
        classifier.to(pipeline.device)
    # Checked before any sampling, so a bad label, scale or classifier fails at once with the pipeline's one-line
    # error (a classifier with no label given guides towards each of its classes in turn).
    check_labels = class_labels or (classifier.label_names[:1] if classifier is not None else None)
    pipeline.prepare_guidance(
        check_labels, len(check_labels or [0]), config.guidance_scale, classifier, config.classifier_scale,
        pipeline.device,
    )  # fmt: skip
    if config.compile:
        pipeline.compile(config.compile_mode, backend=config.compile_backend)
    inpaint = edit is not None and edit.mode == "inpaint"
    steps = default_steps(None if inpaint else pipeline, SAMPLE_STEPS, requested=config.num_inference_steps)
    if edit is None:
        batch = sample_batch(
            pipeline, config.num_images, steps, config.seed, class_labels=class_labels,
            guidance_scale=config.guidance_scale, classifier=classifier, classifier_scale=config.classifier_scale,
        )  # fmt: skip
    else:
        batch = edit.render(pipeline, config.num_images, steps, config.seed, class_labels, config.guidance_scale)
    if config.output_dir is not None:
        saved = batch.save_each(config.output_dir)
        print(f"Saved {len(saved)} images to {config.output_dir}")
    return save_image(batch.grid(), config.output)


def _load_classifier(name: str | None, class_labels: list[str] | None):
    """The `--classifier` to guide with (or None), its class names checked against `--class_label` already."""
    if name is None:
        return None
    from .classifier import load_classifier

    classifier = load_classifier(name)
    for label in class_labels or []:
        class_id(label, classifier.label_names, classifier.num_classes, owner="the classifier")
    return classifier


def open_user_image(path: str | os.PathLike, flag: str, channels: int = 3) -> PIL.Image.Image:
    """A fully decoded image from `path`, converted as training converts images; `ValueError` naming `flag` if not."""
    try:
        return to_model_mode(open_image(os.fspath(path)), channels)
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        reason = "no such file" if isinstance(error, FileNotFoundError) else " ".join(str(error).split())
        raise ValueError(f"{flag} {os.fspath(path)!r} is not a readable image: {reason}.") from None


@dataclass
class EditInputs:
    """The editing options of `ddpm-hub sample`, checked and with their images opened, before any model loads."""

    mode: str  # "img2img", "inpaint" or "interpolate"
    image: PIL.Image.Image | None = None
    mask: PIL.Image.Image | None = None
    strength: float = 0.8
    jump_length: int = 10
    jump_n_sample: int = 10
    ends: tuple = ()  # interpolate: a seed (int) or an image for each end
    num_frames: int = 8

    @classmethod
    def check(cls, config: SampleConfig) -> EditInputs | None:
        """Validate the combination of editing options and open the images; `None` when none is given."""
        init_image, strength, mask_image = config.init_image, config.strength, config.mask_image
        interpolate, num_frames = config.interpolate, config.num_frames
        if interpolate is not None:
            if init_image is not None or mask_image is not None or strength is not None:
                raise ValueError("--interpolate cannot be combined with --init_image, --mask_image or --strength.")
            if len(interpolate) != 2:
                raise ValueError(f"--interpolate takes two image paths or seeds, got {list(interpolate)}.")
            if num_frames < 2:
                raise ValueError(f"--num_frames must be at least 2, got {num_frames}.")
            ends = tuple(_seed_or_image(value, f"--interpolate {end}") for value, end in zip(interpolate, "AB"))
            return cls("interpolate", ends=ends, num_frames=num_frames)
        if mask_image is not None and init_image is None:
            raise ValueError("--mask_image needs --init_image, the image to complete.")
        if strength is not None and (init_image is None or mask_image is not None):
            raise ValueError("--strength applies to image to image: --init_image without --mask_image.")
        if init_image is None:
            return None
        if strength is not None and not 0 <= strength <= 1:
            raise ValueError(f"--strength must lie in [0, 1], got {strength}.")
        image = open_user_image(init_image, "--init_image")
        if mask_image is None:
            return cls("img2img", image=image, strength=0.8 if strength is None else strength)
        jump_length, jump_n_sample = config.jump_length, config.jump_n_sample
        for flag, value in (("--jump_length", jump_length), ("--jump_n_sample", jump_n_sample)):
            if value < 1:
                raise ValueError(f"{flag} must be positive, got {value}.")
        check_mask_marks_something(mask_image)
        mask = open_user_image(mask_image, "--mask_image", channels=1)
        if mask.size != image.size:
            raise ValueError(
                f"--mask_image is {mask.size[0]}x{mask.size[1]} but --init_image is {image.size[0]}x{image.size[1]}; "
                "they must be the same size."
            )
        return cls("inpaint", image=image, mask=mask, jump_length=jump_length, jump_n_sample=jump_n_sample)

    @torch.no_grad()
    def render(
        self,
        pipeline: DDPMHubPipeline,
        num_images: int,
        num_inference_steps: int,
        seed: int,
        class_labels: list[int | str] | None = None,
        guidance_scale: float | None = None,
    ):
        """The grid (img2img, inpaint: `num_images` results, image i from seed + i) or the strip (interpolate), as a
        `SampleBatch`.

        With `class_labels` (a conditional model) img2img and inpaint give one row per label, with seed + j in column
        j of every row (as `generate_grid`); interpolate takes one label, the class of every frame.
        """
        guidance = {"guidance_scale": guidance_scale}
        if self.mode == "interpolate":
            (image_a, seed_a), (image_b, seed_b) = [(None, e) if isinstance(e, int) else (e, None) for e in self.ends]
            frames = pipeline.interpolate(
                image_a,
                image_b,
                num_frames=self.num_frames,
                seed_a=seed_a,
                seed_b=seed_b,
                num_inference_steps=num_inference_steps,
                class_labels=class_labels[0] if class_labels else None,
                **guidance,
            ).images
            return SampleBatch(frames, [f"frame-{i:02d}" for i in range(len(frames))], 1, len(frames))
        labels = None
        if class_labels:
            rows, columns = len(class_labels), max(2, math.ceil(num_images / len(class_labels)))
            seeds = [seed + j for _ in range(rows) for j in range(columns)]
            labels = guidance["class_labels"] = [label for label in class_labels for _ in range(columns)]
        else:
            rows, columns = grid_shape(num_images)
            seeds = [seed + i for i in range(num_images)]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        if self.mode == "img2img":
            images = pipeline.img2img(
                [self.image] * len(seeds),
                strength=self.strength,
                generator=generators,
                num_inference_steps=num_inference_steps,
                **guidance,
            ).images
        else:
            images = pipeline.inpaint(
                [self.image] * len(seeds),
                self.mask,
                generator=generators,
                num_inference_steps=num_inference_steps,
                jump_length=self.jump_length,
                jump_n_sample=self.jump_n_sample,
                **guidance,
            ).images
        return SampleBatch(images, image_names(seeds, labels, pipeline.label_names), rows, columns)


def _seed_or_image(value: str, flag: str) -> int | PIL.Image.Image:
    # An integer that is not an existing file is a seed: the noise `ddpm-hub sample --seed N` starts image 0 from.
    if re.fullmatch(r"-?\d+", value) and not os.path.exists(value):
        return int(value)
    return open_user_image(value, flag)
