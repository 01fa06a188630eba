"""`Text2Image`: a loaded diffusers text-to-image pipeline (Stable Diffusion 1.x, 2.x, SDXL) that also edits
(image to image, inpainting, over the same components) and records how every image was made."""

from __future__ import annotations

import dataclasses
import inspect
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..arguments import one_line
from ..devices import resolve_device
from ..pipeline_steps import SAMPLERS, compile_denoiser, scheduler_from_name
from ..safe_loading import check_local_model, weights_kwargs
from .clip_score import DEFAULT_CLIP_MODEL, CLIPScorer
from .inputs import (
    DEFAULT_MODEL,
    DTYPES,
    MODES,
    GenerationInputs,
    _round_down_to_8,
    check_model_reference,
    input_image,
    logger,
    resolve_dtype,
)
from .metadata import ImageMetadata, Text2ImageOutput, library_versions
from .upscale import DEFAULT_UPSCALER, Upscaler


class Text2Image:
    r"""
    Text-to-image generation with a diffusers Stable Diffusion (1.x, 2.x) or SDXL pipeline, recording how every
    image was made.

    Args:
        pipeline ([`~diffusers.DiffusionPipeline`]):
            A loaded text-to-image pipeline with `tokenizer`, `unet` and `scheduler` components.
        model (`str`):
            The Hub id or local path it came from, recorded in the metadata.
        revision (`str`, *optional*), variant (`str`, *optional*):
            Recorded in the metadata.
        scheduler (`str`, *optional*):
            Short name of the sampler in use (see `SAMPLERS`); `None` when it is the model's own scheduler.
        cpu_offload (`bool`, defaults to `False`):
            Whether `pipeline` runs under model CPU offload; the upscaler, when loaded, then does too.

    Example:

    ```py
    >>> from ddpm_hub.text2img import Text2Image

    >>> t2i = Text2Image.from_pretrained("stabilityai/stable-diffusion-2", dtype="fp16", scheduler="dpmpp_2m")
    >>> output = t2i.generate("a cat wearing a hat", num_images_per_prompt=4, seed=0, num_inference_steps=25)
    >>> output.save("outputs", grid=True)
    >>> # Image 2 alone, with the seed recorded for it (0 + 2):
    >>> again = t2i.generate(**output.metadata[2].generate_kwargs()).images[0]
    >>> # The same loaded weights redraw an image (img2img), or only the white part of a mask (inpainting):
    >>> painted = t2i.generate("an oil painting of a cat", image="cat.png", strength=0.6, seed=0)
    >>> hatted = t2i.generate("a red hat", image="cat.png", mask_image="hat-mask.png", seed=0)
    >>> # How well each image follows its prompt (CLIP score, also saved in its metadata), and a 4x upscale:
    >>> scores = t2i.clip_score(output)
    >>> small = t2i.generate("a cat wearing a hat", height=128, width=128, seed=0)
    >>> big = t2i.upscale(small.images, metadata=small.metadata)  # 512 x 512, same prompt and seed
    >>> photo = t2i.upscale("photo-128px.png", "a cat on a sofa", seed=0)  # any image
    ```
    """

    def __init__(
        self,
        pipeline,
        *,
        model: str,
        revision: str | None = None,
        variant: str | None = None,
        scheduler: str | None = None,
        cpu_offload: bool = False,
    ):
        self.pipeline = pipeline
        # diffusers' img2img and inpaint pipelines over the same component objects, built on first use.
        self._edit_pipelines: dict[str, Any] = {}
        self.model = model
        self.revision = revision
        self.variant = variant
        self.scheduler = scheduler
        self.cpu_offload = cpu_offload
        self._upscaler: Upscaler | None = None
        self._clip_scorer: CLIPScorer | None = None

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        variant: str | None = None,
        scheduler: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        attention_slicing: bool = False,
        cpu_offload: bool = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        compile: bool = False,
        disable_safety_checker: bool = False,
    ) -> Text2Image:
        r"""
        Load a text-to-image pipeline with `AutoPipelineForText2Image.from_pretrained`.

        Args:
            model (`str`, defaults to `"stabilityai/stable-diffusion-2"`):
                A Hub id ("org/name") or a local folder saved with `save_pretrained`.
            revision (`str`, *optional*):
                Branch, tag or commit of a Hub model.
            variant (`str`, *optional*):
                Weight file variant, e.g. `"fp16"` for half-size downloads.
            scheduler (`str`, *optional*):
                Sampler to swap in by short name (a key of `SAMPLERS`: ddim, pndm, euler, euler_a, dpmpp_2m, ...),
                built with `from_config` so it keeps the model's noise schedule. Defaults to the model's own.
            dtype (`str`, defaults to `"auto"`):
                `"fp32"`, `"fp16"`, `"bf16"`, or `"auto"` (fp16 on CUDA, fp32 elsewhere). fp16 is refused on the CPU.
            device (`str`, defaults to `"auto"`):
                `"auto"` (cuda, then mps, then cpu), `"cpu"`, `"cuda"`, `"cuda:N"` or `"mps"`.
            attention_slicing (`bool`, defaults to `False`):
                Compute attention in slices: less memory, a little slower.
            cpu_offload (`bool`, defaults to `False`):
                Keep each model on the CPU until it runs (`enable_model_cpu_offload`); needs CUDA.
            vae_slicing (`bool`, defaults to `False`):
                Decode the images of a batch one at a time.
            vae_tiling (`bool`, defaults to `False`):
                Decode large images tile by tile.
            compile (`bool`, defaults to `False`):
                `torch.compile` the UNet, in place, for the batch shape in use (CUDA graphs, "reduce-overhead", on
                CUDA): the first images of each batch size are slow (compilation), the rest faster.
            disable_safety_checker (`bool`, defaults to `False`):
                Load without the model's safety checker (for models that have one).

        Raises:
            `ValueError`: for an invalid argument, or a model diffusers cannot use for text-to-image.
            `OSError`: when the model cannot be found or downloaded.
        """
        check_model_reference(model)
        check_local_model(model)  # safetensors only (unless opted in), a model_index.json that is an object
        if scheduler is not None and scheduler not in SAMPLERS:
            raise ValueError(f"Unknown scheduler {scheduler!r}; choose one of: {', '.join(SAMPLERS)}.")
        torch_device = resolve_device(device)
        dtype = resolve_dtype(dtype, torch_device)
        if cpu_offload and torch_device.type != "cuda":
            raise ValueError(f"cpu_offload moves models to and from a CUDA GPU, but the device is {torch_device}.")
        pipeline = _load_pipeline(model, revision, variant, DTYPES[dtype], disable_safety_checker)
        if scheduler is not None:
            pipeline.scheduler = scheduler_from_name(scheduler, pipeline.scheduler.config)
        if cpu_offload:
            pipeline.enable_model_cpu_offload(device=torch_device)
        else:
            pipeline.to(torch_device)
        if attention_slicing:
            pipeline.enable_attention_slicing()
        # diffusers 0.42 moved VAE slicing and tiling from the pipeline to the VAE itself.
        if vae_slicing:
            pipeline.vae.enable_slicing()
        if vae_tiling:
            pipeline.vae.enable_tiling()
        if compile:
            # In place, for the batch shape in use; CUDA graphs on CUDA, except under offload, which moves the weights.
            compile_denoiser(pipeline.unet, None if not cpu_offload else "default")
        # A local folder is recorded by its absolute path, so that its metadata works from any working directory.
        local = Path(model).expanduser()
        model = str(local.resolve()) if local.exists() else model
        return cls(
            pipeline, model=model, revision=revision, variant=variant, scheduler=scheduler, cpu_offload=cpu_offload
        )

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was trained at, used when `generate` is given none."""
        sample_size = self.pipeline.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        return height * self.pipeline.vae_scale_factor, width * self.pipeline.vae_scale_factor

    def pipeline_for(self, mode: str):
        r"""
        The diffusers pipeline that runs `mode` ("text2img", "img2img" or "inpaint") on the loaded components.

        The image-to-image and inpainting pipelines are built once, with `AutoPipelineFor{Image2Image,Inpainting}
        .from_pipe`, from the same module objects (UNet, VAE, text encoders, scheduler, safety checker): no weight
        is loaded or copied again, and the memory options, compiled UNet and sampler apply to every mode.
        Stable Diffusion 1.x/2.x give `StableDiffusion{Img2Img,Inpaint}Pipeline`, SDXL the `StableDiffusionXL` ones.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; choose one of: {', '.join(MODES)}.")
        if mode == "text2img":
            return self.pipeline
        if mode not in self._edit_pipelines:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
            try:
                self._edit_pipelines[mode] = auto.from_pipe(self.pipeline)
            except ValueError as error:
                raise ValueError(
                    f"diffusers has no {mode} pipeline for {type(self.pipeline).__name__} ({one_line(error)})."
                ) from None
        return self._edit_pipelines[mode]

    def default_strength(self, mode: str) -> float | None:
        """diffusers' default strength for `mode` with this model (SD: 0.8 img2img, 1.0 inpaint; SDXL: 0.3, 0.9999)."""
        if mode == "text2img":
            return None
        return inspect.signature(type(self.pipeline_for(mode)).__call__).parameters["strength"].default

    def check_inputs(self, prompt: str | list[str], **inputs: Any) -> list[str]:
        """Check the arguments of [`~Text2Image.generate`] (`progress` aside) without generating; return the
        prompts as a list. Raises `ValueError` naming the first bad value."""
        return self._checked(GenerationInputs(prompt, **inputs)).prompts

    def _checked(self, inputs: GenerationInputs) -> GenerationInputs:
        """`inputs` with diffusers' default strength filled in for an edit, after the one input check."""
        if inputs.image is not None and inputs.strength is None:
            inputs = dataclasses.replace(inputs, strength=self.default_strength(inputs.mode))
        inputs.check()
        num_train_timesteps = self.pipeline.scheduler.config.num_train_timesteps
        if inputs.num_inference_steps > num_train_timesteps:
            raise ValueError(
                f"num_inference_steps ({inputs.num_inference_steps}) cannot exceed the model's "
                f"{num_train_timesteps} training timesteps."
            )
        return inputs

    def _warn_if_truncated(self, prompt: str) -> None:
        """Log a warning naming how many tokens of `prompt` the text encoder will not see."""
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        if tokenizer is None:
            return
        num_tokens = len(tokenizer(prompt, truncation=False, verbose=False).input_ids)
        dropped = num_tokens - tokenizer.model_max_length
        if dropped > 0:
            logger.warning(
                "Prompt %r is %d tokens long but the text encoder reads at most %d; the last %d tokens were dropped.",
                prompt if len(prompt) <= 60 else prompt[:57] + "...",
                num_tokens,
                tokenizer.model_max_length,
                dropped,
            )

    @torch.no_grad()
    def generate(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        image=None,
        strength: float | None = None,
        mask_image=None,
        progress: bool = True,
    ) -> Text2ImageOutput:
        r"""
        Generate `num_images_per_prompt` images for each prompt: from text alone, or by redrawing `image`.

        Args:
            prompt (`str` or `list[str]`):
                The prompt or prompts. Text beyond the tokenizer's limit (77 tokens for SD) is dropped, with a warning.
            negative_prompt (`str`, *optional*):
                What the images should not show, for every prompt; needs `guidance_scale > 1`.
            num_inference_steps (`int`, defaults to 50):
                Denoising steps; with an init image diffusers runs only the last `int(num_inference_steps * strength)`.
            guidance_scale (`float`, defaults to 7.5):
                Classifier-free guidance weight (Ho & Salimans 2022); 1 or less turns guidance off.
            height (`int`, *optional*), width (`int`, *optional*):
                Image size in pixels, multiples of 8. Default to the init image's size rounded down to multiples of
                8, or without one to the model's training size (`default_size`). An init image and mask of
                another size are resized to it.
            num_images_per_prompt (`int`, defaults to 1):
                Images per prompt.
            seed (`int`, *optional*):
                Image k (counted from 0 over all prompts) gets seed `seed + k`; drawn at random when not given.
            image (`str`, `os.PathLike` or `PIL.Image.Image`, *optional*):
                Init image for image to image (SDEdit, Meng et al. 2021): it is encoded, noised to the step that
                `strength` names and denoised under the prompt. A path is recorded in the metadata with the sha256
                of the file, so that the image can be regenerated; an in-memory image cannot be.
            strength (`float`, *optional*):
                How much of the init image to redraw, in (0, 1]: 1 starts from pure noise. Defaults to diffusers'
                default for the pipeline (`default_strength`: SD 0.8 for img2img and 1.0 for inpainting).
            mask_image (`str`, `os.PathLike` or `PIL.Image.Image`, *optional*):
                With `image`, inpaint: redraw where the mask is white, keep where it is black. Same size as `image`.
            progress (`bool`, defaults to `True`):
                Show a progress bar over the denoising steps.

        Returns:
            [`Text2ImageOutput`]: the images and one [`ImageMetadata`] per image.
        """
        inputs = self._checked(GenerationInputs.of(locals()))
        for text in dict.fromkeys(inputs.prompts + ([negative_prompt] if negative_prompt else [])):
            self._warn_if_truncated(text)
        pipeline = self.pipeline_for(inputs.mode)
        size, call_kwargs, sources = self._image_inputs(pipeline, inputs)
        if inputs.seed is None:
            inputs.seed = secrets.randbelow(2**32)
        shared = dict(created=datetime.now().isoformat(timespec="seconds"), **sources, **self._run_info(pipeline))
        shared.update(height=size[0], width=size[1], mode=inputs.mode)
        images, metadata = [], []
        for prompt_index in range(len(inputs.prompts)):
            pipeline.set_progress_bar_config(
                desc=f"prompt {prompt_index + 1}/{len(inputs.prompts)}", disable=not progress
            )
            new_images, new_metadata = self._generate_one_prompt(pipeline, inputs, prompt_index, call_kwargs, shared)
            images += new_images
            metadata += new_metadata
        return Text2ImageOutput(images=images, metadata=metadata, num_images_per_prompt=num_images_per_prompt)

    def image_size(self, prompt: str | list[str], **inputs: Any) -> tuple[int, int]:
        """(height, width) of the images [`~Text2Image.generate`] makes with these arguments."""
        inputs = GenerationInputs(prompt, **inputs)
        init = None if inputs.image is None else input_image(inputs.image, "init image")[0]
        return self._size(inputs, init)

    def _size(self, inputs: GenerationInputs, init) -> tuple[int, int]:
        """The size given, else the init image's rounded down to multiples of 8, else the model's default."""
        if init is None:
            default_height, default_width = self.default_size
            return inputs.height or default_height, inputs.width or default_width
        height = inputs.height or _round_down_to_8(init.height, "height")
        return height, inputs.width or _round_down_to_8(init.width, "width")

    def _image_inputs(self, pipeline, inputs: GenerationInputs):
        """(height, width), the size and image arguments of the diffusers call, and the metadata of the source files."""
        sources: dict[str, Any] = {}
        if inputs.image is None:
            height, width = self._size(inputs, None)
            return (height, width), {"height": height, "width": width}, sources
        init, sources["init_image"], sources["init_image_sha256"] = input_image(inputs.image, "init image")
        height, width = self._size(inputs, init)
        # Resized here rather than inside diffusers, whose img2img pipelines take no size argument.
        # One copy of the init image (and mask) per image: diffusers' inpaint pipelines VAE-encode a single image
        # with the first generator only, which would tie image k's noise to its place in the batch. With a copy
        # each, generator k alone draws everything random about image k.
        copies = inputs.num_images_per_prompt
        call_kwargs = {
            "image": [pipeline.image_processor.resize(init, height, width)] * copies,
            "strength": inputs.strength,
        }
        if inputs.mask_image is not None:
            mask, sources["mask_image"], sources["mask_image_sha256"] = input_image(inputs.mask_image, "mask image")
            mask = pipeline.mask_processor.resize(mask, height, width)
            call_kwargs.update(mask_image=[mask] * copies, height=height, width=width)
        return (height, width), call_kwargs, sources

    def _generate_one_prompt(self, pipeline, inputs: GenerationInputs, prompt_index: int, call_kwargs, shared):
        """The images of prompt `prompt_index`, one CPU generator (and seed) each, with their metadata."""
        first = prompt_index * inputs.num_images_per_prompt
        seeds = [inputs.seed + first + i for i in range(inputs.num_images_per_prompt)]
        # One CPU generator per image: its noise then depends on its seed only, not on its place in the batch or
        # on the device, so any image can be regenerated alone.
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        text = inputs.prompts[prompt_index]
        output = pipeline(
            prompt=text,
            negative_prompt=inputs.negative_prompt,
            num_inference_steps=inputs.num_inference_steps,
            guidance_scale=inputs.guidance_scale,
            num_images_per_prompt=inputs.num_images_per_prompt,
            generator=generators,
            output_type="pil",
            **call_kwargs,
        )
        if pipeline is not self.pipeline:
            # Model CPU offload's hooks belong to the loaded pipeline: the edit pipeline cannot put the models back
            # on the CPU after its call, so the owner does (a no-op without offload).
            self.pipeline.maybe_free_model_hooks()
        nsfw = getattr(output, "nsfw_content_detected", None)
        metadata = [
            ImageMetadata(
                prompt=text,
                negative_prompt=inputs.negative_prompt,
                seed=seeds[i],
                num_inference_steps=inputs.num_inference_steps,
                guidance_scale=float(inputs.guidance_scale),
                nsfw_content_detected=None if nsfw is None else bool(nsfw[i]),
                index=first + i,
                strength=None if inputs.strength is None else float(inputs.strength),
                **shared,
            )
            for i in range(len(output.images))
        ]
        return list(output.images), metadata

    def _run_info(self, pipeline) -> dict[str, Any]:
        """The metadata fields shared by every image of a run made with `pipeline`."""
        return {
            "scheduler": self.scheduler,
            "scheduler_class": type(self.pipeline.scheduler).__name__,
            "model": self.model,
            "revision": self.revision,
            "variant": self.variant,
            "dtype": self.dtype,
            "device": str(pipeline._execution_device),
            "pipeline_class": type(pipeline).__name__,
            "safety_checker": getattr(pipeline, "safety_checker", None) is not None,
            **library_versions(),
        }

    @property
    def dtype(self) -> str:
        """The short name (fp32, fp16, bf16) of the dtype the UNet runs in."""
        unet_dtype = self.pipeline.unet.dtype
        return next((name for name, dtype in DTYPES.items() if dtype == unet_dtype), str(unet_dtype))

    def set_scheduler(self, scheduler: str | None) -> None:
        """Swap in the sampler `scheduler` (a key of `SAMPLERS`, built `from_config` so the model's noise schedule
        stays) for every mode; `None` keeps the current one."""
        if scheduler is None:
            return
        if scheduler not in SAMPLERS:
            raise ValueError(f"Unknown scheduler {scheduler!r}; choose one of: {', '.join(SAMPLERS)}.")
        self.pipeline.scheduler = scheduler_from_name(scheduler, self.pipeline.scheduler.config)
        for edit_pipeline in self._edit_pipelines.values():
            edit_pipeline.scheduler = self.pipeline.scheduler
        self.scheduler = scheduler

    # ------------------------------------------------------------------------------------------------------------
    # Upscaling and CLIP score: models of their own, loaded on first use on this pipeline's device.
    # ------------------------------------------------------------------------------------------------------------

    def load_upscaler(self, model: str = DEFAULT_UPSCALER, *, revision: str | None = None) -> Upscaler:
        """The [`Upscaler`] `model`, loaded once (in this pipeline's dtype, on its device, offloaded if it is)."""
        if self._upscaler is None or self._upscaler.model not in (model, str(Path(model).expanduser().resolve())):
            self._upscaler = None  # the previous one is freed before the next loads
            self._upscaler = Upscaler.from_pretrained(
                model, revision=revision, dtype=self.dtype, device=self.pipeline._execution_device,
                cpu_offload=self.cpu_offload,
            )  # fmt: skip
        return self._upscaler

    def upscale(
        self, images, prompt: str | list[str] | None = None, *, upscaler_model: str = DEFAULT_UPSCALER, **kwargs
    ) -> Text2ImageOutput:
        r"""
        Upscale `images` 4x under `prompt` with the upscaler `upscaler_model` (loaded on first use).

        `images` may be any images (PIL or paths, sides of 8 to 512 px) or the `images` of a [`Text2ImageOutput`],
        passed with its `metadata=`: the upscaled images then keep their metadata, and by default their own prompts,
        negative prompts and seeds. The other arguments
        (`negative_prompt`, `noise_level`, `num_inference_steps`, `guidance_scale`, `seed`, `metadata`, `progress`)
        are those of [`Upscaler.__call__`].

        Example:

        ```py
        >>> output = t2i.generate("a cat wearing a hat", height=128, width=128, seed=0)
        >>> big = t2i.upscale(output.images, metadata=output.metadata, noise_level=20)
        >>> big.images[0].size
        (512, 512)
        ```
        """
        return self.load_upscaler(upscaler_model)(images, prompt, **kwargs)

    def load_clip_scorer(self, model: str = DEFAULT_CLIP_MODEL, *, revision: str | None = None) -> CLIPScorer:
        """The [`CLIPScorer`] `model`, loaded once, on this pipeline's device."""
        if self._clip_scorer is None or self._clip_scorer.name not in (model, str(Path(model).expanduser().resolve())):
            self._clip_scorer = None
            self._clip_scorer = CLIPScorer.from_pretrained(
                model, revision=revision, device=self.pipeline._execution_device
            )
        return self._clip_scorer

    def clip_score(self, output: Text2ImageOutput, *, clip_model: str = DEFAULT_CLIP_MODEL) -> list[float]:
        r"""
        Score each image of `output` against its own prompt (max(100 · cos(E_image, E_prompt), 0), see
        `clip_score.py`), record the score and the CLIP model in its metadata, and return the scores.

        Example:

        ```py
        >>> output = t2i.generate(["a cat wearing a hat", "a dog"], seed=0)
        >>> scores = t2i.clip_score(output)  # output.metadata[k].clip_score == scores[k]
        >>> output.save("outputs")  # with clip_score and clip_model in every PNG and sidecar
        ```
        """
        return self.load_clip_scorer(clip_model).score(output)


