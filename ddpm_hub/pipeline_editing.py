# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Editing with a trained DDPM: SDEdit, RePaint, DDIM inversion and interpolation, as a mixin of `DDPMHubPipeline`.

Shipped beside the weights with `pipeline.py` (torch, numpy, PIL and diffusers only). The methods run on the
pipeline's own denoising loop and UNet call (`_denoise`, `_model_output`); on a latent model (a pipeline with a
`vae`) the images are encoded first and the results decoded, so every method works in pixels or latents alike.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_parameterization import ddim_update, predicted_eps, predicted_x0, split_prediction
from .pipeline_steps import repaint_levels, slerp


def _image_size(image) -> tuple[int, int] | None:
    """(height, width) of a PIL image, HWC/NHWC array or CHW/NCHW tensor (the first of a list); None if not an image."""
    if isinstance(image, (list, tuple)) and image:
        image = image[0]
    if isinstance(image, PIL.Image.Image):
        return image.size[1], image.size[0]
    if isinstance(image, np.ndarray) and image.ndim in (2, 3, 4):
        return tuple(image.shape[:2]) if image.ndim in (2, 3) else tuple(image.shape[1:3])
    if isinstance(image, torch.Tensor) and image.ndim in (2, 3, 4):
        return tuple(image.shape[-2:])
    return None


def _label_count(class_labels) -> int:
    """How many labels a `class_labels` argument holds (1 for a single id or name, 0 for None)."""
    if class_labels is None:
        return 0
    if isinstance(class_labels, torch.Tensor):
        return class_labels.numel()
    return len(class_labels) if isinstance(class_labels, (list, tuple)) else 1


def _mask_tensor(item) -> torch.Tensor:
    """One mask (PIL, array HxW(x1) or tensor (1x)HxW, or a batch of them) as a float tensor (N, H, W) in [0, 1]."""
    if isinstance(item, PIL.Image.Image):
        return torch.from_numpy(np.asarray(item.convert("L"), dtype=np.float32) / 255.0)[None]
    if not isinstance(item, (np.ndarray, torch.Tensor)):
        raise ValueError(
            f"`mask_image` must be a single-channel PIL image, numpy array or torch tensor (white = fill), "
            f"got {type(item).__name__}."
        )
    channels_last = isinstance(item, np.ndarray)  # arrays are HxW(x1), tensors (1x)HxW, as for images
    mask = torch.from_numpy(np.array(item)) if channels_last else item.detach().cpu()
    mask = mask.float() / 255.0 if mask.dtype == torch.uint8 else mask.float()
    shape = tuple(mask.shape)
    if mask.ndim == 2:
        return mask[None]
    if mask.ndim == 3 and channels_last and shape[-1] == 1:
        return mask[..., 0][None]
    if mask.ndim == 3 and not channels_last and shape[0] == 1:
        return mask
    if mask.ndim == 4 and channels_last and shape[-1] == 1:
        return mask[..., 0]
    if mask.ndim == 4 and not channels_last and shape[1] == 1:
        return mask[:, 0]
    raise ValueError(
        f"`mask_image` must have one channel (arrays HxW or HxWx1, tensors HxW or 1xHxW), got shape {shape}."
    )


@dataclass
class DDPMHubInversionOutput(BaseOutput):
    """Output of [`DDPMHubPipeline.invert`].

    Args:
        latents (`torch.Tensor`):
            The starting noise x_T, of shape `(batch_size, channels, height, width)` (the model's sample shape: VAE
            latents for a latent model), that deterministic DDIM with the same `num_inference_steps` turns back into
            the images; pass it as `latents` to the pipeline.
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            x_T shown as images (decoded by the VAE of a latent model), in the format given by `output_type`.
    """

    latents: torch.Tensor
    images: list | np.ndarray | torch.Tensor


