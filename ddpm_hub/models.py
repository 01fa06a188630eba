"""UNet presets, and `UNet2DModel` built from the vocabulary of classic DDPM code.

Classic DDPM code (Ho et al. 2020; Nichol & Dhariwal's improved/guided diffusion) describes a UNet by
`model_channels`, `channel_mult`, `num_res_blocks`, `attention_resolutions` and `dropout`. `UNetSpec` holds exactly
that, checks it against the training resolution, and translates it into diffusers' `UNet2DModel` arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from diffusers import UNet2DModel


def check_resolution(resolution: int, num_levels: int) -> None:
    """Each level after the first halves the feature maps, so the image size must divide by 2^(levels - 1)."""
    factor = 2 ** (num_levels - 1)
    if resolution < 1 or resolution % factor:
        raise ValueError(
            f"resolution {resolution} is not divisible by {factor}, the downsampling factor of a UNet with "
            f"{num_levels} levels; use a multiple of {factor}."
        )


@dataclass(frozen=True)
class UNetSpec:
    """A UNet in classic DDPM terms.

    Args:
        model_channels (`int`): channels of the first level; level i has `model_channels * channel_mult[i]`.
        channel_mult (`tuple[int, ...]`): one multiplier per resolution level; each level after the first halves
            the resolution.
        num_res_blocks (`int`): residual blocks per level (diffusers' `layers_per_block`).
        attention_levels (`tuple[int, ...]`): levels (0 = full resolution) whose blocks have self-attention; the
            middle block always has it, as in Ho et al.
        dropout (`float`, defaults to 0.0): dropout inside residual blocks (0.1 in Ho et al. for CIFAR-10 / LSUN).
        norm_num_groups (`int`, defaults to 32): GroupNorm groups; must divide every level's channels.
        attention_head_dim (`int`, *optional*, defaults to 8): channels per attention head; `None` is one head per
            layer, as in the original DDPM.
        in_channels (`int`, defaults to 3): image channels (1 for grayscale).
        resolution (`int`, defaults to 64): the image size the preset is meant for.
        learning_rate (`float`, defaults to 1e-4): a peak learning rate known to work for this size of model.
        low_resolution (`int`, *optional*): for a super-resolution preset, the input size it is sized for (its
            default `--low_resolution`); the UNet then also takes the upsampled input (2 x `in_channels`).
    """

    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[int, ...]
    dropout: float = 0.0
    norm_num_groups: int = 32
    attention_head_dim: int | None = 8
    in_channels: int = 3
    resolution: int = 64
    learning_rate: float = 1e-4
    low_resolution: int | None = None

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * mult for mult in self.channel_mult)

    def level_resolutions(self, resolution: int | None = None) -> tuple[int, ...]:
        """Feature-map size at each level for a given image size."""
        resolution = resolution or self.resolution
        return tuple(resolution // 2**level for level in range(len(self.channel_mult)))

    def with_attention_resolutions(self, attention_resolutions: tuple[int, ...], resolution: int) -> UNetSpec:
        """The same spec with attention at the given feature-map sizes (in pixels, as guided-diffusion counts them)."""
        sizes = self.level_resolutions(resolution)
        missing = [size for size in attention_resolutions if size not in sizes]
        if missing:
            raise ValueError(
                f"attention_resolutions {list(missing)} never occur in this UNet at resolution {resolution}; "
                f"its levels are {list(sizes)} pixels."
            )
        return dataclasses.replace(
            self, attention_levels=tuple(sorted(sizes.index(size) for size in attention_resolutions))
        )

    def validate(self, resolution: int | None = None) -> None:
        """Raise `ValueError` naming the first bad value, before any weights are allocated."""
        resolution = resolution or self.resolution
        for name in ("model_channels", "num_res_blocks", "norm_num_groups", "in_channels", "resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ValueError(
                f"channel_mult must be a non-empty list of positive integers, got {list(self.channel_mult)}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}.")
        check_resolution(resolution, len(self.channel_mult))
        bad_levels = [level for level in self.attention_levels if not 0 <= level < len(self.channel_mult)]
        if bad_levels:
            raise ValueError(
                f"attention levels {bad_levels} do not exist; this UNet has levels 0..{len(self.channel_mult) - 1}."
            )
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(
                    f"norm_num_groups {self.norm_num_groups} does not divide {channels} channels "
                    f"(model_channels {self.model_channels} x channel_mult {list(self.channel_mult)})."
                )
            if self.attention_head_dim is not None and channels % self.attention_head_dim:
                raise ValueError(f"attention_head_dim {self.attention_head_dim} does not divide {channels} channels.")

    def unet_kwargs(self, resolution: int | None = None) -> dict:
        """Arguments of `UNet2DModel` for this spec (validated)."""
        resolution = resolution or self.resolution
        self.validate(resolution)
        levels = range(len(self.channel_mult))
        down = tuple("AttnDownBlock2D" if level in self.attention_levels else "DownBlock2D" for level in levels)
        up = tuple("AttnUpBlock2D" if level in self.attention_levels else "UpBlock2D" for level in reversed(levels))
        return dict(
            sample_size=resolution,
            in_channels=self.in_channels,
            out_channels=self.in_channels,
            layers_per_block=self.num_res_blocks,
            block_out_channels=self.block_out_channels,
            down_block_types=down,
            up_block_types=up,
            dropout=self.dropout,
            norm_num_groups=self.norm_num_groups,
            attention_head_dim=self.attention_head_dim,
        )


PRESETS: dict[str, UNetSpec] = {
    # diffusers' examples/unconditional_image_generation default, block for block: 6 levels (128, 128, 256, 256,
    # 512, 512), attention in the 5th down and 2nd up block (4x4 at 64 px). About 114M parameters.
    "ddpm-64": UNetSpec(
        model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attention_levels=(4,), resolution=64
    ),
    # Ho et al.'s LSUN/CelebA-HQ recipe scaled to 128 px: 192 base channels, attention at 16x16, dropout 0.1,
    # single-head attention as in the original code.
    "cats-128": UNetSpec(
        model_channels=192,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_levels=(3,),
        dropout=0.1,
        attention_head_dim=None,
        resolution=128,
        learning_rate=5e-5,  # between Ho et al.'s 2e-4 (32 px) and 2e-5 (256 px)
    ),
    # Small enough to train for a few minutes on a laptop CPU and still learn coarse shapes and colours. One
    # attention head, as in Ho et al.: 8 heads of 8 channels cost 1.7x the step time on a CPU for no visible gain.
    "small": UNetSpec(
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_levels=(2,),
        norm_num_groups=8,
        attention_head_dim=None,
        resolution=32,
        learning_rate=1e-3,  # small UNets train stably, and much faster, at 1e-3
    ),
    # Latent diffusion, for 32x32x4 latents: 256 px images through an f8 VAE such as Stable Diffusion's
    # (--vae_name_or_path stabilityai/sd-vae-ft-mse). After Rombach et al. 2022, Table 13, the unconditional
    # LSUN-Churches LDM-8 row (z 32x32x4): 192 base channels, channel multipliers 1,2,2,4,4, 2 residual blocks
    # per level, attention at the 32, 16, 8 and 4 latent feature maps, 24 channels per head. Built from diffusers'
    # plain UNet2DModel blocks (no scale-shift norm or residual up/down sampling as in the LDM code); 256.4M
    # parameters, as the paper's 256M. `resolution` is the side of the latent grid.
    "ldm-churches-8": UNetSpec(
        model_channels=192,
        channel_mult=(1, 2, 2, 4, 4),
        num_res_blocks=2,
        attention_levels=(0, 1, 2, 3),
        attention_head_dim=24,
        in_channels=4,
        resolution=32,
        learning_rate=5e-5,  # a conservative rate for a UNet of this size (cats-128 trains at 5e-5 too)
    ),
    # Super-resolution (SR3, Saharia et al. 2021; cascades, Ho et al. 2021), sized for one GPU after the upsamplers of
    # guided-diffusion (Dhariwal & Nichol 2021; openai/guided-diffusion `sr_create_model` and README): their 64->256
    # model has 192 channels, multipliers 1,1,2,2,4,4 (down to 8x8), 2 residual blocks per level and attention at 32,
    # 16 and 8 px; their 64 px upsampler multipliers 1,2,3,4. These keep the multipliers and blocks with 128 channels,
    # and attention at the two coarsest levels (16 and 8 px): the input already fixes the layout, so the upscaler
    # mostly needs local detail.
    "sr-16-64": UNetSpec(
        model_channels=128,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_levels=(2, 3),
        attention_head_dim=64,
        resolution=64,
        low_resolution=16,
    ),
    "sr-32-128": UNetSpec(
        model_channels=128,
        channel_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attention_levels=(3, 4),
        attention_head_dim=64,
        resolution=128,
        low_resolution=32,
    ),
    # For tests and smoke runs: a few thousand parameters per level, milliseconds per step on a CPU.
    "tiny": UNetSpec(
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        norm_num_groups=8,
        resolution=16,
        learning_rate=1e-3,
    ),
}


def get_preset(name: str) -> UNetSpec:
    """The `UNetSpec` of a preset name; a `ValueError` lists the known ones."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]


def resolve_spec(
    preset: str,
    resolution: int | None = None,
    *,
    model_channels: int | None = None,
    channel_mult: tuple[int, ...] | None = None,
    num_res_blocks: int | None = None,
    attention_resolutions: tuple[int, ...] | None = None,
    dropout: float | None = None,
    norm_num_groups: int | None = None,
    in_channels: int | None = None,
) -> UNetSpec:
    """A preset with classic-vocabulary overrides applied (`None` keeps the preset's value), validated.

    `attention_resolutions` are feature-map sizes in pixels at `resolution` (guided-diffusion's convention).
    """
    spec = get_preset(preset)
    overrides = dict(
        model_channels=model_channels,
        channel_mult=tuple(channel_mult) if channel_mult is not None else None,
        num_res_blocks=num_res_blocks,
        dropout=dropout,
        norm_num_groups=norm_num_groups,
        in_channels=in_channels,
        resolution=resolution,
    )
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    if channel_mult is not None and attention_resolutions is None:
        # The preset's attention levels may not exist any more; keep those that do.
        spec = dataclasses.replace(
            spec, attention_levels=tuple(level for level in spec.attention_levels if level < len(spec.channel_mult))
        )
    if attention_resolutions is not None:
        spec = spec.with_attention_resolutions(tuple(attention_resolutions), spec.resolution)
    spec.validate()
    return spec


def build_unet(spec: UNetSpec | str = "ddpm-64", resolution: int | None = None) -> UNet2DModel:
    """A freshly initialised `UNet2DModel` from a spec or preset name.

    Example:

    ```py
    >>> unet = build_unet("ddpm-64")              # diffusers' example UNet at 64 px
    >>> unet = build_unet(resolve_spec("cats-128", num_res_blocks=3))
    ```
    """
    if isinstance(spec, str):
        spec = get_preset(spec)
    return UNet2DModel(**spec.unet_kwargs(resolution))
