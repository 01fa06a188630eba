"""CLIP score: how well an image follows its prompt, by the cosine of their CLIP embeddings.

    CLIP score(I, P) = max(100 · cos(E_I, E_P), 0)

with E_I and E_P the image and text embeddings of a CLIP model (Radford et al. 2021). This is torchmetrics'
`CLIPScore` and the metric of diffusers' evaluation guide (which compared Stable Diffusion v1-4 and v1-5 with
`openai/clip-vit-base-patch16`); Hessel et al. 2021 ("CLIPScore") use the same cosine with a weight of 2.5 instead
of 100. Scores are only comparable under the same CLIP model.

The embeddings come from transformers' `CLIPModel` and `CLIPProcessor`: each image is resized and centre-cropped on
its own (PIL backend, so that the score does not depend on whether torchvision is installed), prompts are cut at the
text encoder's 77 tokens as Stable Diffusion cuts them, and the model runs in float32 in eval mode, so that a score
depends on its image and prompt only, not on the batch it was computed in. torchmetrics clamps the batch's mean
at 0; here each image's score is clamped, so every image has its own score and their mean is the run's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..devices import resolve_device
from ..safe_loading import weights_kwargs
from .inputs import check_model_reference, input_image

# The CLIP model of diffusers' evaluation guide (ViT-B/16, 224 px, 512-dimensional embeddings).
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"


def clip_score_from_embeddings(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """max(100 · cos(E_I, E_P), 0) for each row pair of `image_embeds` and `text_embeds` (N, D) -> (N,)."""
    cosine = torch.nn.functional.cosine_similarity(image_embeds.double(), text_embeds.double(), dim=-1)
    return (100 * cosine).clamp(min=0)


def check_clip_model(model: str, flag: str = "--clip_model", revision: str | None = None) -> None:
    """Raise `ValueError` (one line) unless `model` names a CLIP model (a `CLIPModel` config, `model_type` "clip").

    Only the configuration is read (a local `config.json`, or the Hub's, cached when offline): this runs before
    anything is loaded. Raises `OSError` when a Hub id cannot be found or downloaded.
    """
    if not model or not model.strip():
        raise ValueError(f"{flag} is empty; give a CLIP model, e.g. {DEFAULT_CLIP_MODEL}.")
    check_model_reference(model)
    local = Path(model).expanduser()
    if local.exists():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{flag} {model!r} is not a CLIP model: the folder has no config.json.")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{flag} {model!r}: config.json is not readable JSON ({error}).") from None
    else:
        from transformers import PretrainedConfig

        config, _ = PretrainedConfig.get_config_dict(model, revision=revision)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "clip":
        raise ValueError(
            f"{flag} {model!r} is a {model_type or 'model without a model_type'}, not a CLIP model (a CLIPModel with "
            f"image and text towers, model_type 'clip', such as {DEFAULT_CLIP_MODEL})."
        )


class CLIPScorer:
    r"""
    Scores images against prompts with a CLIP model: max(100 · cos(E_image, E_prompt), 0) per image.

    Args:
        model ([`~transformers.CLIPModel`]): the CLIP model, in eval mode.
        processor ([`~transformers.CLIPProcessor`]): its image processor and tokenizer.
        name (`str`): the Hub id or local path it came from, recorded beside every score.

    Example:

    ```py
    >>> from ddpm_hub.text2img import CLIPScorer

    >>> scorer = CLIPScorer.from_pretrained("openai/clip-vit-base-patch16")
    >>> scorer(["cat.png", "dog.png"], ["a cat wearing a hat", "a dog"])
    [31.9, 28.4]
    ```
    """

    def __init__(self, model, processor, name: str):
        self.model, self.processor, self.name = model, processor, name

    @classmethod
    def from_pretrained(
        cls, model: str = DEFAULT_CLIP_MODEL, *, revision: str | None = None, device: str | torch.device = "auto"
    ) -> CLIPScorer:
        """Load `model` (Hub id or local folder) with transformers' `CLIPModel` and `CLIPProcessor`, in float32 on
        `device` (`"auto"`: cuda, then mps, then cpu). Raises `ValueError` for a model that is not CLIP and `OSError`
        when it cannot be found."""
        from transformers import CLIPModel

        check_clip_model(model, revision=revision)
        device = device if isinstance(device, torch.device) else resolve_device(device)
        # float32 whatever the generator runs in: half precision moves the scores' last digits.
        network = CLIPModel.from_pretrained(model, revision=revision, **weights_kwargs()).float()
        processor = _load_processor(model, revision)
        local = Path(model).expanduser()
        name = str(local.resolve()) if local.exists() else model
        return cls(network.eval().requires_grad_(False).to(device), processor, name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed(self, images: Sequence, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and text embeddings (N, D) of `images` (PIL images or paths) and their `prompts`."""
        pixels = [input_image(image, "image")[0] for image in images]
        max_length = self.model.config.text_config.max_position_embeddings
        inputs = self.processor(
            text=list(prompts), images=pixels, return_tensors="pt", padding=True, truncation=True, max_length=max_length
        ).to(self.device)
        output = self.model(**inputs)
        return output.image_embeds, output.text_embeds

    def __call__(self, images: Sequence | object, prompts: Sequence[str] | str, *, batch_size: int = 32) -> list[float]:
        """The CLIP score of each image against its prompt (one prompt for all images, or one each).

        Args:
            images (`PIL.Image.Image`, path, or a list of them): the images.
            prompts (`str` or `list[str]`): one prompt for every image, or one per image.
            batch_size (`int`, defaults to 32): images embedded at once; the scores do not depend on it.
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(images):
            raise ValueError(f"Give one prompt for all images or one per image: {len(images)} images, "
                             f"{len(prompts)} prompts.")  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        scores: list[float] = []
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            image_embeds, text_embeds = self.embed(images[chunk], prompts[chunk])
            scores += clip_score_from_embeddings(image_embeds, text_embeds).tolist()
        return scores

    def score(self, output) -> list[float]:
        """Score each image of a [`Text2ImageOutput`] against its own prompt, record the score and this model in its
        metadata (`clip_score`, `clip_model`), and return the scores."""
        scores = self(output.images, [meta.prompt for meta in output.metadata])
        for meta, score in zip(output.metadata, scores):
            meta.clip_score, meta.clip_model = score, self.name
        return scores


def _load_processor(model: str | os.PathLike, revision: str | None):
    """`CLIPProcessor` with the PIL image backend (transformers 5 names it `backend="pil"`, 4.x `use_fast=False`):
    torchvision's resize gives other pixels, so the same image would score differently where it is installed."""
    import transformers
    from transformers import CLIPProcessor

    backend = {"backend": "pil"} if hasattr(transformers, "CLIPImageProcessorPil") else {"use_fast": False}
    return CLIPProcessor.from_pretrained(model, revision=revision, **backend)
