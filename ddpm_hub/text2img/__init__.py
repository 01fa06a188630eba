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

Example:

```sh
python text2img.py --prompt "a cat wearing a hat" --seed 0 --num_images_per_prompt 4 --grid
python text2img.py --prompts_file prompts.txt --scheduler dpmpp_2m --num_inference_steps 25 --dtype fp16
python text2img.py --from_metadata outputs/20260101-120000-002-2-a-cat-wearing-a-hat.json
python text2img.py --prompt "a cat wearing a hat, oil painting" --init_image photo.png --strength 0.6 --seed 0
python text2img.py --prompt "a red hat" --init_image photo.png --mask_image hat-mask.png --seed 0
```
"""

from .cli import GenerationConfig, ModelConfig, OutputConfig, SchedulerName, main
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
    resolve_dtype,
)
from .metadata import ImageMetadata, Text2ImageOutput
from .text2image import Text2Image

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "MODES",
    "GenerationConfig",
    "GenerationInputs",
    "ImageMetadata",
    "ModelConfig",
    "OutputConfig",
    "SchedulerName",
    "Text2Image",
    "Text2ImageOutput",
    "check_edit_inputs",
    "check_generation_inputs",
    "check_model_reference",
    "input_image",
    "main",
    "read_image_file",
    "resolve_dtype",
]
