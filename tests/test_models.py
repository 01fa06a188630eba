"""UNet presets and the classic DDPM vocabulary."""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DModel

from ddpm_hub import PRESETS, build_unet, resolve_spec


def test_ddpm_64_is_exactly_the_diffusers_example_unet():
    with init_empty_weights():
        ours = build_unet("ddpm-64")
        example = UNet2DModel(
            sample_size=64,
            in_channels=3,
            out_channels=3,
            layers_per_block=2,
            block_out_channels=(128, 128, 256, 256, 512, 512),
            down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        )
    ignore = {"_use_default_values"}
    assert {k: v for k, v in ours.config.items() if k not in ignore} == {
        k: v for k, v in example.config.items() if k not in ignore
    }
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in example.parameters())


def test_cats_128_preset():
    spec = PRESETS["cats-128"]
    kwargs = spec.unet_kwargs()
    assert kwargs["block_out_channels"] == (192, 384, 576, 768)
    assert kwargs["layers_per_block"] == 2 and kwargs["dropout"] == 0.1 and kwargs["sample_size"] == 128
    # Attention only at the 16x16 level (the 4th), mirrored on the way up.
    assert spec.level_resolutions() == (128, 64, 32, 16)
    assert kwargs["down_block_types"] == ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    assert kwargs["up_block_types"] == ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D")


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_small_presets_run_forward(preset):
    torch.manual_seed(0)
    unet = build_unet(preset)
    size = PRESETS[preset].resolution
    out = unet(torch.randn(2, 3, size, size), torch.tensor([1, 500])).sample
    assert out.shape == (2, 3, size, size)


def test_classic_vocabulary_overrides_a_preset():
    spec = resolve_spec(
        "ddpm-64",
        32,
        model_channels=64,
        channel_mult=(1, 2, 4),
        num_res_blocks=3,
        attention_resolutions=(16, 8),
        dropout=0.2,
    )
    kwargs = spec.unet_kwargs()
    assert kwargs["block_out_channels"] == (64, 128, 256)
    assert kwargs["layers_per_block"] == 3 and kwargs["dropout"] == 0.2 and kwargs["sample_size"] == 32
    assert kwargs["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    assert kwargs["up_block_types"] == ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")


def test_preset_architecture_is_independent_of_resolution():
    # Like diffusers' example: the same blocks at any resolution the downsampling allows.
    assert (
        resolve_spec("ddpm-64", 128).unet_kwargs()["down_block_types"]
        == PRESETS["ddpm-64"].unet_kwargs()["down_block_types"]
    )


@pytest.mark.parametrize(
    "preset, overrides, message",
    [
        ("ddpm-64", dict(resolution=48), "resolution 48 is not divisible by 32"),
        ("cats-128", dict(resolution=100), "resolution 100 is not divisible by 8"),
        (
            "cats-128",
            dict(attention_resolutions=(12,)),
            r"attention_resolutions \[12\] never occur.*\[128, 64, 32, 16\]",
        ),
        ("small", dict(norm_num_groups=5), "norm_num_groups 5 does not divide 32 channels"),
        ("small", dict(model_channels=0), "model_channels must be a positive integer"),
        ("small", dict(channel_mult=()), "channel_mult must be a non-empty list"),
        ("small", dict(dropout=1.5), r"dropout must lie in \[0, 1\)"),
        ("ddpm-65", {}, "Unknown model preset 'ddpm-65'; choose one of: ddpm-64, cats-128"),
    ],
)
def test_invalid_combinations_fail_before_any_model_is_built(monkeypatch, preset, overrides, message):
    def must_not_build(*args, **kwargs):
        raise AssertionError("a UNet was built before validation")

    monkeypatch.setattr(UNet2DModel, "__init__", must_not_build)
    with pytest.raises(ValueError, match=message):
        spec = resolve_spec(preset, **overrides)
        build_unet(spec)
