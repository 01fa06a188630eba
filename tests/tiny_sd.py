"""Tiny, randomly initialised Stable Diffusion pipelines, saved to disk like real checkpoints.

No pretrained weights can be downloaded in the test environment, so the tests of `ddpm_hub.text2img` load these
folders through diffusers' real `from_pretrained`. `build_tiny_sd` follows Stable Diffusion 2 (linear attention
projections, a v-prediction DDIM schedule with the SD betas, a 77-token CLIP tokenizer) and `build_tiny_sdxl`
SDXL (two text encoders, size and crop conditioning), both scaled down until a 32x32 image takes a few
milliseconds per step on a CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

# The real SD tokenizers truncate at 77 tokens (start and end tokens included); keeping that limit makes the
# truncation tests check the same arithmetic users meet.
MODEL_MAX_LENGTH = 77

# A few merges so that common words become single tokens (as in the real CLIP vocabulary) while everything else
# still tokenizes, byte by byte.
MERGES = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("h", "a"), ("ha", "t</w>")]


def _byte_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE (GPT-2, CLIP) uses to stand for the bytes 0-255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_clip_vocabulary(directory: str | os.PathLike) -> Path:
    """Write a CLIP-format `vocab.json` and `merges.txt` into `directory` and return it.

    Every byte has a token both inside a word and at its end (`</w>`), so any prompt tokenizes without unknown
    tokens; the merges add whole-word tokens for "cat", "dog" and "hat".
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [f"{char}</w>" for char in alphabet] + ["".join(pair) for pair in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in MERGES)
    (directory / "merges.txt").write_text(merges, encoding="utf-8")
    return directory


def _tokenizer(directory: Path) -> CLIPTokenizer:
    source = write_clip_vocabulary(directory.with_name(directory.name + "-tokenizer-source"))
    return CLIPTokenizer.from_pretrained(source, model_max_length=MODEL_MAX_LENGTH)


def _text_config(tokenizer: CLIPTokenizer, **overrides) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
        **overrides,
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
    )


def build_flagging_safety_checker() -> tuple[StableDiffusionSafetyChecker, CLIPImageProcessor]:
    """A tiny SD safety checker whose thresholds flag every image, and its feature extractor.

    The concept thresholds are set to -1, below any cosine similarity, so the checker's verdict is always "NSFW":
    tests can then see the verdict reported and the image blacked out, whatever the random weights draw.
    """
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-1.0)
        checker.special_care_embeds_weights.fill_(-1.0)
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, feature_extractor


# The UNet both tiny pipelines share: 16x16 latents, two levels, SD 2's linear attention projections.
TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
)


def build_tiny_sd(
    directory: str | os.PathLike, *, seed: int = 0, safety_checker: bool = False
) -> StableDiffusionPipeline:
    """Build the tiny pipeline from seeded random weights and `save_pretrained` it into `directory`.

    Args:
        directory (`str` or `os.PathLike`):
            Where to save the pipeline; a `<name>-tokenizer-source` folder with the vocabulary files is written
            beside it.
        seed (`int`, defaults to 0):
            Seeds the random weights, so the same call always builds the same model.
        safety_checker (`bool`, defaults to `False`):
            Include a safety checker that flags every image (see `build_flagging_safety_checker`).
    """
    directory = Path(directory)
    tokenizer = _tokenizer(directory)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    )
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    # Stable Diffusion's training schedule; v-prediction as in the 768-pixel SD 2 checkpoint.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )
    checker, feature_extractor = build_flagging_safety_checker() if safety_checker else (None, None)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=safety_checker,
    )
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_sdxl(directory: str | os.PathLike, *, seed: int = 0) -> StableDiffusionXLPipeline:
    """Build a tiny SDXL pipeline from seeded random weights and `save_pretrained` it into `directory`.

    As in SDXL, the UNet attends to both text encoders' hidden states side by side (32 + 32 = 64 channels) and
    is conditioned on the second encoder's pooled projection plus six size/crop numbers ("text_time").
    """
    directory = Path(directory)
    tokenizer = _tokenizer(directory)
    torch.manual_seed(seed)
    addition_time_embed_dim, projection_dim = 8, 32
    unet = UNet2DConditionModel(
        **TINY_UNET,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        projection_class_embeddings_input_dim=6 * addition_time_embed_dim + projection_dim,
    )
    pipeline = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=projection_dim)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
    )
    pipeline.save_pretrained(directory)
    return pipeline


def build_tiny_clip(directory: str | os.PathLike, *, seed: int = 0) -> Path:
    """Save a tiny random `CLIPModel` with its `CLIPProcessor` (32 px images, the offline vocabulary) to `directory`.

    It stands in for `openai/clip-vit-base-patch16` in the CLIP score tests: the same classes, loaded by the same
    `from_pretrained`, with a 32-dimensional embedding.
    """
    from transformers import CLIPModel, CLIPProcessor

    directory = Path(directory)
    tokenizer = _tokenizer(directory)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=_text_config(tokenizer).to_dict(),
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 32, "patch_size": 8,
        },
        projection_dim=32,
    )  # fmt: skip
    CLIPModel(config).eval().save_pretrained(directory)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def build_tiny_upscaler(directory: str | os.PathLike, *, seed: int = 0):
    """Build a tiny `StableDiffusionUpscalePipeline` from seeded random weights and `save_pretrained` it.

    It has the x4 upscaler's shape scaled down: the UNet reads 7 channels (4 of latents, then the 3 of the noised
    low-resolution image) and takes the noise level as its class label; the VAE has three levels, so it decodes
    latents at the input's size to 4x that size; a DDPM low-resolution scheduler noises the input, a v-prediction
    DDIM scheduler denoises.
    """
    from diffusers import DDPMScheduler, StableDiffusionUpscalePipeline

    directory = Path(directory)
    tokenizer = _tokenizer(directory)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **{**TINY_UNET, "in_channels": 7, "sample_size": 32},
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        num_class_embeds=1000,  # noise levels 0..max_noise_level (350) index an embedding, as in the x4 upscaler
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        scaling_factor=0.08333,
    )
    pipeline = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear"),
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="v_prediction",
        ),
        max_noise_level=350,
    )
    pipeline.save_pretrained(directory)
    return pipeline
