"""4x upscaling with a text-guided latent upscaler: diffusers' `StableDiffusionUpscalePipeline`, by default
`stabilityai/stable-diffusion-x4-upscaler`.

The upscaler denoises latents at the input's size, conditioned on the prompt and on the input image itself, noised
to `noise_level` by a low-resolution DDPM scheduler (the level is the UNet's class label: conditioning augmentation,
Ho et al. 2021, "Cascaded Diffusion Models"); its VAE decodes them to 4x the size. More noise lets it invent more
detail and follow the input less. It was trained on 128 px inputs (512 px crops of images above 2048 px).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from ..devices import resolve_device
from ..safe_loading import check_local_model, weights_kwargs
from .inputs import DTYPES, check_model_reference, input_image, resolve_dtype
from .metadata import UPSCALE_MODE, ImageMetadata, Text2ImageOutput, library_versions

logger = logging.getLogger("ddpm_hub.text2img")

DEFAULT_UPSCALER = "stabilityai/stable-diffusion-x4-upscaler"

# The largest input side taken: its output is 2048 px, whose UNet self-attention and VAE decoding at that size
# already take minutes and tens of GB; the model was trained on 128 px inputs, and SD's 512-768 px images are
# better generated at 128-256 px and upscaled.
MAX_UPSCALE_INPUT_SIDE = 512
# The smallest: the x4 upscaler's UNet halves its input three times.
MIN_UPSCALE_INPUT_SIDE = 8
SCALE = 4


def check_upscale_size(height: int | None, width: int | None, what: str = "The images to upscale") -> None:
    """Raise `ValueError` (one line) unless `height` x `width` is an input the x4 upscaler takes (a side that is
    `None`, not known yet, is not checked)."""
    sides = [side for side in (height, width) if side is not None]
    if all(MIN_UPSCALE_INPUT_SIDE <= side <= MAX_UPSCALE_INPUT_SIDE for side in sides):
        return
    low, high = MIN_UPSCALE_INPUT_SIDE, MAX_UPSCALE_INPUT_SIDE
    raise ValueError(
        f"{what} are {width or '?'}x{height or '?'} (width x height); the x4 upscaler takes sides of {low} to {high} "
        f"px (a {high} px side becomes {SCALE * high} px; it was trained on 128 px): use --height and --width of at "
        f"most {high}, e.g. 256."
    )


@dataclass
class UpscaleSettings:
    """How the upscaler runs; `None` fields take diffusers' defaults (`Upscaler.settings` fills them)."""

    noise_level: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None

    def check(self, max_noise_level: int | None = None) -> None:
        """Raise `ValueError` naming the first bad value; `max_noise_level` is the upscaler's (350 for the x4)."""
        for name in ("noise_level", "num_inference_steps"):
            value = getattr(self, name)
            low = 0 if name == "noise_level" else 1
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if max_noise_level is not None and self.noise_level is not None and self.noise_level > max_noise_level:
            raise ValueError(
                f"noise_level must be at most the upscaler's max_noise_level ({max_noise_level}), "
                f"got {self.noise_level}."
            )
        scale = self.guidance_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0):
            raise ValueError(f"The upscaler's guidance_scale must be a finite number >= 0, got {scale!r}.")


