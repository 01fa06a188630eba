"""Latent diffusion: the VAE checks, the encode-once cache and the latent data source.

Tiny random autoencoders are built here and saved to folders, so that every route goes through diffusers' real
`from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel, VQModel

from ddpm_hub.config import ModelConfig
from ddpm_hub.data import ImageSet
from ddpm_hub.data.memory import InMemoryImages
from ddpm_hub.latents import LatentImages, LatentSpace, cached_latents, load_vae, read_vae_info, sample_latents
from ddpm_hub.models import PRESETS, get_preset

TINY_KL = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "latent_channels": 4,
    "sample_size": 16,
}
TINY_VQ = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "latent_channels": 3,
    "num_vq_embeddings": 16,
    "vq_embed_dim": 3,
    "sample_size": 16,
}


def save_tiny_vae(path: Path, kind: str = "kl", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_KL) if kind == "kl" else VQModel(**TINY_VQ)
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def kl_dir(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "kl")


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "vq", "vq")


def random_images(count: int = 12, size: int = 16, seed: int = 0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    return ImageSet(pixels=pixels, num_skipped=0, source="random test images")


class CountingEncoder:
    """Wraps a VAE's `encode` and counts the images it is given."""

    def __init__(self, vae):
        self.images, self.original = 0, vae.encode
        vae.encode = self

    def __call__(self, x, *args, **kwargs):
        self.images += x.shape[0]
        return self.original(x, *args, **kwargs)


def test_vae_info_reads_factor_channels_and_scaling(kl_dir, vq_dir):
    kl = read_vae_info(str(kl_dir))
    assert (kl.class_name, kl.factor, kl.latent_channels, kl.is_kl) == ("AutoencoderKL", 2, 4, True)
    assert kl.scaling_factor == pytest.approx(0.18215) and kl.sample_shape(16) == (4, 8, 8)
    vq = read_vae_info(str(vq_dir), scaling_factor=1.0)
    assert (vq.class_name, vq.factor, vq.latent_channels, vq.is_kl, vq.scaling_factor) == ("VQModel", 2, 3, False, 1.0)


def test_a_folder_that_is_not_an_autoencoder_is_refused(tmp_path):
    unet_dir = tmp_path / "unet"
    UNet2DModel(block_out_channels=(8, 16), norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
                up_block_types=("UpBlock2D",) * 2).save_pretrained(unet_dir)  # fmt: skip
    with pytest.raises(ValueError, match="is not an autoencoder: its config is for UNet2DModel"):
        read_vae_info(str(unet_dir))
    with pytest.raises(ValueError, match="has no autoencoder config"):
        read_vae_info(str(tmp_path / "empty"))


def test_a_resolution_the_vae_cannot_divide_is_refused(kl_dir):
    with pytest.raises(ValueError, match="--resolution 17 is not divisible by 2"):
        read_vae_info(str(kl_dir)).latent_size(17)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_the_encoder_runs_once_per_image_and_setting(tmp_path, kl_dir, vq_dir, kind):
    info = read_vae_info(str(kl_dir if kind == "kl" else vq_dir))
    images = random_images()
    settings = {"cache_root": tmp_path / "cache", "resolution": 16, "center_crop": False, "random_flip": True}

    vae = load_vae(info)
    counter = CountingEncoder(vae)
    stats, path, encoded = cached_latents(images.pixels, vae, **settings)
    assert encoded and path.is_file() and counter.images == 2 * len(images)  # each image and its flip, once
    assert stats.mean.shape == (12, 2, info.latent_channels, 8, 8)
    assert (stats.std is not None) == (kind == "kl")

    vae = load_vae(info)
    counter = CountingEncoder(vae)
    again, same_path, encoded = cached_latents(images.pixels, vae, **settings)
    assert not encoded and counter.images == 0 and same_path == path
    assert torch.equal(again.mean, stats.mean)

    # Another resolution (other pixels), another crop, another VAE: each a new entry, encoded afresh.
    smaller = ImageSet(images.pixels[:, :, :8, :8].contiguous(), 0, "smaller")
    counter = CountingEncoder(vae)
    assert cached_latents(smaller.pixels, vae, **{**settings, "resolution": 8})[2] and counter.images == 24
    assert cached_latents(images.pixels, vae, **{**settings, "center_crop": True})[2]
    other = load_vae(read_vae_info(str(save_tiny_vae(tmp_path / "other", kind, seed=1))))
    counter = CountingEncoder(other)
    _, other_path, encoded = cached_latents(images.pixels, other, **settings)
    assert encoded and counter.images == 24 and other_path != path
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 4


