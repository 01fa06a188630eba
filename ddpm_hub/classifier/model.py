"""The noise-aware classifier of classifier guidance: ADM's encoder with attention pooling, from diffusers blocks.

Dhariwal & Nichol (2021, Sec. 4 and App. A) guide with a classifier of the *noisy* samples x_t: the downsampling half
of the diffusion UNet (residual blocks that take the timestep embedding, attention at the low resolutions, the
middle block), then attention pooling, which they found best among the poolings they tried. Here the blocks are
diffusers' own (`get_down_block`, `UNetMidBlock2D`, `Timesteps`, `TimestepEmbedding`, `Attention`), so the model
reads like the `UNet2DModel` whose samples it classifies, and saves, loads and pushes like any diffusers model
(`save_pretrained`, `from_pretrained`, `push_to_hub`). Its config also records what it was trained for: the diffusion
model's noise schedule (`noise_schedule`, a `schedule_fingerprint`), resolution and channels, latent or not, and
the class names; `DDPMHubPipeline` checks these before it lets the classifier guide a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class ClassifierOutput(BaseOutput):
    """Output of [`NoiseAwareClassifier`].

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_classes)`): unnormalized log-probabilities of the classes.
    """

    logits: torch.Tensor


class AttentionPool2d(nn.Module):
    """ADM's attention pooling (guided-diffusion's `AttentionPool2d`): the mean of the feature map, with a learned
    position embedding per cell, attends to every cell, and its output is the image's feature vector.

    Args:
        num_positions (`int`): the cells of the feature map (height x width).
        channels (`int`): feature channels.
        head_dim (`int`): channels per attention head.
    """

    def __init__(self, num_positions: int, channels: int, head_dim: int):
        super().__init__()
        self.position_embedding = nn.Parameter(torch.randn(num_positions + 1, channels) / channels**0.5)
        self.attention = Attention(query_dim=channels, heads=max(1, channels // head_dim), dim_head=head_dim, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.flatten(2).transpose(1, 2)  # (batch, cells, channels)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.position_embedding.to(tokens)
        return self.attention(tokens[:, :1], encoder_hidden_states=tokens)[:, 0]  # only the mean token asks


class NoiseAwareClassifier(ModelMixin, ConfigMixin):
    r"""
    A classifier of a diffusion model's noisy samples x_t at any timestep t, for classifier guidance.

    `forward(sample, timestep)` returns the class logits of p(y | x_t); the pipeline follows the gradient of their
    log-softmax. Build it for a model with [`~ddpm_hub.classifier.classifier_for`], train it with
    `ddpm-hub train-classifier`.

    Parameters:
        sample_size (`int`): the side of the samples (a latent model's latent grid).
        in_channels (`int`): their channels.
        label_names (`list[str]`): the class names, in id order.
        block_out_channels (`tuple[int]`): channels of each level; every level but the last halves the resolution.
        down_block_types (`tuple[str]`): diffusers down blocks, one per level ("DownBlock2D", "AttnDownBlock2D").
        layers_per_block (`int`): residual blocks per level.
        attention_head_dim (`int`): channels per attention head (blocks, middle block and pooling).
        norm_num_groups (`int`): groups of every GroupNorm.
        dropout (`float`): dropout in the residual blocks.
        noise_schedule (`str`, *optional*): the `schedule_fingerprint` of the diffusion model's training scheduler.
        num_train_timesteps (`int`, *optional*): its T, the range of `timestep`.
        latent (`bool`): whether the samples are a latent model's VAE latents.
        latent_scaling_factor (`float`, *optional*): a latent model's scaling factor of its latents.
        diffusion_model (`str`, *optional*): where the diffusion model came from (a folder or Hub id), for reference.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        label_names: list[str] | tuple[str, ...] = ("0", "1"),
        block_out_channels: tuple[int, ...] = (64, 128, 256),
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        layers_per_block: int = 2,
        attention_head_dim: int = 32,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
        noise_schedule: str | None = None,
        num_train_timesteps: int | None = None,
        latent: bool = False,
        latent_scaling_factor: float | None = None,
        diffusion_model: str | None = None,
    ):
        super().__init__()
        if len(label_names) < 2 or len(set(label_names)) != len(label_names):
            raise ValueError(f"A classifier needs at least two distinct class names, got {list(label_names)}.")
        if len(block_out_channels) != len(down_block_types):
            raise ValueError("`block_out_channels` and `down_block_types` must have one entry per level.")
        if sample_size % 2 ** (len(block_out_channels) - 1):
            raise ValueError(f"`sample_size` {sample_size} must halve {len(block_out_channels) - 1} times.")
        if any(channels % attention_head_dim for channels in block_out_channels):
            raise ValueError(
                f"`attention_head_dim` {attention_head_dim} must divide every level's channels, {block_out_channels}."
            )
        width = block_out_channels[0]
        time_channels = width * 4
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, time_channels)
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        for i, (block_type, channels) in enumerate(zip(down_block_types, block_out_channels)):
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=layers_per_block,
                    in_channels=width,
                    out_channels=channels,
                    temb_channels=time_channels,
                    add_downsample=i < len(block_out_channels) - 1,
                    resnet_eps=1e-5,
                    resnet_act_fn="silu",
                    resnet_groups=norm_num_groups,
                    attention_head_dim=attention_head_dim,
                    downsample_padding=1,
                    resnet_time_scale_shift="scale_shift",  # ADM's adaptive group norm
                    dropout=dropout,
                )
            )
            width = channels
        self.mid_block = UNetMidBlock2D(
            in_channels=width,
            temb_channels=time_channels,
            dropout=dropout,
            resnet_eps=1e-5,
            resnet_time_scale_shift="scale_shift",
            resnet_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
        )
        self.norm_out = nn.GroupNorm(norm_num_groups, width, eps=1e-5)
        final_size = sample_size // 2 ** (len(block_out_channels) - 1)
        self.pool = AttentionPool2d(final_size**2, width, attention_head_dim)
        self.head = nn.Linear(width, len(label_names))

    @property
    def num_classes(self) -> int:
        return len(self.config.label_names)

    @property
    def label_names(self) -> list[str]:
        return list(self.config.label_names)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, return_dict: bool = True
    ) -> ClassifierOutput | tuple:
        """The class logits of noisy samples x_t (`sample`, shape `(batch, in_channels, size, size)`) at `timestep`
        (one for all, or one per sample)."""
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        embedding = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        hidden = self.conv_in(sample)
        for block in self.down_blocks:
            hidden, _ = block(hidden, embedding)
        hidden = self.mid_block(hidden, embedding)
        features = self.pool(nn.functional.silu(self.norm_out(hidden)))
        logits = self.head(features)
        return ClassifierOutput(logits=logits) if return_dict else (logits,)