class Upscaler:
    r"""
    A loaded `StableDiffusionUpscalePipeline` that upscales images 4x under a prompt and records how.

    Args:
        pipeline ([`~diffusers.StableDiffusionUpscalePipeline`]): the loaded upscaler.
        model (`str`): the Hub id or local path it came from, recorded in the metadata.

    Example:

    ```py
    >>> from ddpm_hub.text2img import Upscaler

    >>> upscaler = Upscaler.from_pretrained("stabilityai/stable-diffusion-x4-upscaler", dtype="fp16")
    >>> output = upscaler("cat-128px.png", "a cat wearing a hat", seed=0)  # 512 x 512
    >>> output.save("outputs")
    ```
    """

    def __init__(self, pipeline, model: str):
        self.pipeline, self.model = pipeline, model

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_UPSCALER,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        device: str | torch.device = "auto",
        cpu_offload: bool = False,
    ) -> Upscaler:
        """Load `model` with `StableDiffusionUpscalePipeline.from_pretrained` (safetensors only); `dtype` and `device`
        as for [`Text2Image.from_pretrained`]. Raises `ValueError` for a model that is not an upscaler, `OSError`
        when it cannot be found."""
        from diffusers import StableDiffusionUpscalePipeline

        check_model_reference(model)
        check_local_model(model, "--upscaler_model")
        torch_device = device if isinstance(device, torch.device) else resolve_device(device)
        dtype = resolve_dtype(dtype, torch_device)
        try:
            index = StableDiffusionUpscalePipeline.load_config(model, revision=revision)
            if index.get("_class_name") != StableDiffusionUpscalePipeline.__name__:
                raise ValueError(f"it is a {index.get('_class_name')}, not a StableDiffusionUpscalePipeline")
            pipeline = StableDiffusionUpscalePipeline.from_pretrained(
                model, revision=revision, dtype=DTYPES[dtype], **weights_kwargs()
            )
        except ValueError as error:
            raise ValueError(f"Cannot load --upscaler_model {model!r} as an upscaler: {error}") from None
        except OSError as error:
            raise OSError(f"Cannot load --upscaler_model {model!r}: {error}") from error
        if cpu_offload:
            pipeline.enable_model_cpu_offload(device=torch_device)
        else:
            pipeline.to(torch_device)
        local = Path(model).expanduser()
        return cls(pipeline, str(local.resolve()) if local.exists() else model)

    def settings(self, noise_level=None, num_inference_steps=None, guidance_scale=None) -> UpscaleSettings:
        """The settings checked, with diffusers' defaults for those not given (noise 20, 75 steps, guidance 9)."""
        given = UpscaleSettings(noise_level, num_inference_steps, guidance_scale)
        given.check(self.pipeline.config.max_noise_level)
        defaults = inspect.signature(type(self.pipeline).__call__).parameters
        return UpscaleSettings(
            **{name: defaults[name].default if value is None else value for name, value in vars(given).items()}
        )

    @torch.no_grad()
    def __call__(
        self,
        images,
        prompt: str | Sequence[str] | None = None,
        *,
        negative_prompt: str | None = None,
        noise_level: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        metadata: Sequence[ImageMetadata] | None = None,
        progress: bool = True,
    ) -> Text2ImageOutput:
        r"""
        Upscale each image 4x under its prompt, one image at a time (each from its own CPU generator).

        Args:
            images (`PIL.Image.Image`, path, or a list of them): the images, sides of 8 to 512 px; a side that is not
                a multiple of the VAE's factor (4) is resized to one, with a warning, as diffusers does.
            prompt (`str` or `list[str]`, *optional*): one prompt for all images, or one per image; defaults to each
                image's own prompt in `metadata`.
            negative_prompt (`str`, *optional*): what the images should not show; defaults to each image's own in
                `metadata`.
            noise_level (`int`, *optional*), num_inference_steps (`int`, *optional*),
            guidance_scale (`float`, *optional*): the upscaler's settings; diffusers' defaults (20, 75, 9.0).
            seed (`int`, *optional*): image k gets seed + k; defaults to each image's own seed in `metadata`, else
                drawn at random.
            metadata (`list[ImageMetadata]`, *optional*): the images' own metadata (from [`Text2Image.generate`]);
                the upscaled images keep it, with the upscaler's fields added (and no CLIP score: they are new pixels).
            progress (`bool`, defaults to `True`): show a progress bar per image.

        Returns:
            [`Text2ImageOutput`]: the upscaled images and their metadata.
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        jobs = self._jobs(images, prompt, negative_prompt, seed, metadata)
        loaded = [input_image(image, "image to upscale") for image in images]
        for pixels, _, _ in loaded:
            check_upscale_size(pixels.height, pixels.width)
        settings = self.settings(noise_level, num_inference_steps, guidance_scale)
        fields = dict(upscaler=self.model, upscale_noise_level=settings.noise_level,
                      upscale_num_inference_steps=settings.num_inference_steps,
                      upscale_guidance_scale=float(settings.guidance_scale))  # fmt: skip
        created = datetime.now().isoformat(timespec="seconds")
        upscaled, records = [], []
        for k, ((pixels, path, sha256), (text, negative, image_seed)) in enumerate(zip(loaded, jobs)):
            self.pipeline.set_progress_bar_config(desc=f"upscale {k + 1}/{len(images)}", disable=not progress)
            image, flagged = self._upscale_one(pixels, text, negative, image_seed, settings)
            if metadata is not None:
                record = dataclasses.replace(metadata[k], clip_score=None, clip_model=None, **fields)
            else:
                record = self._metadata(pixels, path, sha256, text, negative, image_seed, k, created, settings)
                record = dataclasses.replace(record, **fields)
            if flagged:  # the upscaler's own safety checker, where it has one, blacked the image out
                record.nsfw_content_detected = True
            upscaled.append(image)
            records.append(record)
        return Text2ImageOutput(upscaled, records)

    @staticmethod
    def _jobs(images, prompt, negative_prompt, seed, metadata) -> list[tuple[str, str | None, int]]:
        """(prompt, negative prompt, seed) of each image: as given, else from its metadata."""
        count = len(images)
        if metadata is not None and len(metadata) != count:
            raise ValueError(f"Give one metadata per image: {count} images, {len(metadata)} metadata.")
        if prompt is None and metadata is None:
            raise ValueError("Give the prompt to upscale under (or the images' metadata, which holds theirs).")
        if prompt is None:
            prompts = [meta.prompt for meta in metadata]
        else:
            prompts = [prompt] * count if isinstance(prompt, str) else list(prompt)
        if len(prompts) != count or not all(isinstance(text, str) and text.strip() for text in prompts):
            raise ValueError(f"Give one non-empty prompt for all images or one per image: {count} images, "
                             f"prompts {prompts!r}.")  # fmt: skip
        if negative_prompt is None and metadata is not None:
            negatives = [meta.negative_prompt for meta in metadata]
        else:
            negatives = [negative_prompt] * count
        if seed is not None:
            seeds = [seed + k for k in range(count)]
        elif metadata is not None:
            seeds = [meta.seed for meta in metadata]
        else:
            first = secrets.randbelow(2**32)
            seeds = [first + k for k in range(count)]
        return list(zip(prompts, negatives, seeds))

    def _upscale_one(self, image, prompt, negative_prompt, seed: int, settings: UpscaleSettings):
        factor = self.pipeline.vae_scale_factor
        if image.width % factor or image.height % factor:
            logger.warning("The image to upscale is %dx%d; diffusers resizes it to multiples of %d.",
                           image.width, image.height, factor)  # fmt: skip
        output = self.pipeline(
            prompt=prompt,
            image=image,
            negative_prompt=negative_prompt,
            noise_level=settings.noise_level,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pil",
        )
        nsfw = getattr(output, "nsfw_content_detected", None)
        return output.images[0], bool(nsfw and nsfw[0])

    def _metadata(self, image, path, sha256, prompt, negative_prompt, seed, index, created, settings):
        """The metadata of a given (not generated) image's upscale: mode "upscale", `init_image` its source."""
        return ImageMetadata(
            prompt=prompt, negative_prompt=negative_prompt, seed=seed,
            num_inference_steps=settings.num_inference_steps, guidance_scale=float(settings.guidance_scale),
            height=image.height, width=image.width, scheduler=None,
            scheduler_class=type(self.pipeline.scheduler).__name__, model=self.model, revision=None, variant=None,
            dtype=next((n for n, d in DTYPES.items() if d == self.pipeline.unet.dtype), str(self.pipeline.unet.dtype)),
            device=str(self.pipeline._execution_device), pipeline_class=type(self.pipeline).__name__,
            safety_checker=getattr(self.pipeline, "safety_checker", None) is not None, nsfw_content_detected=None,
            index=index, created=created, mode=UPSCALE_MODE, init_image=path, init_image_sha256=sha256,
            **library_versions(),
        )  # fmt: skip