class DDPMHubEditingMixin:
    """img2img (SDEdit), inpaint (RePaint), invert (DDIM inversion) and interpolate for `DDPMHubPipeline`."""

    def _prepare_images(self, image, name: str = "image", size: tuple[int, int] | None = None) -> torch.Tensor:
        """Images (PIL, array or tensor in [0, 1], or a list) as a float32 batch in [-1, 1] at the image size (or at
        `size`, (height, width))."""
        items = image if isinstance(image, (list, tuple)) else [image]
        if (
            not items
            or _image_size(image) is None
            or not all(isinstance(item, (PIL.Image.Image, np.ndarray, torch.Tensor)) for item in items)
        ):
            shape = f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else ""
            raise ValueError(
                f"`{name}` must be a PIL image, a numpy array (HxWxC) or a torch tensor (CxHxW) in [0, 1], or a list "
                f"of them; got {type(image).__name__}{shape}."
            )
        channels, height, width = self.image_shape
        height, width = size or (height, width)
        try:
            images = self.image_processor.preprocess(image, height=height, width=width).float()
        except (ValueError, TypeError) as error:
            raise ValueError(f"`{name}` could not be read as an image: {' '.join(str(error).split())}") from None
        if images.shape[1] != channels or not torch.isfinite(images).all():
            raise ValueError(
                f"`{name}` must be finite images with {channels} channel(s), got shape {tuple(images.shape)}."
            )
        return images

    def _prepare_model_input(self, image, name: str = "image") -> torch.Tensor:
        """Images as the model's clean samples x_0 on the execution device: pixels, or scaled VAE latents."""
        return self.encode_images(self._prepare_images(image, name).to(self._execution_device))

    def _prepare_labels(self, clean: torch.Tensor, class_labels, guidance_scale):
        """(clean, label ids, guidance scale) for editing; one image given with several labels is redrawn for each."""
        count = _label_count(class_labels)
        if clean.shape[0] == 1 and count > 1:
            clean = clean.repeat(count, 1, 1, 1)
        labels, scale = self.prepare_class_labels(class_labels, clean.shape[0], guidance_scale, self._execution_device)
        return clean, labels, scale

    def _prepare_mask(self, mask_image, image, batch_size: int) -> torch.Tensor:
        """A binary float mask (batch, 1, h, w) on the model's sample grid: 1 where to fill (white).

        The mask is resized to the image size and made binary there; on a latent model it then goes to the latent
        grid by max pooling, so a latent cell is filled if any of its pixels is white.
        """
        items = mask_image if isinstance(mask_image, (list, tuple)) else [mask_image]
        masks = [_mask_tensor(item) for item in items]
        for mask in masks:
            if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
                raise ValueError("`mask_image` values must lie in [0, 1] (or 0 to 255 for uint8 masks).")
        if len({tuple(mask.shape[-2:]) for mask in masks}) > 1:
            raise ValueError("All masks in `mask_image` must have the same size.")
        mask = torch.cat(masks)
        image_size, mask_size = _image_size(image), tuple(mask.shape[-2:])
        if image_size is not None and mask_size != image_size:
            raise ValueError(
                f"`mask_image` is {mask_size[1]}x{mask_size[0]} but `image` is {image_size[1]}x{image_size[0]}; "
                "they must be the same size."
            )
        if mask.shape[0] not in (1, batch_size):
            raise ValueError(f"Got {mask.shape[0]} masks for {batch_size} images; pass one, or one per image.")
        _, height, width = self.image_shape
        mask = torch.nn.functional.interpolate(mask[:, None], size=(height, width), mode="bilinear", antialias=True)
        mask = (mask > 0.5).float().expand(batch_size, -1, -1, -1)
        if (mask.flatten(1).sum(1) == 0).any():
            raise ValueError(
                f"`mask_image` has no white pixel at the model's {width}x{height} resolution: nothing to inpaint "
                "(white marks the region to fill, black the region to keep)."
            )
        if self.vae_scale_factor > 1:
            mask = torch.nn.functional.max_pool2d(mask, self.vae_scale_factor)
        return mask

    @contextlib.contextmanager
    def _using_scheduler(self, scheduler: SchedulerMixin):
        """Run a block with `scheduler` in place of the user's sampler, and put the sampler back afterwards."""
        original = self.scheduler
        self.scheduler = scheduler
        try:
            yield scheduler
        finally:
            self.scheduler = original

    def _deterministic_ddim(self) -> DDIMScheduler:
        """DDIM on the training schedule, without x_0 clipping, which would make it non-invertible."""
        # Other samplers' default "linspace" spacing becomes "leading", the spacing of the training DDPMScheduler.
        spacing = self.scheduler.config.get("timestep_spacing", "leading")
        spacing = spacing if spacing in ("leading", "trailing") else "leading"
        # Only the keys DDIM knows: the other samplers' own settings (solver order, Karras sigmas...) do not apply.
        known = inspect.signature(DDIMScheduler.__init__).parameters
        config = {key: value for key, value in self.scheduler.config.items() if key in known}
        return DDIMScheduler.from_config(config, clip_sample=False, thresholding=False, timestep_spacing=spacing)

    @torch.no_grad()
    def img2img(
        self,
        image,
        strength: float = 0.8,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels=None,
        guidance_scale: float | None = None,
    ):
        r"""
        Image to image: noise the images part of the way and denoise them with the current sampler (SDEdit, Meng et
        al. 2021, Sec. 3, "perturb with SDE, then reverse").

        The sampler's `num_inference_steps` timesteps are set as usual and the last `int(num_inference_steps *
        strength)` of them are run, from the images noised to the first of those by the sampler's own `add_noise`
        (as diffusers' `StableDiffusionImg2ImgPipeline`). Low strength keeps the layout and colours; high strength
        keeps less and less. A latent model encodes the images with its VAE (the posterior mean) and decodes the
        result.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images to edit; arrays and tensors in [0, 1]; resized to the model's image size.
            strength (`float`, *optional*, defaults to 0.8):
                In [0, 1]: how much noise to add. 0 returns the images unchanged (resized; a latent model returns
                their VAE round trip); 1 ignores them and starts from pure noise, exactly as `__call__` with the same
                `generator` does.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Draws the noise (and the noise of stochastic samplers); one per image to make each reproducible alone.
            num_inference_steps (`int`, *optional*):
                The sampler's number of steps for a full generation (default: as `__call__`); `strength` of them run.
            eta (`float`, *optional*, defaults to 0.0):
                The DDIM eta, for samplers that take it.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"` or `"latent"`, as in `__call__`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.
            class_labels, guidance_scale (*optional*):
                For a class-conditional model, as in `__call__`: redraw the images towards these classes. One image
                with several labels is redrawn once for each.

        Example:

        ```py
        >>> import PIL.Image
        >>> import torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm").set_sampler("ddim")
        >>> sketch = PIL.Image.open("sketch.png")
        >>> generator = torch.Generator().manual_seed(0)
        >>> images = pipe.img2img(sketch, strength=0.6, num_inference_steps=50, generator=generator).images
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the edited images.
        """
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ValueError(f"`strength` must be a number in [0, 1], got {strength!r}.")
        num_inference_steps = self.resolve_num_inference_steps(num_inference_steps)
        clean, labels, scale = self._prepare_labels(self._prepare_model_input(image), class_labels, guidance_scale)
        self.check_inputs(clean.shape[0], num_inference_steps, output_type, None, generator, 1)
        # SDEdit runs the last `strength` fraction of the steps (diffusers' img2img `get_timesteps`).
        num_denoising_steps = int(num_inference_steps * strength)
        if strength > 0 and num_denoising_steps == 0:
            raise ValueError(
                f"`strength` {strength} of {num_inference_steps} steps runs no step; "
                "raise `strength` or `num_inference_steps`."
            )
        if num_denoising_steps == 0:
            return self._editing_output(self.postprocess(clean, output_type), return_dict)

        # 1. Set the timesteps, and start at the first one that SDEdit runs.
        noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=clean.device)
        t_start = (num_inference_steps - num_denoising_steps) * self.scheduler.order
        timesteps = self.scheduler.timesteps[t_start:]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start)

        # 2. Noise the images to that step, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4, or
        # the sampler's sigma-space equivalent). Strength 1 starts from pure noise, like `__call__`.
        if num_denoising_steps == num_inference_steps:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(clean, noise, timesteps[:1].repeat(clean.shape[0]))

        # 3. Denoise from there with the sampler's own loop.
        steps = self._steps(generator, eta)
        latents = self._denoise(
            latents, timesteps, steps, start_index=t_start, class_labels=labels, guidance_scale=scale
        )[0]
        return self._editing_output(self.postprocess(latents, output_type), return_dict)

    @torch.no_grad()
    def inpaint(
        self,
        image,
        mask_image,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 250,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        eta: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels=None,
        guidance_scale: float | None = None,
    ):
        r"""
        Fill the white region of `mask_image` consistently with the rest of the image (RePaint, Lugmayr et al. 2022).

        At every step the kept region is the input noised to the current level and the filled region is the model's
        reverse step (Algorithm 1); resampling jumps (Sec. 4.2) go back up `jump_length` levels and down again
        `jump_n_sample - 1` times, so that the fill can agree with the kept region. The model is used as trained
        (noise, v or x_0 prediction, any noise schedule); on a pixel model the kept region of the result is the
        input, exactly. RePaint needs its own reverse steps, so the pipeline's sampler is not used; `eta` picks the
        step.

        On a latent model RePaint runs on the VAE's latent grid: the mask is resized to the image size, made binary,
        then max-pooled onto the latent grid (a latent cell is filled if any of its f x f pixels is white, f the VAE's
        downsampling factor), so the filled region grows by up to f - 1 pixels at its edges. The kept latents end
        exactly as the encoded input, so the kept pixels are the VAE's round trip of the input up to how far the
        decoder spreads the changed latents: a few pixels beside the fill for its convolutions, and a little
        everywhere through its attention layers (the tests bound it at 0.05 of the [0, 1] range away from the fill
        for a tiny random VAE; expect the round-trip error of the VAE itself on top, relative to the input).

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images to complete; arrays and tensors in [0, 1]; resized to the model's image size.
            mask_image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Single-channel masks of the same size as `image`: **white (1) = fill, black (0) = keep**, as in Stable
                Diffusion inpainting (diffusers' `RePaintPipeline` uses the opposite). One for all images or one each.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Draws all the noise; one per image to make each reproducible alone.
            num_inference_steps (`int`, *optional*, defaults to 250):
                The number of noise levels, spaced as the model's scheduler spaces them (the paper uses 250).
            jump_length (`int`, *optional*, defaults to 10):
                The number of levels of each resampling jump ("j" in the paper).
            jump_n_sample (`int`, *optional*, defaults to 10):
                How many times each stretch is denoised ("r" in the paper); 1 disables resampling. The model is called
                about `num_inference_steps * jump_n_sample` times.
            eta (`float`, *optional*, defaults to 1.0):
                The reverse step of the filled region: 1 samples the DDPM posterior, as in the paper; 0 is the
                deterministic DDIM step (DDIM eq. 12), as diffusers' `RePaintScheduler` defaults to.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"` or `"latent"`, as in `__call__`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.
            class_labels, guidance_scale (*optional*):
                For a class-conditional model, as in `__call__`: the class to paint the fill as.

        Example:

        ```py
        >>> import PIL.Image
        >>> import torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm")
        >>> image, mask = PIL.Image.open("cat.png"), PIL.Image.open("hole.png")  # white where to paint
        >>> images = pipe.inpaint(image, mask, generator=torch.Generator().manual_seed(0)).images
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the completed images.
        """
        clean, labels, scale = self._prepare_labels(self._prepare_model_input(image), class_labels, guidance_scale)
        fill = self._prepare_mask(mask_image, image, clean.shape[0]).to(clean.device)
        self.check_inputs(clean.shape[0], num_inference_steps, output_type, None, generator, 1)
        for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be a number in [0, 1], got {eta!r}.")
        levels = repaint_levels(num_inference_steps, jump_length, jump_n_sample)
        latents = self._repaint(clean, fill, levels, num_inference_steps, generator, eta, labels, scale)
        return self._editing_output(self.postprocess(latents, output_type), return_dict)

    def _repaint(self, clean, fill, levels, num_levels, generator, eta, class_labels, guidance_scale) -> torch.Tensor:
        """RePaint's loop (Lugmayr et al. 2022, Algorithm 1 with the resampling jumps of Sec. 4.2) over `levels`."""
        device, keep = clean.device, 1 - fill
        # Noise level k = 1..N is the training timestep timesteps[k - 1] (the scheduler's own spacing); level 0 is
        # the clean image, alpha_bar = 1.
        schedule = DDPMScheduler.from_config(self.scheduler.config)
        schedule.set_timesteps(num_levels)
        timesteps = schedule.timesteps.flip(0).tolist()
        alphas_cumprod = torch.cat([torch.ones(1), schedule.alphas_cumprod[timesteps].float()]).to(device)
        prediction_type = self.scheduler.config.prediction_type
        config = self.scheduler.config
        clip_range = config.get("clip_sample_range", 1.0) if config.get("clip_sample") else None

        def noise_like() -> torch.Tensor:
            return randn_tensor(clean.shape, generator=generator, device=device, dtype=torch.float32)

        # Algorithm 1, line 1: x_T ~ N(0, I).
        latents, level = noise_like(), num_levels
        for next_level in self.progress_bar(levels):
            alpha_prod_t, alpha_prod_next = alphas_cumprod[level], alphas_cumprod[next_level]
            if next_level > level:
                # Resampling jump (line 10): x_t -> x_t+j by the forward process, q(x_t+j | x_t) in one draw.
                alpha_ratio = alpha_prod_next / alpha_prod_t
                latents = alpha_ratio.sqrt() * latents + (1 - alpha_ratio).sqrt() * noise_like()
                level = next_level
                continue
            # 1. Predict x_0 and the noise from x_t.
            model_output = self._model_output(latents, timesteps[level - 1], class_labels, guidance_scale)
            pred_original, pred_epsilon = split_prediction(model_output, latents, alpha_prod_t, prediction_type)
            if clip_range is not None:  # eps then follows the clipped x_0
                pred_original = pred_original.clamp(-clip_range, clip_range)
                alpha, sigma = alpha_prod_t.sqrt(), (1 - alpha_prod_t).sqrt()
                pred_epsilon = predicted_eps("sample", latents, pred_original, alpha, sigma)
            # 2. Unknown region (line 7): the reverse step x_t -> x_t-1, DDIM eq. 12; eta = 1 is the DDPM posterior.
            variance = (1 - alpha_prod_next) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_next)
            std_dev_t = eta * variance.sqrt()
            direction = (1 - alpha_prod_next - std_dev_t**2).clamp(min=0).sqrt()
            unknown = ddim_update(pred_original, pred_epsilon, alpha_prod_next.sqrt(), direction)
            unknown = unknown + std_dev_t * noise_like()
            # 3. Known region (line 5): the input noised to the same level, x_t-1 = sqrt(alpha_bar) x_0 + ... eps.
            known = alpha_prod_next.sqrt() * clean + (1 - alpha_prod_next).sqrt() * noise_like()
            # 4. Join them (line 8).
            latents = keep * known + fill * unknown
            level = next_level
        return latents

    @torch.no_grad()
    def invert(
        self,
        image,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels=None,
        guidance_scale: float | None = None,
    ):
        r"""
        Deterministic DDIM inversion: the starting noise x_T from which DDIM (eta 0) generates `image`.

        Runs the DDIM update (Song et al. 2021, eq. 13, an Euler step of the probability-flow ODE) backwards, from the
        clean image up to the first timestep of DDIM sampling with the same number of steps, as diffusers'
        `DDIMInverseScheduler` does, for eps, v and x_0 models. Each step evaluates the model at the sample it starts
        from, an error that halves as the steps double: for a smooth model, 50 steps give the image back within a
        few percent of the pixel range when the latents are sampled with DDIM. A latent model inverts the VAE's
        encoding of the image (its posterior mean). With `class_labels` the inversion uses the same (guided) model
        output as decoding with them; it is most exact at `guidance_scale=1`.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images to invert; arrays and tensors in [0, 1]; resized to the model's image size.
            num_inference_steps (`int`, *optional*, defaults to 50):
                The number of DDIM steps; decode with the same number.
            output_type (`str`, *optional*, defaults to `"pil"`):
                The format of `images`, a view of the latents (`"pil"`, `"np"`, `"pt"` or `"latent"`).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubInversionOutput`] instead of a plain tuple `(latents, images)`.
            class_labels, guidance_scale (*optional*):
                For a class-conditional model, as in `__call__`.

        Example:

        ```py
        >>> import PIL.Image
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm")
        >>> latents = pipe.invert(PIL.Image.open("cat.png"), num_inference_steps=50).latents
        >>> # Decode with deterministic DDIM on the same steps, without x_0 clipping (as the inversion ran):
        >>> pipe.set_sampler("ddim", clip_sample=False)
        >>> again = pipe(latents=latents, num_inference_steps=50, eta=0.0).images[0]
        ```

        Returns:
            [`DDPMHubInversionOutput`] or `tuple`: the latents x_T (float32, on the pipeline's device) and their view.
        """
        clean, labels, scale = self._prepare_labels(self._prepare_model_input(image), class_labels, guidance_scale)
        self.check_inputs(clean.shape[0], num_inference_steps, output_type, None, None, 1)
        # The timesteps of the DDIM sampling this inverts, from its clean end (alpha_bar = 1 by default) upwards.
        ddim = self._deterministic_ddim()
        ddim.set_timesteps(num_inference_steps, device=clean.device)
        alphas_cumprod = ddim.alphas_cumprod.to(clean.device)
        alpha_prod_prev = ddim.final_alpha_cumprod.to(clean.device)
        prediction_type = self.scheduler.config.prediction_type
        latents = clean
        for t in self.progress_bar(ddim.timesteps.flip(0)):
            alpha_prod_t = alphas_cumprod[t]
            # 1. The model sees x_t-1 as if it were x_t: the one approximation of DDIM inversion, exact as the steps
            # shrink. Its output is read at t, where the model thinks it is, for eps, v and x_0 models alike.
            model_output = self._model_output(latents, t, labels, scale)
            pred_epsilon = split_prediction(model_output, latents, alpha_prod_t, prediction_type)[1]
            # 2. DDIM eq. 13 backwards, x_t-1 -> x_t: the x_0 that x_t-1 and eps imply, noised to t with the same eps.
            alpha_prev, sigma_prev = alpha_prod_prev.sqrt(), (1 - alpha_prod_prev).sqrt()
            pred_original = predicted_x0("epsilon", latents, pred_epsilon, alpha_prev, sigma_prev)
            latents = ddim_update(pred_original, pred_epsilon, alpha_prod_t.sqrt(), (1 - alpha_prod_t).sqrt())
            alpha_prod_prev = alpha_prod_t
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return latents, images
        return DDPMHubInversionOutput(latents=latents, images=images)

    def _end_noise(self, image, seed: int | None, name: str, num_inference_steps: int, labels, scale) -> torch.Tensor:
        """The starting noise of one end of an interpolation: inverted from an image, or drawn from a seed."""
        if (image is None) == (seed is None):
            raise ValueError(f"Give exactly one of `image_{name}` and `seed_{name}`.")
        if image is None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"`seed_{name}` must be an integer, got {seed!r}.")
            # The same noise as `__call__` with `generator=torch.Generator().manual_seed(seed)`.
            generator = torch.Generator().manual_seed(seed)
            shape = (1, *self.sample_shape)
            return randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        batched = isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4 and len(image) != 1
        if isinstance(image, (list, tuple)) or batched:
            raise ValueError(f"`image_{name}` must be one image, got a batch.")
        inverted = self.invert(
            image,
            num_inference_steps=num_inference_steps,
            output_type="latent",
            class_labels=labels,
            guidance_scale=scale,
        )
        return inverted.latents

    @torch.no_grad()
    def interpolate(
        self,
        image_a=None,
        image_b=None,
        num_frames: int = 8,
        seed_a: int | None = None,
        seed_b: int | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels=None,
        guidance_scale: float | None = None,
    ):
        r"""
        Frames that morph from one image (or seed) to another: slerp between their starting noises, decoded with
        deterministic DDIM (Song et al. 2021, Sec. 5.3 and Fig. 6).

        Each end is an image, inverted with [`~DDPMHubPipeline.invert`], or a seed, whose noise is the one `__call__`
        draws from `torch.Generator().manual_seed(seed)`. The first and last frames are then the images themselves
        (up to the inversion error) or the DDIM samples of the seeds.

        Args:
            image_a, image_b (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`, *optional*):
                The two end images; arrays and tensors in [0, 1]. Give an image or a seed for each end.
            num_frames (`int`, *optional*, defaults to 8):
                The number of frames, both ends included (at least 2).
            seed_a, seed_b (`int`, *optional*):
                Seeds for ends without an image.
            num_inference_steps (`int`, *optional*, defaults to 50):
                The number of DDIM steps, for the inversion and for decoding.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"` or `"latent"`, as in `__call__`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.
            class_labels (`int` or `str`, *optional*), guidance_scale (`float`, *optional*):
                For a class-conditional model: the one class of every frame (inversion and decoding), as in
                `__call__`.

        Example:

        ```py
        >>> import PIL.Image
        >>> from diffusers.utils import make_image_grid
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm")
        >>> frames = pipe.interpolate(PIL.Image.open("cat.png"), PIL.Image.open("tiger.png"), num_frames=8).images
        >>> make_image_grid(frames, rows=1, cols=8).save("cat-to-tiger.png")
        >>> frames = pipe.interpolate(seed_a=0, seed_b=1, num_frames=8).images  # between two samples
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the `num_frames` frames, from a to b.
        """
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
            raise ValueError(f"`num_frames` must be an integer >= 2, got {num_frames!r}.")
        if _label_count(class_labels) > 1:
            raise ValueError(f"`class_labels` of an interpolation is one class for every frame, got {class_labels!r}.")
        self.check_inputs(num_frames, num_inference_steps, output_type, None, None, 1)
        self.prepare_class_labels(class_labels, 1, guidance_scale)  # bad labels fail before any inversion
        noise_a = self._end_noise(image_a, seed_a, "a", num_inference_steps, class_labels, guidance_scale)
        noise_b = self._end_noise(image_b, seed_b, "b", num_inference_steps, class_labels, guidance_scale)
        weights = torch.linspace(0, 1, num_frames).tolist()
        latents = torch.cat([slerp(noise_a, noise_b, weight) for weight in weights])
        with self._using_scheduler(self._deterministic_ddim()):
            return self(
                batch_size=num_frames,
                class_labels=class_labels,
                guidance_scale=guidance_scale,
                latents=latents,
                num_inference_steps=num_inference_steps,
                eta=0.0,
                output_type=output_type,
                return_dict=return_dict,
            )