def check_pipeline(model: str, revision: str | None = None) -> dict[str, Any]:
    """The `model_index.json` of a text-to-image `model`, read without loading a weight (the Hub's, cached when
    offline); `ValueError` or `OSError` saying what could not be read from where."""
    from diffusers import AutoPipelineForText2Image

    check_model_reference(model)
    check_local_model(model)
    try:
        return AutoPipelineForText2Image.load_config(model, revision=revision)
    except OSError as error:
        raise _load_error(model, error) from error


def _load_error(model: str, error: OSError) -> OSError:
    if Path(model).expanduser().exists():
        return OSError(f"Cannot load the local folder {model!r}: {error}")
    hint = "check the id, the revision and the network"
    return OSError(f"Cannot load {model!r} from the Hub ({hint}): {error}")


def _load_pipeline(model: str, revision: str | None, variant: str | None, dtype: torch.dtype, no_safety_checker: bool):
    """`AutoPipelineForText2Image.from_pretrained`, with errors that say what could not be loaded from where."""
    from diffusers import AutoPipelineForText2Image

    try:
        index = AutoPipelineForText2Image.load_config(model, revision=revision)
        load_kwargs: dict[str, Any] = {"revision": revision, "variant": variant, "dtype": dtype, **weights_kwargs()}
        if no_safety_checker and (index.get("safety_checker") or [None])[0] is not None:
            load_kwargs.update(safety_checker=None, requires_safety_checker=False)
        return AutoPipelineForText2Image.from_pretrained(model, **load_kwargs)
    except OSError as error:
        raise _load_error(model, error) from error
    except ValueError as error:
        raise ValueError(f"Cannot load model {model!r} as a text-to-image pipeline: {error}") from error
