"""Cascaded diffusion (Ho et al. 2021): a base model and super-resolution models, chained, each upscaling the
images of the stage before it; and `ddpm-hub sample MODEL --upscaler SR [--upscaler SR2 ...]` (or
`ddpm-hub sample SR --low_res_image in.png`) on top of it.

    cascade = DDPMHubCascade.from_pretrained("org/emoji-16", upscalers=["org/emoji-sr-16-64"])
    images = cascade(batch_size=4, num_inference_steps=50, noise_level=0).images      # 64x64
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers.utils import BaseOutput, make_image_grid

from ..choices import SAMPLE_STEPS
from ..devices import resolve_device
from ..files import save_image
from ..input_checks import check_finite_model, check_output_file
from ..pipeline import DDPMHubPipeline
from ..pipeline_steps import check_compile_options
from ..safe_loading import check_local_model, weights_kwargs

if TYPE_CHECKING:
    from ..cli_config import SampleConfig


@dataclass
class DDPMHubCascadeOutput(BaseOutput):
    """Output of [`DDPMHubCascade`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): the last stage's images, as `output_type`.
        stages (`list`, *optional*): with `return_stages=True`, every stage's images, first to last, as `output_type`.
    """

    images: list | object
    stages: list | None = None


def _name(pipeline: DDPMHubPipeline) -> str:
    return str(pipeline.name_or_path or type(pipeline).__name__)


def check_chain(stages: Sequence[DDPMHubPipeline]) -> None:
    """Refuse, in one line, stages that do not chain: every stage after the first must be an upscaler whose low
    resolution and channels are the previous stage's output."""
    if not stages:
        raise ValueError("A cascade needs at least one stage.")
    for previous, stage in zip(stages, stages[1:]):
        channels, size, _ = previous.image_shape
        if not stage.is_upscaler:
            raise ValueError(f"{_name(stage)!r} is not a super-resolution model (it has no low resolution to take).")
        if stage.low_resolution != size:
            raise ValueError(
                f"The upscaler {_name(stage)!r} takes {stage.low_resolution}x{stage.low_resolution} images but "
                f"{_name(previous)!r} makes {size}x{size} ones; each stage's low resolution must be the previous "
                "stage's resolution."
            )
        if stage.image_shape[0] != channels:
            raise ValueError(
                f"The upscaler {_name(stage)!r} takes images with {stage.image_shape[0]} channel(s) but "
                f"{_name(previous)!r} makes images with {channels}."
            )