def test_the_flipped_latent_is_the_latent_of_the_flipped_image(tmp_path, kl_dir):
    vae = load_vae(read_vae_info(str(kl_dir)))
    images = random_images(4)
    stats, _, _ = cached_latents(
        images.pixels, vae, cache_root=tmp_path, resolution=16, center_crop=True, random_flip=True
    )
    with torch.no_grad():
        flipped = vae.encode(images.pixels.flip(-1).float() / 127.5 - 1).latent_dist.mean
    torch.testing.assert_close(stats.mean[:, 1].float(), flipped, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(stats.mean[:, 1].float(), stats.mean[:, 0].float().flip(-1), atol=1e-2)


def test_training_samples_the_posterior_and_picks_the_flip_with_probability_one_half():
    mean = torch.zeros(4000, 2, 1, 1, 1)
    mean[:, 1] = 1.0  # the flipped view is told apart by its mean
    std = torch.full_like(mean, 0.5)
    moments = torch.stack((mean, std), 2)  # (B, F, M, C, h, w)
    torch.manual_seed(0)
    latents = sample_latents(moments, random_flip=True, scaling_factor=2.0)
    torch.manual_seed(0)
    flips = torch.rand(4000) < 0.5  # the first draw picks the view
    torch.testing.assert_close(latents[flips].mean(), torch.tensor(2.0), atol=0.1, rtol=0)
    torch.testing.assert_close(latents[~flips].mean(), torch.tensor(0.0), atol=0.1, rtol=0)
    torch.testing.assert_close(latents[~flips].std(), torch.tensor(1.0), atol=0.05, rtol=0)  # 2.0 x std 0.5
    unflipped = sample_latents(moments, random_flip=False, scaling_factor=1.0)
    assert unflipped.mean().abs() < 0.05  # only view 0


def test_latent_source_shapes_and_pixel_references(tmp_path, kl_dir):
    info = read_vae_info(str(kl_dir), scaling_factor=0.5)
    images = random_images(6)
    stats, _, _ = cached_latents(images.pixels, load_vae(info), cache_root=tmp_path, resolution=16, center_crop=False,
                                 random_flip=False)  # fmt: skip
    source = LatentImages(InMemoryImages(images), stats, info, random_flip=False)
    assert source.sample_shape == (4, 8, 8) and source.num_classes == 0 and source.label_names is None
    assert "as latents of the VAE" in source.description
    refs = source.reference_images(4)
    assert refs.dtype == torch.uint8 and torch.equal(refs, images.pixels[:4])
    with pytest.raises(ValueError, match="--random_flip needs the latents of the flipped images"):
        LatentImages(InMemoryImages(images), stats, info, random_flip=True)


def _latent_plan(kl_dir, **model):
    """The plan of a latent run (the latent space part, as the Trainer consults it) and its image resolution."""
    from ddpm_hub.config import DataConfig, HubConfig, TrainConfig
    from ddpm_hub.defaults import resolve_model_defaults
    from ddpm_hub.training import ModelShape, RunConfigs, plan_model

    config = resolve_model_defaults(ModelConfig(vae_name_or_path=str(kl_dir), **model))
    space = LatentSpace()
    space.check(RunConfigs(config, DataConfig(), TrainConfig(), HubConfig()))
    plan = plan_model(config, shape=space.shape_model(ModelShape(sample_size=config.resolution)))
    return plan, space.image_resolution(plan.resolution)


def test_presets_follow_the_latents_and_mismatched_unets_are_refused(tmp_path, kl_dir):
    plan, resolution = _latent_plan(kl_dir, model="tiny", resolution=32)
    assert resolution == 32 and plan.unet_config["sample_size"] == 16 and plan.sample_channels == 4
    assert plan.unet_config["in_channels"] == plan.unet_config["out_channels"] == 4
    plan, resolution = _latent_plan(kl_dir, model="tiny")
    assert (plan.unet_config["sample_size"], resolution) == (16, 32)  # the preset's size, read as the latent grid
    with pytest.raises(TypeError):
        plan.unet_config["in_channels"] = 3  # the plan is frozen

    config = tmp_path / "unet.json"
    config.write_text(json.dumps({"in_channels": 3, "out_channels": 3, "block_out_channels": [32, 64]}))
    with pytest.raises(ValueError, match="has in/out channels 3/3, but the latents .* have 4 channels"):
        _latent_plan(kl_dir, model_config_name_or_path=str(config), resolution=32)


def test_the_latent_preset_is_sized_for_32x32x4_latents():
    spec = get_preset("ldm-churches-8")
    kwargs = spec.unet_kwargs()
    assert (kwargs["sample_size"], kwargs["in_channels"], kwargs["out_channels"]) == (32, 4, 4)
    assert kwargs["block_out_channels"] == (192, 384, 384, 768, 768)
    assert "ldm-churches-8" in PRESETS
