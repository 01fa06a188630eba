"""The `text2img.py` command line: five typed configs, parsed and validated (`GenerationInputs.check`, the one
input check) before anything loads."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..arguments import one_line, parse_config
from ..devices import resolve_device
from ..files import WriteError
from ..pipeline_steps import SAMPLERS
from .clip_score import DEFAULT_CLIP_MODEL, check_clip_model
from .inputs import DEFAULT_MODEL, GenerationInputs, check_model_reference, read_prompts_file, resolve_dtype
from .metadata import ImageMetadata
from .text2image import Text2Image
from .upscale import DEFAULT_UPSCALER, UpscaleSettings, check_upscale_size

logger = logging.getLogger("ddpm_hub.text2img")

# `Literal` over the shared sampler table, so `--scheduler` lists exactly the names the rest of ddpm-hub accepts.
SchedulerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]


@dataclass
class GenerationConfig:
    """What to generate."""

    prompt: list[str] = field(
        default_factory=list,
        metadata={
            "action": "extend",
            "help": 'Prompt(s); repeatable (--prompt "a cat" --prompt "a dog"). Quote prompts that contain spaces.',
        },
    )
    prompts_file: str | None = field(
        default=None,
        metadata={"help": "Text file with one prompt per line (blank lines are skipped); added after any --prompt."},
    )
    negative_prompt: str | None = field(default=None, metadata={"help": "What the images should not show."})
    num_inference_steps: int = field(default=50, metadata={"help": "Denoising steps."})
    guidance_scale: float = field(default=7.5, metadata={"help": "Classifier-free guidance weight; <= 1 is off."})
    height: int | None = field(default=None, metadata={"help": "Image height, a multiple of 8; model's default."})
    width: int | None = field(default=None, metadata={"help": "Image width, a multiple of 8; model's default."})
    num_images_per_prompt: int = field(default=1, metadata={"help": "Images per prompt."})
    seed: int | None = field(
        default=None, metadata={"help": "Image k of the run gets seed + k (random when not given)."}
    )
    init_image: str | None = field(
        default=None,
        metadata={
            "help": "Image to start from (image to image): it is noised to --strength and redrawn under "
            "the prompt. The output has its size (rounded down to multiples of 8) unless --height "
            "and --width are given."
        },
    )
    strength: float | None = field(
        default=None,
        metadata={
            "help": "With --init_image: how much to redraw, in (0, 1]; 1 starts from pure noise. Defaults "
            "to diffusers' default (SD: 0.8, or 1.0 with --mask_image; SDXL: 0.3, or 0.9999)."
        },
    )
    mask_image: str | None = field(
        default=None,
        metadata={
            "help": "With --init_image: inpaint, redrawing where this mask is white and keeping where it is "
            "black. Same size as the init image."
        },
    )
    from_metadata: str | None = field(
        default=None,
        metadata={
            "help": "Regenerate the image described by this .json sidecar (or .png); takes its prompt, "
            "settings, model, scheduler and dtype, so those flags cannot be given with it. An init "
            "image and mask must still be at their recorded paths, unchanged."
        },
    )

    def prompts(self) -> list[str]:
        """The prompts of `--prompt`, then those of `--prompts_file`."""
        prompts = list(self.prompt)
        if self.prompts_file is not None:
            prompts += read_prompts_file(self.prompts_file)
        return prompts

    def inputs(self) -> GenerationInputs:
        """The flags as the inputs of `Text2Image.generate` (`--init_image` is its `image`)."""
        return GenerationInputs.of({**vars(self), "prompt": self.prompts(), "image": self.init_image})

    def generate_kwargs(self) -> dict[str, Any]:
        return self.inputs().kwargs()

    def validate(self) -> None:
        if self.from_metadata is not None:
            settings = [f.name for f in dataclasses.fields(self) if f.name != "from_metadata"]
            given = _non_default_flags(self, only=settings)
            if given:
                raise ValueError(f"--from_metadata takes the prompt and settings from the file; drop {given}.")
            ImageMetadata.load(self.from_metadata).generate_kwargs()  # also checks an init image and mask
            return
        self.inputs().check()


@dataclass
class ModelConfig:
    """Which model to load, and how to run it."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Hub id (org/name) or local pipeline folder."})
    revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub model."})
    variant: str | None = field(default=None, metadata={"help": "Weights variant, e.g. fp16."})
    scheduler: SchedulerName | None = field(  # type: ignore[valid-type]
        default=None, metadata={"help": "Sampler to swap in (from_config); defaults to the model's own."}
    )
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = field(
        default="auto", metadata={"help": "auto: fp16 on CUDA, fp32 elsewhere. fp16 is refused on the CPU."}
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps."})
    attention_slicing: bool = field(default=False, metadata={"help": "Sliced attention: less memory, slower."})
    cpu_offload: bool = field(default=False, metadata={"help": "Model CPU offload (needs CUDA)."})
    vae_slicing: bool = field(default=False, metadata={"help": "Decode a batch one image at a time."})
    vae_tiling: bool = field(default=False, metadata={"help": "Decode large images tile by tile."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the UNet."})
    disable_safety_checker: bool = field(
        default=False, metadata={"help": "Load without the model's safety checker (on by default where it exists)."}
    )

    def validate(self) -> None:
        check_model_reference(self.model)
        device = resolve_device(self.device)
        resolve_dtype(self.dtype, device)
        if self.cpu_offload and device.type != "cuda":
            raise ValueError(f"--cpu_offload needs a CUDA device, but the device is {device}.")


UPSCALE_FLAGS = ("upscale", "upscaler_model", "noise_level", "upscale_num_inference_steps", "upscale_guidance_scale")
# What `Text2Image.upscale` takes besides the images; the prompts, negative prompts and seeds are in their metadata.
UPSCALE_SETTINGS = ("upscaler_model", "noise_level", "num_inference_steps", "guidance_scale")
UPSCALED_IMAGES = "With --upscale, the images to generate"


@dataclass
class UpscaleConfig:
    """4x upscaling of the generated images (diffusers' StableDiffusionUpscalePipeline)."""

    upscale: bool = field(
        default=False,
        metadata={
            "help": "Upscale every image 4x with --upscaler_model, under its own prompt, negative prompt and seed; "
            "generated sides must be at most 512 px (the x4 upscaler was trained on 128 px inputs)."
        },
    )
    upscaler_model: str = field(
        default=DEFAULT_UPSCALER, metadata={"help": "Hub id or folder of a StableDiffusionUpscalePipeline."}
    )
    noise_level: int | None = field(
        default=None,
        metadata={
            "help": "Noise added to the image before upscaling, 0 to the upscaler's max_noise_level (350): more "
            "invents more detail (diffusers' default: 20)."
        },
    )
    upscale_num_inference_steps: int | None = field(
        default=None, metadata={"help": "The upscaler's denoising steps (diffusers' default: 75)."}
    )
    upscale_guidance_scale: float | None = field(
        default=None, metadata={"help": "The upscaler's classifier-free guidance weight (diffusers' default: 9.0)."}
    )

    def upscale_kwargs(self) -> dict[str, Any] | None:
        """The upscaler and its settings (the arguments of `Text2Image.upscale`), `None` without --upscale."""
        if not self.upscale:
            return None
        return {"upscaler_model": self.upscaler_model, "noise_level": self.noise_level,
                "num_inference_steps": self.upscale_num_inference_steps,
                "guidance_scale": self.upscale_guidance_scale}  # fmt: skip

    def validate(self) -> None:
        if not self.upscale:
            given = _non_default_flags(self, only=UPSCALE_FLAGS)
            if given:
                raise ValueError(f"Without --upscale nothing is upscaled, so {given} cannot apply; add --upscale.")
            return
        check_model_reference(self.upscaler_model)
        UpscaleSettings(self.noise_level, self.upscale_num_inference_steps, self.upscale_guidance_scale).check()


@dataclass
class ScoreConfig:
    """How well the images follow their prompts."""

    clip_score: bool = field(
        default=False,
        metadata={
            "help": "Score each image against its prompt, max(100 cos(E_image, E_prompt), 0) with --clip_model; "
            "written into its metadata (clip_score) and the mean printed last."
        },
    )
    clip_model: str = field(
        default=DEFAULT_CLIP_MODEL, metadata={"help": "CLIP model for --clip_score (Hub id or local folder)."}
    )

    def validate(self) -> None:
        if not self.clip_score and self.clip_model != DEFAULT_CLIP_MODEL:
            raise ValueError("--clip_model only applies with --clip_score.")


@dataclass
class OutputConfig:
    """Where the images go."""

    output_dir: str = field(default="outputs", metadata={"help": "Folder for the PNGs and their JSON sidecars."})
    grid: bool = field(default=False, metadata={"help": "Also save one grid image per prompt."})

    def validate(self) -> None:
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ValueError(f"--output_dir {self.output_dir!r} exists and is not a folder.")


def _non_default_flags(config, only: Sequence[str]) -> str:
    """Those of the `--flags` named in `only` whose values in `config` differ from their defaults ("" if none)."""
    changed = []
    for f in dataclasses.fields(config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in only and getattr(config, f.name) != default:
            changed.append(f"--{f.name}")
    return ", ".join(changed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `text2img.py` command line; returns the exit status (2 for bad input)."""
    prog = "text2img.py"
    generation, model_config, upscaling, scoring, output = parse_config(
        (GenerationConfig, ModelConfig, UpscaleConfig, ScoreConfig, OutputConfig),
        argv,
        prog=prog,
        description="Generate images from text prompts with a Stable Diffusion (1.x, 2.x, SDXL) pipeline, from text "
        "alone, from an init image (--init_image --strength) or inside a mask (--mask_image); then, if asked, "
        "upscale them 4x (--upscale) and score how well they follow their prompts (--clip_score).",
    )
    try:
        text2image, generate_kwargs, upscale_kwargs = _load(generation, model_config, upscaling, scoring)
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2

    result = text2image.generate(**generate_kwargs)
    if upscale_kwargs is not None:
        upscaled = text2image.upscale(result.images, metadata=result.metadata, **upscale_kwargs)
        result = dataclasses.replace(upscaled, num_images_per_prompt=result.num_images_per_prompt)
    scores = text2image.clip_score(result, clip_model=scoring.clip_model) if scoring.clip_score else None
    try:
        paths = result.save(output.output_dir, grid=output.grid)
    except WriteError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    if scores is not None:
        print(f"CLIP score {statistics.fmean(scores):.4f} (mean of {len(scores)} images; {scoring.clip_model})")
    flagged = [meta.index for meta in result.metadata if meta.nsfw_content_detected]
    if flagged:
        logger.warning("The safety checker blacked out image(s) %s.", ", ".join(map(str, flagged)))
    return 0


def _load(generation: GenerationConfig, model_config: ModelConfig, upscaling: UpscaleConfig, scoring: ScoreConfig):
    """(`Text2Image`, `generate` kwargs, `upscale` kwargs or `None`), every model loaded and every input checked;
    `ValueError` or `OSError` (exit status 2) otherwise. Checks that need no model come first."""
    model_kwargs = dataclasses.asdict(model_config)
    if scoring.clip_score:
        check_clip_model(scoring.clip_model)  # its config only
    if generation.from_metadata is not None:
        # The sidecar fixes what shapes the pixels; how to run (device, memory options) stays the user's.
        given = _non_default_flags(model_config, only=("model", "revision", "variant", "scheduler", "dtype"))
        given = ", ".join(filter(None, [given, _non_default_flags(upscaling, only=UPSCALE_FLAGS)]))
        if given:
            raise ValueError(f"--from_metadata takes the model, scheduler, dtype and upscaling from the file; drop "
                             f"{given}.")  # fmt: skip
        metadata = ImageMetadata.load(generation.from_metadata)
        model_kwargs.update(metadata.from_pretrained_kwargs())
        generate_kwargs, upscale_kwargs = metadata.generate_kwargs(), metadata.upscale_kwargs()
    else:
        generate_kwargs, upscale_kwargs = generation.generate_kwargs(), upscaling.upscale_kwargs()
    if upscale_kwargs is not None:  # the sizes given, before any model loads
        check_upscale_size(generate_kwargs["height"], generate_kwargs["width"], what=UPSCALED_IMAGES)
    text2image = Text2Image.from_pretrained(**model_kwargs)
    text2image.check_inputs(**generate_kwargs)
    if upscale_kwargs is not None:
        check_upscale_size(*text2image.image_size(**generate_kwargs), what=UPSCALED_IMAGES)
        upscaler = text2image.load_upscaler(upscale_kwargs["upscaler_model"])
        upscaler.settings(upscale_kwargs["noise_level"], upscale_kwargs["num_inference_steps"],
                          upscale_kwargs["guidance_scale"])  # fmt: skip
        upscale_kwargs = {key: upscale_kwargs[key] for key in UPSCALE_SETTINGS}
    if scoring.clip_score:
        text2image.load_clip_scorer(scoring.clip_model)
    return text2image, generate_kwargs, upscale_kwargs
