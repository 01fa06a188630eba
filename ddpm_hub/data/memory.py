"""`InMemoryImages`, the first `DataSource` (see `ddpm_hub.training.seams`): decoded images held in memory (or
memory-mapped), batched by index."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from accelerate import Accelerator

from .identity import DataIdentity, data_identity
from .images import ImageBatchDataset, ImageSet, augment, collate_uint8, load_images


class _Pixels:
    """Slices of an `ImageSet` as uint8 tensors, whether it is held in memory or memory-mapped (a
    `datasets.Dataset`)."""

    def __init__(self, images: ImageSet):
        self.batches = ImageBatchDataset(ImageSet(pixels=images.pixels, num_skipped=0, source=images.source))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: slice) -> torch.Tensor:
        return self.batches.__getitems__(list(range(*index.indices(len(self)))))


class InMemoryImages:
    """A map-style `DataSource` over an `ImageSet`: a seeded shuffle per epoch, full batches only, split by accelerate.

    Its position is (epoch, batch) alone: `state_dict()` is `{}`, and resuming skips the first batches of the epoch by
    index (accelerate's `skip_first_batches`), without loading them.

    Args:
        images (`ImageSet`): the decoded images (see `ddpm_hub.data.load_images`).
        num_workers (`int`, defaults to 0): DataLoader worker processes (`--dataloader_num_workers`).
        identity (`DataIdentity`, *optional*): what the images are (their FID reference statistics' cache key).
    """

    def __init__(
        self,
        images: ImageSet,
        *,
        num_workers: int = 0,
        identity: DataIdentity | Callable[[], DataIdentity] | None = None,
    ):
        self.images, self.num_workers = images, num_workers
        self._identity = identity
        self.description = images.source
        self.num_skipped = images.num_skipped
        self.label_names = images.label_names
        self.num_classes = images.num_classes
        first = images.pixels[:1] if torch.is_tensor(images.pixels) else images.pixels[:1]["pixels"]
        self.sample_shape = tuple(first.shape[1:])
        self.loader = self.accelerator = None

    @classmethod
    def load(
        cls,
        dataset_name: str | None = None,
        *,
        train_data_dir: str | None = None,
        dataset_config_name: str | None = None,
        cache_dir: str | None = None,
        image_column: str | None = None,
        max_train_samples: int | None = None,
        center_crop: bool = False,
        num_workers: int = 0,
        **decoding,
    ) -> InMemoryImages:
        """Decode a data set once: `load_images` with these arguments (it caches the decoded pixels for the other
        processes of a run); the identity of the set is worked out only when asked for (`identity()`)."""
        named = dict(dataset_config_name=dataset_config_name, train_data_dir=train_data_dir, cache_dir=cache_dir)
        images = load_images(
            dataset_name, **named, image_column=image_column, max_train_samples=max_train_samples,
            center_crop=center_crop, **decoding,
        )  # fmt: skip
        identity = functools.partial(
            data_identity, dataset_name, train_data_dir, dataset_config_name, cache_dir, image_column=image_column,
            max_images=max_train_samples, center_crop=center_crop,
        )  # fmt: skip
        return cls(images, num_workers=num_workers, identity=identity)

    def identity(self) -> DataIdentity:
        """What these images are (their FID reference statistics' cache key); worked out once, when first asked."""
        if self._identity is None:
            raise ValueError(f"{self.description} has no identity to key reference statistics by.")
        if callable(self._identity):
            self._identity = self._identity()
        return self._identity

    def __len__(self) -> int:
        return len(self.images)

    def num_batches(self, batch_size: int, num_processes: int) -> int:
        return len(self.images) // (batch_size * num_processes)

    def make_loader(self, accelerator: Accelerator, batch_size: int, seed: int) -> None:
        loader = torch.utils.data.DataLoader(
            ImageBatchDataset(self.images),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,  # equal, static batch shapes: no recompiles, even DDP shards
            collate_fn=collate_uint8,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(seed),  # iterators draw from it, not from the global RNG
            pin_memory=torch.cuda.is_available(),
        )
        # With accelerate's seedable sampler the shuffle order is a function of (seed, epoch).
        self.accelerator, self.loader = accelerator, accelerator.prepare(loader)

    def epoch_batches(self, epoch: int, skip_batches: int) -> Iterable[Any]:
        self.loader.set_epoch(epoch)
        if skip_batches:
            return self.accelerator.skip_first_batches(self.loader, skip_batches)
        return self.loader

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the position is (epoch, batch), restored by `epoch_batches`

    def to_model_input(self, samples: torch.Tensor, random_flip: bool) -> torch.Tensor:
        return augment(samples, random_flip)

    def reference_images(self, count: int | None) -> Any:
        pixels = self.images.pixels
        if torch.is_tensor(pixels):
            return pixels[:count]
        view = _Pixels(self.images)
        return view if count is None or count >= len(view) else view[0:count]
