"""The `text2img.py` command line: three typed configs, parsed and validated (`GenerationInputs.check`, the one
input check) before anything loads."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..arguments import one_line, parse_config
from ..devices import resolve_device
from ..files import WriteError
from ..pipeline_steps import SAMPLERS
from .inputs import DEFAULT_MODEL, GenerationInputs, check_model_reference, resolve_dtype
from .metadata import ImageMetadata
from .text2image import Text2Image

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
            path = Path(self.prompts_file)
            if not path.is_file():
                raise ValueError(f"Prompts file {self.prompts_file!r} does not exist.")
            lines = path.read_text(encoding="utf-8").splitlines()
            from_file = [line.strip() for line in lines if line.strip()]
            if not from_file:
                raise ValueError(f"Prompts file {self.prompts_file!r} holds no prompt.")
            prompts += from_file
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
    generation, model_config, output = parse_config(
        (GenerationConfig, ModelConfig, OutputConfig),
        argv,
        prog=prog,
        description="Generate images from text prompts with a Stable Diffusion (1.x, 2.x, SDXL) pipeline, from text "
        "alone, from an init image (--init_image --strength) or inside a mask (--mask_image).",
    )
    model_kwargs = dataclasses.asdict(model_config)
    try:
        if generation.from_metadata is not None:
            # The sidecar fixes what shapes the pixels; how to run (device, memory options) stays the user's.
            given = _non_default_flags(model_config, only=("model", "revision", "variant", "scheduler", "dtype"))
            if given:
                raise ValueError(f"--from_metadata takes the model, scheduler and dtype from the file; drop {given}.")
            metadata = ImageMetadata.load(generation.from_metadata)
            model_kwargs.update(metadata.from_pretrained_kwargs())
            generate_kwargs = metadata.generate_kwargs()
        else:
            generate_kwargs = generation.generate_kwargs()
        text2image = Text2Image.from_pretrained(**model_kwargs)
        text2image.check_inputs(**generate_kwargs)
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2

    result = text2image.generate(**generate_kwargs)
    try:
        paths = result.save(output.output_dir, grid=output.grid)
    except WriteError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    flagged = [meta.index for meta in result.metadata if meta.nsfw_content_detected]
    if flagged:
        logger.warning("The safety checker blacked out image(s) %s.", ", ".join(map(str, flagged)))
    return 0
