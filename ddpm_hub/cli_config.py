"""The typed configs of the `ddpm-hub` subcommands, parsed by `ddpm_hub.arguments.parse_config` like training's.

One dataclass per subcommand (eval takes two: what to score, `EvalTarget`, and how, the `EvalConfig` that training's
`--eval_*` flags share). A field with `metadata={"positional": True}` is a positional argument; `nargs`, `action`
and `metavar` in its metadata pass through to argparse. Each `validate()` raises a one-line `ValueError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .choices import COMPILE_MODES, SAMPLERS
from .config import EvalConfig, _one_of

__all__ = ["EvalConfig", "EvalTarget", "ExploreConfig", "PushConfig", "SampleConfig", "SchedulesConfig"]


@dataclass
class PushConfig:
    """`ddpm-hub push OUTPUT_DIR --repo_id org/name`: push a training output folder (or saved pipeline) to the Hub."""

    output_dir: str = field(
        metadata={"positional": True, "help": "Folder holding model_index.json, unet/ and scheduler/."}
    )
    repo_id: str = field(metadata={"help": "Target repo, 'name' or 'org/name'."})
    private: bool = field(default=False, metadata={"action": "store_true", "help": "Create the repo private."})
    revision: str | None = field(default=None, metadata={"help": "Push to this branch (created if missing)."})
    commit_message: str = field(default="Upload DDPM pipeline with ddpm-hub", metadata={"help": "The commit message."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the saved login)."})


@dataclass
class SampleConfig:
    """`ddpm-hub sample MODEL`: load a pipeline (Hub id or folder) and save a grid of samples, or an edit."""

    model: str = field(metadata={"positional": True, "help": "Hub repo id or local pipeline folder."})
    revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub repo."})
    output: str = field(default="samples.png", metadata={"help": "Where to write the grid (PNG)."})
    sampler: str = field(default="ddim", metadata={"help": f"Sampler: {', '.join(SAMPLERS)}."})
    num_inference_steps: int | None = field(
        default=None,
        metadata={
            "help": "Sampling steps (default: the model's own count if it records one, as a distilled student does, "
            "else 50; inpainting: 50)."
        },
    )
    num_images: int = field(default=16, metadata={"help": "Images in the grid."})
    seed: int = field(default=0, metadata={"help": "Image i uses seed + i."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps..."})
    class_label: list[str] | None = field(
        default=None,
        metadata={
            "action": "append",
            "nargs": None,
            "help": "Class-conditional models: a class name or id, one grid row each; repeat it or give a "
            "comma-separated list (default: every class, up to 16).",
        },
    )
    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": "Classifier-free guidance scale for conditional models: 1 = conditional only, 0 = unconditional "
            "(default: 3)."
        },
    )
    compile: bool = field(
        default=False, metadata={"action": "store_true", "help": "torch.compile the UNet (CUDA graphs on CUDA)."}
    )
    compile_mode: str | None = field(
        default=None,
        metadata={"help": f"torch.compile mode: {', '.join(COMPILE_MODES)}. Default: reduce-overhead on CUDA."},
    )
    compile_backend: str = field(
        default="inductor", metadata={"help": "torch.compile backend (aot_eager: no codegen)."}
    )
    init_image: str | None = field(
        default=None, metadata={"help": "Image to image (SDEdit) from this image, with --sampler."}
    )
    strength: float | None = field(
        default=None, metadata={"help": "With --init_image: noise to add, 0 to 1 (default 0.8)."}
    )
    mask_image: str | None = field(
        default=None,
        metadata={
            "help": "With --init_image: inpaint the white region of this mask (RePaint, own steps, not --sampler)."
        },
    )
    jump_length: int = field(default=10, metadata={"help": "RePaint: levels per resampling jump."})
    jump_n_sample: int = field(default=10, metadata={"help": "RePaint: times each stretch is denoised."})
    interpolate: list[str] | None = field(
        default=None,
        metadata={
            "nargs": 2,
            "metavar": ("A", "B"),
            "help": "Two image paths or two seeds (integers): a strip of frames from A to B (DDIM inversion + slerp).",
        },
    )
    num_frames: int = field(default=8, metadata={"help": "With --interpolate: frames, both ends included."})
    # --- classifier guidance, and one file per image ---
    classifier: str | None = field(
        default=None,
        metadata={
            "help": "A noise-aware classifier (folder or Hub id, from ddpm-hub train-classifier) that steers each row "
            "towards its --class_label, which names the classifier's classes (default: every class, up to 16)."
        },
    )
    classifier_scale: float | None = field(
        default=None,
        metadata={"help": "With --classifier: the guidance scale s >= 0 on grad log p(y|x_t) (default 1; 0: none)."},
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Also save every image as its own PNG here, named by its seed (and class): cat-seed-3.png."},
    )
    # --- super-resolution and cascades ---
    upscaler: list[str] | None = field(
        default=None,
        metadata={
            "action": "append",
            "nargs": None,
            "metavar": "SR",
            "help": "A super-resolution model (Hub id or folder) that upscales MODEL's images; repeat it for a "
            "cascade, each taking the previous stage's resolution. The grid holds the last stage's images.",
        },
    )
    low_res_image: str | None = field(
        default=None,
        metadata={"help": "A super-resolution MODEL: the image to upscale (at its low resolution), num_images times."},
    )
    noise_level: int = field(
        default=0,
        metadata={
            "help": "Super-resolution: the conditioning-augmentation level given to every upscaler, 0 (the input as "
            "it is) to the model's low_res_noise_max."
        },
    )

    def validate(self) -> None:
        for name in ("num_inference_steps", "num_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        if self.noise_level < 0:
            raise ValueError(f"--noise_level must be 0 or more, got {self.noise_level}.")
        _one_of("sampler", self.sampler, SAMPLERS)
        _one_of("compile_mode", self.compile_mode, COMPILE_MODES)
        self.class_labels()
        if self.classifier_scale is not None:
            if self.classifier is None:
                raise ValueError(f"--classifier_scale ({self.classifier_scale}) needs --classifier, the classifier "
                                 "that guides.")  # fmt: skip
            if not math.isfinite(self.classifier_scale) or self.classifier_scale < 0:
                raise ValueError(f"--classifier_scale must be a finite number >= 0, got {self.classifier_scale}.")

    def class_labels(self) -> list[str] | None:
        """`--class_label cat,dog --class_label 3` -> ["cat", "dog", "3"]; the pipeline reads names, digits as ids."""
        if not self.class_label:
            return None
        labels = [label.strip() for value in self.class_label for label in value.split(",")]
        if any(not label for label in labels):
            raise ValueError(f"--class_label got an empty name in {self.class_label}.")
        return labels


@dataclass
class SchedulesConfig:
    """`ddpm-hub schedules`: plot alpha_bar(t) and SNR(t) of noise schedules (PNG)."""

    output: str = field(default="schedules.png", metadata={"help": "Where to write the plot (PNG)."})
    schedules: list[str] = field(
        default_factory=lambda: ["linear", "cosine", "quadratic", "sigmoid"], metadata={"help": "Schedules to plot."}
    )
    num_train_timesteps: int = field(default=1000, metadata={"help": "Timesteps T of each schedule."})


@dataclass
class EvalTarget:
    """`ddpm-hub eval MODEL --reference DATA`: what to score, against what, and where the result goes."""

    model: str = field(
        metadata={"positional": True, "help": "Pipeline folder, Hub repo id, or a folder of already generated images."}
    )
    reference: str = field(
        metadata={
            "help": "A folder of images, a built-in set (twemoji, shapes), a Hub/saved data set, or WebDataset shards "
            "(a pattern, folder or URL as for --train_shards: its first --max_reference_images, default 10000, images)."
        }
    )
    reference_config: str | None = field(
        default=None, metadata={"help": "The reference data set's config, if it has several."}
    )
    image_column: str | None = field(default=None, metadata={"help": "The reference data set's image column."})
    max_reference_images: int | None = field(default=None, metadata={"help": "Use a seeded subset of the reference."})
    resolution: int | None = field(
        default=None, metadata={"help": "For a folder of images: crop size (default: the first image's)."}
    )
    revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub repo."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where reference statistics are cached (default ~/.cache/ddpm_hub)."}
    )
    save_images: str | None = field(default=None, metadata={"help": "Also save the generated images as PNGs here."})
    output: str = field(default="eval_results.json", metadata={"help": "Where to write the results (JSON)."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps..."})
    # --- super-resolution ---
    noise_level: int = field(
        default=0,
        metadata={
            "help": "A super-resolution MODEL: the conditioning-augmentation level of its inputs (the first "
            "--num_samples reference images, downsampled), 0 to its low_res_noise_max."
        },
    )


@dataclass
class ExploreConfig:
    """`ddpm-hub explore [MODEL]`: open the interactive explorer (a Gradio app; needs the [app] extra)."""

    model: str | None = field(
        default=None,
        metadata={
            "positional": True,
            "help": "Pipeline folder or Hub id (default: the newest training output in the current folder, if any).",
        },
    )
    host: str = field(
        default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0 exposes it to the network)."}
    )
    port: int | None = field(default=None, metadata={"help": "Port (default: the first free one from 7860)."})
    share: bool = field(
        default=False,
        metadata={"action": "store_true", "help": "Also open a public gradio.live link (off by default)."},
    )
    outputs_dir: str = field(default="outputs", metadata={"help": "Where the Text to image panel saves images."})
    allow: list[str] = field(
        default_factory=list,
        metadata={
            "action": "append",
            "nargs": None,
            "metavar": "NAME",
            "help": "Beyond 127.0.0.1, a further model, run folder or Hub id visitors may open (repeatable).",
        },
    )
    data: str | None = field(
        default=None,
        metadata={
            "metavar": "SHARDS",
            "help": "A streamed data set (WebDataset shards: a pattern, folder or URL, as for --train_shards) whose "
            "first images the Forward process panel offers.",
        },
    )

    def validate(self) -> None:
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {self.port}.")