def _per_stage(value, count: int, name: str) -> list:
    """One value for each of `count` stages: a single value repeated, or a list of exactly `count`."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(values) != count:
        raise ValueError(f"Got {len(values)} values of `{name}` for {count} stages; pass one, or one per stage.")
    return values


class DDPMHubCascade:
    """Pipelines chained into one sampler: a base model (or an upscaler, given `image`) and upscalers.

    Args:
        stages (`Sequence[DDPMHubPipeline]`): the base model first (a model that generates from noise, or an
            upscaler that takes the caller's images), then upscalers, each taking the previous stage's resolution.
    """

    def __init__(self, stages: Sequence[DDPMHubPipeline]):
        check_chain(stages)
        self.stages = list(stages)

    @classmethod
    def from_pretrained(cls, base: str, upscalers: Sequence[str] = (), **kwargs) -> DDPMHubCascade:
        """Load every stage (folders or Hub ids) with `DDPMHubPipeline.from_pretrained(name, **kwargs)`."""
        return cls([DDPMHubPipeline.from_pretrained(name, **kwargs) for name in (base, *upscalers)])

    @property
    def base(self) -> DDPMHubPipeline:
        return self.stages[0]

    @property
    def num_classes(self) -> int:
        """The classes of a class-conditional base model (its labels condition the first stage only)."""
        return self.base.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the cascade's images: the last stage's."""
        return self.stages[-1].image_shape

    def to(self, *args, **kwargs) -> DDPMHubCascade:
        for stage in self.stages:
            stage.to(*args, **kwargs)
        return self

    def set_sampler(self, name: str, **overrides) -> DDPMHubCascade:
        for stage in self.stages:
            stage.set_sampler(name, **overrides)
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        for stage in self.stages:
            stage.set_progress_bar_config(**kwargs)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        image=None,
        class_labels=None,
        guidance_scale: float | None = None,
        noise_level: int | Sequence[int] = 0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | Sequence[int | None] | None = None,
        output_type: str = "pil",
        return_stages: bool = False,
        return_dict: bool = True,
    ) -> DDPMHubCascadeOutput | tuple:
        r"""
        Sample the first stage (or take `image`, when it is an upscaler) and upscale through every later stage.

        Args:
            batch_size (`int`, *optional*, defaults to 1): images to generate (the number of `image`s when given).
            image (*optional*): the low-resolution images of a cascade that starts with an upscaler, as `upscale`
                takes them.
            class_labels, guidance_scale: for a class-conditional base model, as its `__call__` takes them.
            noise_level (`int` or `list[int]`, defaults to 0): each upscaler's conditioning-augmentation level; one
                for all, or one per upscaler.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one generator drives every stage
                in turn; with one per image, image i depends only on `generator[i]`.
            num_inference_steps (`int` or `list`, *optional*): each stage's steps (one for all, or one per stage);
                `None` is the stage's own default.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_stages (`bool`, defaults to `False`): also return every stage's images.
            return_dict (`bool`, defaults to `True`): a [`DDPMHubCascadeOutput`] rather than a tuple.
        """
        starts_with_upscaler = self.base.is_upscaler
        if starts_with_upscaler != (image is not None):
            raise ValueError(
                f"The first stage {_name(self.base)!r} "
                + ("is an upscaler: give the `image` to upscale." if starts_with_upscaler else "generates from noise; "
                   "it takes no `image` (start the cascade with an upscaler to upscale given images).")
            )  # fmt: skip
        upscalers = self.stages if starts_with_upscaler else self.stages[1:]
        levels = _per_stage(noise_level, len(upscalers), "noise_level")
        steps = _per_stage(num_inference_steps, len(self.stages), "num_inference_steps")
        current = image
        if not starts_with_upscaler:
            current = self.base(
                batch_size=batch_size, class_labels=class_labels, guidance_scale=guidance_scale, generator=generator,
                num_inference_steps=steps[0], output_type="pt",
            ).images  # fmt: skip
        outputs = [] if starts_with_upscaler else [current]
        for stage, level, stage_steps in zip(upscalers, levels, steps[len(steps) - len(upscalers) :]):
            current = stage.upscale(
                current, noise_level=level, generator=generator, num_inference_steps=stage_steps, output_type="pt"
            ).images
            outputs.append(current)
        converted = [self._convert(stage, images, output_type) for stage, images in zip(self.stages, outputs)]
        output = DDPMHubCascadeOutput(converted[-1], converted if return_stages else None)
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _convert(stage: DDPMHubPipeline, images: torch.Tensor, output_type: str):
        """A stage's images in [0, 1] ("pt") as `output_type`."""
        return images if output_type == "pt" else stage.image_processor.postprocess(images * 2 - 1, output_type)


