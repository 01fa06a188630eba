"""Stable Diffusion text-to-image from a prompt: the `text2img.py` command line and the `Text2Image` API.

Any diffusers text-to-image checkpoint that `AutoPipelineForText2Image` can load works (Stable Diffusion 1.x and
2.x, SDXL), by Hub id or local folder. Every image is saved as a PNG whose text chunks, and a JSON sidecar beside
it, hold everything needed to regenerate exactly that image: prompt, negative prompt, seed, steps, guidance,
sampler, size, model, revision and dtype.

The same loaded components also edit images (diffusers' own pipelines, built from the loaded one with
`from_pipe`, so no weight is loaded twice): `--init_image` with `--strength` redraws an image from a prompt
(SDEdit, Meng et al. 2021), and `--mask_image` with it redraws only the mask's white region (inpainting). The
metadata then also records the init image and mask, by absolute path and sha256 of the file, and the strength.

Seeds: with `--seed S`, image k of a run (counting from 0 across all prompts) gets seed S + k; without `--seed`,
S is drawn at random and recorded all the same. Each image draws its noise from its own CPU `torch.Generator`, so
regenerating one image alone with its recorded seed gives the same pixels as in the batch it came from.

`--upscale` then upscales every image 4x with diffusers' `StableDiffusionUpscalePipeline` (by default
`stabilityai/stable-diffusion-x4-upscaler`) under its own prompt and seed, and `--clip_score` scores each saved image
against its prompt with CLIP, max(100 cos(E_image, E_prompt), 0); both are recorded in the metadata.
`ddpm-hub eval-text2img` (`evaluate.py`) scores a model, or compares several, on a file of prompts.

Example:

```sh
python text2img.py --prompt "a cat wearing a hat" --seed 0 --num_images_per_prompt 4 --grid
python text2img.py --prompts_file prompts.txt --scheduler dpmpp_2m --num_inference_steps 25 --dtype fp16
python text2img.py --from_metadata outputs/20260101-120000-002-2-a-cat-wearing-a-hat.json
python text2img.py --prompt "a cat wearing a hat, oil painting" --init_image photo.png --strength 0.6 --seed 0
python text2img.py --prompt "a red hat" --init_image photo.png --mask_image hat-mask.png --seed 0
python text2img.py --prompt "a cat wearing a hat" --height 128 --width 128 --upscale --noise_level 20 --clip_score
```
"""

from .cli import GenerationConfig, ModelConfig, OutputConfig, SchedulerName, ScoreConfig, UpscaleConfig, main
from .clip_score import DEFAULT_CLIP_MODEL, CLIPScorer, check_clip_model, clip_score_from_embeddings
from .inputs import (
    DEFAULT_MODEL,
    DTYPES,
    MODES,
    GenerationInputs,
    check_edit_inputs,
    check_generation_inputs,
    check_model_reference,
    input_image,
    read_image_file,
    read_prompts_file,
    resolve_dtype,
)
from .metadata import ImageMetadata, Text2ImageOutput
from .text2image import Text2Image
from .upscale import DEFAULT_UPSCALER, MAX_UPSCALE_INPUT_SIDE, Upscaler, UpscaleSettings, check_upscale_size

__all__ = [
    "CLIPScorer",
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_MODEL",
    "DEFAULT_UPSCALER",
    "MAX_UPSCALE_INPUT_SIDE",
    "DTYPES",
    "MODES",
    "GenerationConfig",
    "GenerationInputs",
    "ImageMetadata",
    "ModelConfig",
    "OutputConfig",
    "SchedulerName",
    "ScoreConfig",
    "Text2Image",
    "Text2ImageOutput",
    "UpscaleConfig",
    "UpscaleSettings",
    "Upscaler",
    "check_clip_model",
    "check_edit_inputs",
    "check_generation_inputs",
    "check_model_reference",
    "check_upscale_size",
    "clip_score_from_embeddings",
    "input_image",
    "main",
    "read_image_file",
    "read_prompts_file",
    "resolve_dtype",
]