def render_cascade(config: SampleConfig) -> Path:
    """`ddpm-hub sample`'s grid through a cascade: MODEL and every `--upscaler`, or a super-resolution MODEL (and
    upscalers) applied to `--low_res_image`, `num_images` times (image i from seed + i). The grid holds the last
    stage's images; every option, image and stage is checked before anything is sampled (the options before any
    model loads)."""
    from ..sampling import default_steps, generate_grid, grid_shape

    image, class_labels = _checked_options(config)
    names = [config.model, *(config.upscaler or [])]
    cascade = _load_cascade(config, names, image)
    steps = [default_steps(stage, SAMPLE_STEPS, requested=config.num_inference_steps) for stage in cascade.stages]
    if image is None:
        cascade.base.prepare_class_labels(class_labels, len(class_labels or [0]), config.guidance_scale)
        grid = generate_grid(
            _AtSteps(cascade, steps, config.noise_level), config.num_images, steps[0], config.seed,
            class_labels=class_labels, guidance_scale=config.guidance_scale,
        )  # fmt: skip
    else:
        rows, columns = grid_shape(config.num_images)
        generators = [torch.Generator().manual_seed(config.seed + i) for i in range(config.num_images)]
        images = cascade(
            image=[image] * config.num_images, noise_level=config.noise_level, generator=generators,
            num_inference_steps=steps,
        ).images  # fmt: skip
        grid = make_image_grid(images, rows, columns)
    return save_image(grid, config.output)


def _checked_options(config: SampleConfig):
    """`(low-resolution image or None, class labels or None)`: the options of a cascade, checked (one line each)
    before any model loads."""
    from ..sampling import open_user_image

    check_output_file(config.output)
    edits = {"--init_image": config.init_image, "--mask_image": config.mask_image, "--strength": config.strength,
             "--interpolate": config.interpolate, "--classifier": config.classifier,
             "--output_dir": config.output_dir}  # fmt: skip
    editing = [flag for flag, value in edits.items() if value is not None]
    if editing:
        raise ValueError(f"--upscaler and --low_res_image cannot be combined with {', '.join(editing)}.")
    if config.compile:
        check_compile_options(config.compile_mode, config.compile_backend)
    class_labels = config.class_labels()
    if config.low_res_image is None:
        return None, class_labels
    if class_labels or config.guidance_scale is not None:
        raise ValueError("--class_label and --guidance_scale apply to a base model, not to --low_res_image.")
    return open_user_image(config.low_res_image, "--low_res_image"), None


def _load_cascade(config: SampleConfig, names: list[str], image) -> DDPMHubCascade:
    """The cascade of `names`, checked against `image` and `--noise_level`, then on the device with the sampler."""
    for name in names:
        check_local_model(name)
    stages = [
        DDPMHubPipeline.from_pretrained(name, revision=config.revision if i == 0 else None, **weights_kwargs())
        for i, name in enumerate(names)
    ]
    cascade = DDPMHubCascade(stages)  # stages that do not chain are refused here
    base = cascade.base
    if image is not None:
        if not base.is_upscaler:
            raise ValueError(f"--low_res_image needs a super-resolution MODEL; {config.model!r} generates from noise.")
        if image.size != (base.low_resolution, base.low_resolution):
            raise ValueError(
                f"--low_res_image {config.low_res_image!r} is {image.size[0]}x{image.size[1]}; {config.model!r} "
                f"upscales {base.low_resolution}x{base.low_resolution} images."
            )
    for name, stage in zip(names, stages):
        if stage.is_upscaler and config.noise_level > stage.low_res_noise_max:
            raise ValueError(
                f"--noise_level {config.noise_level} is above the highest level {name!r} was trained with "
                f"(low_res_noise_max {stage.low_res_noise_max})."
            )
    device = resolve_device(config.device)
    for name, stage in zip(names, stages):
        check_finite_model(stage.unet, name)
        stage.to(device).set_sampler(config.sampler).set_progress_bar_config(disable=True)
        if config.compile:
            stage.compile(config.compile_mode, backend=config.compile_backend)
    return cascade


class _AtSteps:
    """A cascade seen by `generate_grid` as one pipeline: its call runs every stage at its own steps and level."""

    def __init__(self, cascade: DDPMHubCascade, steps: list[int], noise_level: int):
        self.cascade, self.steps, self.noise_level = cascade, steps, noise_level
        self.num_classes, self.label_names = cascade.num_classes, cascade.base.label_names

    def __call__(self, num_inference_steps: int, **kwargs):
        return self.cascade(num_inference_steps=self.steps, noise_level=self.noise_level, **kwargs)
