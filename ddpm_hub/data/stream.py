"""Streamed training data: WebDataset tar shards (`--train_shards`) or a `datasets` stream
(`--dataset_name --streaming`).

Nothing is decoded before the first step: DataLoader workers read, decode (`open_image` + `to_model_mode`, the
same conversion as the in-memory path), resize and crop each sample, and batches arrive as today's uint8 batches,
so the step and the device-side augmentation are unchanged.

What does what, and why:

- **Reading** is `datasets`' own streaming: its `webdataset` builder reads the tars (local, or any fsspec URL such
  as `hf://`), `load_dataset(..., streaming=True)` reads Hub and local data sets (parquet, image folders, saved
  sets). `IterableDataset.shard` gives one data shard at a time; no second library.
- **Splitting**: an epoch's shard order is a seeded permutation of all shards (it changes every epoch); reader
  `g = rank * workers + worker` of `G = processes * workers` takes every G-th shard of it, so processes and workers
  read disjoint shards (what `split_dataset_by_node` and datasets' worker split do, but with one permutation for
  all readers, which keeps the split disjoint after shuffling). With fewer shards than readers, every reader reads
  all shards and keeps every G-th sample (still disjoint, but each sample is read G times), with a warning.
- **Shuffling**: shard order per epoch plus a seeded shuffle buffer (`--shuffle_buffer_size`) per reader.
- **Length**: with a `manifest.json` (written by `ddpm-hub prepare`) every process yields the same number of
  batches per epoch (the least any reader can count on); without one an epoch is one pass over this process's
  shards and the run needs `--max_train_steps` (with several processes, give them shards of equal size).
- **Exact resume**: datasets' `IterableDataset.state_dict` records shard and example positions but drops the
  shuffle buffer's content on resume (its documented limitation), so a resumed run would not see the same next
  samples. Instead each reader's position is `(epoch, samples taken)`, and resuming replays the reader's seeded
  stream up to that point *without decoding* (reading bytes only, the cost of one pass over the reader's part of
  the current epoch at most). torchdata's `StatefulDataLoader` keeps these per-worker positions and which worker
  delivers the next batch, and its state is what every checkpoint saves (`StreamedImages.state_dict`).
  accelerate's `use_stateful_dataloader` would do the same, but `accelerator.prepare` of an iterable data set
  either dispatches batches from process 0 or has every process read everything and keep a slice; here every
  process reads only its own shards, so the loader is not prepared and batches are moved to the device here.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .images import augment, open_image, resize_and_crop, to_model_mode

logger = logging.getLogger(__name__)
# torchdata's StatefulDataLoader calls a torch API that torch 2.13 deprecates, once per loader: not the user's concern.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

DEFAULT_SHUFFLE_BUFFER = 1000
_READ_BATCH = 64  # examples datasets hands over at a time while reading one shard


def _image_column(features, wanted: str | None) -> str:
    import datasets

    if wanted is not None:
        if wanted not in features:
            raise ValueError(
                f"--image_column {wanted!r} is not a column of the stream; its columns are {list(features)}."
            )
        return wanted
    images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if "image" in features:
        return "image"
    if images:
        return images[0]
    raise ValueError(f"The stream has no image column (columns: {list(features)}); pass --image_column.")


class StreamReader:
    """One `datasets.IterableDataset`, read one data shard at a time, as `{"key", "image", "label", "latents"}`
    examples (`latents`: the raw bytes of `latents_column`, the latent statistics of latent shards, else `None`)."""

    def __init__(
        self,
        dataset,
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        latents_column: str | None = None,
    ):
        import datasets

        if dataset.features is None:
            dataset = dataset._resolve_features()
        self.image_column = _image_column(dataset.features, image_column)
        if isinstance(dataset.features[self.image_column], datasets.Image):
            dataset = dataset.cast_column(self.image_column, datasets.Image(decode=False))
        self.label_column, self.latents_column = label_column, latents_column
        self.dataset = dataset
        self.num_shards = dataset.num_shards

    def iter_shard(self, index: int) -> Iterator[dict[str, Any]]:
        shard = self.dataset.shard(num_shards=self.num_shards, index=index, contiguous=True)
        position = 0
        # `.iter` reads in this process: datasets' own worker split (in `__iter__`) is ours to do here.
        for batch in shard.iter(batch_size=_READ_BATCH):
            for row in range(len(batch[self.image_column])):
                key = batch["__key__"][row] if "__key__" in batch else f"{index}/{position}"
                yield {
                    "key": f"{index}/{key}",
                    "image": batch[self.image_column][row],
                    "label": self._label(batch, row),
                    "latents": batch[self.latents_column][row] if self.latents_column else None,
                }
                position += 1

    def _label(self, batch, row) -> int | None:
        if self.label_column is None:
            return None
        value = batch[self.label_column][row]
        if isinstance(value, dict):  # a WebDataset .json member
            value = value.get("label", value.get("cls"))
        return None if value is None else int(value)


def open_webdataset(
    shards: list[str], *, image_column: str | None = None, labelled: bool = False, latents_column: str | None = None
) -> StreamReader:
    """A reader of WebDataset tars through datasets' `webdataset` builder (members `KEY.png`, `KEY.cls`, `KEY.json`,
    and `KEY.latents.safetensors` in latent shards, read as `latents_column`)."""
    import datasets

    dataset = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train", streaming=True)
    label_column = None
    if labelled:
        label_column = next((name for name in ("cls", "json") if name in dataset.features), None)
        if label_column is None:
            raise ValueError("--class_conditional needs a .cls or .json label member in every shard sample.")
    if latents_column is not None and latents_column not in dataset.features:
        raise ValueError(
            f"The latent shards' samples have no {latents_column} member; write them with ddpm-hub prepare."
        )
    return StreamReader(dataset, image_column=image_column, label_column=label_column, latents_column=latents_column)


class ShardStream(torch.utils.data.IterableDataset):
    """Decoded uint8 samples of this process and DataLoader worker, in a seeded order; see the module docstring.

    Each sample is `{"pixels": uint8 (C, H, W), "label": int (-1 without), "key": str, "reader": int, "skipped": int}`;
    with `latents=True` (latent shards) `"latents"`, the sample's latent statistics (F, M, C, h, w) as
    `ddpm_hub.latents.shards.read_sample_latents` gives them, replaces `"pixels"` (the image is not decoded).
    `state_dict()` (in the worker) is this reader's position; `load_state_dict` makes the next `__iter__` resume there.
    """

    def __init__(
        self,
        reader: StreamReader,
        *,
        resolution: int,
        channels: int = 3,
        center_crop: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
        shuffle: bool = True,
        rank: int = 0,
        num_processes: int = 1,
        endless: bool = False,
        latents: bool = False,
    ):
        self.latents = latents
        self.reader, self.resolution, self.channels, self.center_crop = reader, resolution, channels, center_crop
        self.seed, self.shuffle_buffer_size, self.shuffle = seed, shuffle_buffer_size, shuffle
        self.rank, self.num_processes, self.endless = rank, num_processes, endless
        self.epoch = 0
        self._start: dict[str, int] | None = None
        self._position = {"epoch": 0, "taken": 0, "skipped": 0}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return dict(self._position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._start = dict(state)

    def _reader_index(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.num_processes * workers

    def _raw(self, epoch: int, reader: int, readers: int) -> Iterator[dict[str, Any]]:
        shards = self.reader.num_shards
        order = np.random.default_rng([self.seed, epoch]).permutation(shards) if self.shuffle else np.arange(shards)
        if shards >= readers:
            for index in order[reader::readers]:
                yield from self.reader.iter_shard(int(index))
            return
        examples = itertools.chain.from_iterable(self.reader.iter_shard(int(index)) for index in order)
        yield from itertools.islice(examples, reader, None, readers)

    def _shuffled(self, examples: Iterator[dict[str, Any]], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """A shuffle buffer: keep `shuffle_buffer_size` examples, hand out a random one as each new one arrives."""
        if not self.shuffle or self.shuffle_buffer_size <= 1:
            yield from examples
            return
        buffer: list[dict[str, Any]] = []
        for example in examples:
            if len(buffer) < self.shuffle_buffer_size:
                buffer.append(example)
                continue
            index = int(rng.integers(len(buffer)))
            buffer[index], example = example, buffer[index]
            yield example
        rng.shuffle(buffer)
        yield from buffer

    def _decode(self, example: dict[str, Any], rng: np.random.Generator) -> torch.Tensor | None:
        if self.latents:
            from ..latents.shards import read_sample_latents

            try:
                return read_sample_latents(example["latents"])
            except Exception as error:  # noqa: BLE001 (a corrupt latents member is skipped and counted, as an image)
                logger.warning("Skipping unreadable latents %s: %s", example["key"], error)
                return None
        try:
            image = to_model_mode(open_image(example["image"]), self.channels)
        except Exception as error:  # noqa: BLE001 (any unreadable image is skipped and counted, as in memory)
            logger.warning("Skipping unreadable image %s: %s", example["key"], error)
            return None
        image = resize_and_crop(image, self.resolution, self.center_crop, rng)
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(array[None] if self.channels == 1 else array.transpose(2, 0, 1)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader, readers = self._reader_index()
        start, self._start = self._start or {"epoch": self.epoch, "taken": 0, "skipped": 0}, None
        epoch, taken, skipped = start["epoch"], start["taken"], start["skipped"]
        while True:
            examples = self._shuffled(
                self._raw(epoch, reader, readers), np.random.default_rng([self.seed, epoch, reader])
            )
            collections.deque(itertools.islice(examples, taken), maxlen=0)  # resume: replay without decoding
            yielded = False
            for example in examples:
                taken += 1
                pixels = self._decode(example, np.random.default_rng([self.seed, epoch, reader, taken]))
                if pixels is None:
                    skipped += 1
                    continue
                self._position = {"epoch": epoch, "taken": taken, "skipped": skipped}
                yielded = True
                label = example["label"]
                yield {
                    "latents" if self.latents else "pixels": pixels,
                    "label": -1 if label is None else label,
                    "key": example["key"],
                    "reader": reader,
                    "skipped": skipped,
                }
            if not self.endless or not (yielded or taken):
                return
            epoch, taken = epoch + 1, 0


def default_num_workers(num_local_processes: int = 1) -> int:
    """Decoding workers per process for a stream: the cores of this machine shared by its processes, one left to the
    training process itself, at least 1 and at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(1, num_local_processes) - 1))


class StreamedImages:
    """A `DataSource` (see `ddpm_hub.training.seams`) over a `ShardStream`: its split, batches, position, references.

    Args:
        reader (`StreamReader`): where the samples come from.
        description (`str`): for logs and the model card.
        resolution, channels, center_crop: what every sample is converted to.
        shuffle_buffer_size (`int`): examples each reader shuffles among (0 or 1: none).
        num_workers (`int`): DataLoader workers per process (0: decode in the training process).
        shard_counts (`list[int]`, *optional*): images per shard (from the manifest); without it the length of an
            epoch is unknown and the stream runs on until `--max_train_steps`.
        label_names (`list[str]`, *optional*): class names by id for a labelled set.
        latents (`bool`, defaults to `False`): batches are the latent statistics of latent shards, not pixels (see
            `ddpm_hub.latents.source.StreamedLatents`, which turns them into model input).
    """

    def __init__(
        self,
        reader: StreamReader,
        *,
        description: str,
        resolution: int,
        channels: int = 3,
        center_crop: bool = False,
        shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
        num_workers: int = 0,
        shard_counts: list[int] | None = None,
        label_names: list[str] | None = None,
        latents: bool = False,
    ):
        self.reader, self.description, self.latents = reader, description, latents
        self.resolution, self.channels, self.center_crop = resolution, channels, center_crop
        self.shuffle_buffer_size, self.num_workers, self.shard_counts = shuffle_buffer_size, num_workers, shard_counts
        self.label_names = label_names
        self.sample_shape = (channels, resolution, resolution)
        self.last_keys: list[str] = []  # keys of the latest batch (for tests and debugging)
        self._skipped_before, self._skipped_now = 0, {}
        self._dataset: ShardStream | None = None
        self._loader = None
        self._epoch, self._batches_done, self._resume = 0, 0, None

    @property
    def num_classes(self) -> int:
        return len(self.label_names) if self.label_names is not None else 0

    @property
    def source(self) -> str:  # as `ImageSet.source`, for the training log and the model card
        return self.description

    @property
    def num_images(self) -> int | None:
        return sum(self.shard_counts) if self.shard_counts is not None else None

    @property
    def num_skipped(self) -> int:
        return self._skipped_before + sum(self._skipped_now.values())

    def _readers_per_process(self) -> int:
        return max(1, self.num_workers)

    def num_batches(self, batch_size: int, num_processes: int) -> int | None:
        """Batches each process yields in every epoch: the least any process can count on (readers drop partial
        batches; the shortest reader decides), or `None` without a manifest."""
        if self.shard_counts is None:
            return None
        readers = num_processes * self._readers_per_process()
        counts = sorted(self.shard_counts)
        least = sum(counts[: len(counts) // readers]) if len(counts) >= readers else sum(counts) // readers
        if least < batch_size:
            from ..training.errors import SetupError

            raise SetupError(
                f"{self.description} has {least} images for some of its {readers} readers ({num_processes} processes x "
                f"{self._readers_per_process()} workers), fewer than one batch of {batch_size}; lower "
                "--train_batch_size or --dataloader_num_workers."
            )
        return self._readers_per_process() * (least // batch_size)

    def make_loader(self, accelerator, batch_size: int, seed: int) -> None:
        processes, readers = accelerator.num_processes, accelerator.num_processes * self._readers_per_process()
        shards = self.reader.num_shards
        if shards < readers:
            logger.warning(
                "%d shards for %d processes x %d workers = %d readers: every reader reads all shards and keeps every "
                "%d-th sample, so each image is read %d times. Write at least %d shards (ddpm-hub prepare "
                "--shard_size) or use fewer --dataloader_num_workers.",
                shards,
                processes,
                self._readers_per_process(),
                readers,
                readers,
                readers,
                readers,
            )
        elif shards % readers:
            logger.warning(
                "%d shards do not divide among %d readers (%d processes x %d workers): some read one shard more, "
                "and an epoch ends with the shortest. Use a multiple of %d shards to see every image every epoch.",
                shards,
                readers,
                processes,
                self._readers_per_process(),
                readers,
            )
        self._accelerator, self._batch_size, self._seed = accelerator, batch_size, seed
        self._num_batches = self.num_batches(batch_size, processes)
        self._dataset = ShardStream(
            self.reader,
            resolution=self.resolution,
            channels=self.channels,
            center_crop=self.center_crop,
            seed=seed,
            shuffle_buffer_size=self.shuffle_buffer_size,
            rank=accelerator.process_index,
            num_processes=processes,
            latents=self.latents,
        )

    def _new_loader(self):
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(
            self._dataset,
            batch_size=self._batch_size,
            drop_last=True,  # equal, static batch shapes, as for in-memory data
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            # Its worker seeds come from here, never from the global RNG, whose draws (noise, timesteps, flips)
            # exact resume restores: a loader made at resume time must not shift them.
            generator=torch.Generator().manual_seed(self._seed),
        )

    def epoch_batches(self, epoch: int, skip_batches: int) -> Iterator[Any]:
        """This process's batches of `epoch`, from the saved position when resuming (else after `skip_batches`)."""
        resume, self._resume = self._resume, None
        self._dataset.set_epoch(epoch)
        loader, to_skip, done = self._new_loader(), 0, 0
        if resume is not None and resume["epoch"] == epoch:
            done = resume["batches"]
            if resume.get("loader") is not None:
                loader.load_state_dict(resume["loader"])
            else:
                to_skip = done
        elif skip_batches:
            logger.warning(
                "No saved stream position for epoch %d: skipping %d batches by reading them.", epoch, skip_batches
            )
            to_skip = done = skip_batches
        self._loader, self._epoch, self._batches_done = loader, epoch, done
        if self._num_batches is not None and done >= self._num_batches:
            return
        batches = iter(loader)
        collections.deque(itertools.islice(batches, to_skip), maxlen=0)
        for batch in batches:
            self._batches_done += 1
            for reader, skipped in zip(batch["reader"].tolist(), batch["skipped"].tolist()):
                self._skipped_now[reader] = max(self._skipped_now.get(reader, 0), skipped)
            self.last_keys = list(batch["key"])
            yield self._to_device(batch)
            if self._num_batches is not None and self._batches_done >= self._num_batches:
                break
        self._skipped_before, self._skipped_now = self.num_skipped, {}

    def _to_device(self, batch: dict[str, Any]):
        device = self._accelerator.device
        pixels = batch["latents" if self.latents else "pixels"].to(device, non_blocking=True)
        if self.label_names is None:
            return pixels
        return pixels, batch["label"].to(device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        """This run's stream position; a collective call with several processes (every process passes its own)."""
        own = {
            "epoch": self._epoch,
            "batches": self._batches_done,
            "loader": self._loader.state_dict() if self._loader is not None else None,
            "skipped": self.num_skipped,
            "num_workers": self.num_workers,
        }
        processes = [own]
        if self._accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            processes = gather_object([own])
        return {"num_processes": self._accelerator.num_processes, "processes": processes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        processes = state["processes"]
        if state["num_processes"] != self._accelerator.num_processes or processes[0]["num_workers"] != self.num_workers:
            # The run log's (train.log) and stderr's, once (only the first process logs warnings).
            logger.warning(
                "The checkpoint's stream position is of %d processes x %d workers, this run has %d x %d: resuming at "
                "the same batch of the epoch, but the samples are approximately, not exactly, those an uninterrupted "
                "run would see.",
                state["num_processes"],
                processes[0]["num_workers"],
                self._accelerator.num_processes,
                self.num_workers,
            )
            self._resume = {"epoch": processes[0]["epoch"], "batches": processes[0]["batches"], "loader": None}
            self._skipped_before = processes[0]["skipped"]
            return
        self._resume = processes[self._accelerator.process_index]
        self._skipped_before = self._resume["skipped"]

    def to_model_input(self, samples: torch.Tensor, random_flip: bool) -> torch.Tensor:
        return augment(samples, random_flip)

    def reference_images(self, count: int) -> torch.Tensor:
        """The first `count` images of the stream in shard order (centre crops), for FID references."""
        return first_images(self.reader, count or 10_000, resolution=self.resolution, channels=self.channels)


def first_images(reader: StreamReader, count: int, *, resolution: int, channels: int = 3) -> torch.Tensor:
    """uint8 (N, C, H, W): the first `count` readable images of `reader` in shard order, centre-cropped."""
    stream = ShardStream(reader, resolution=resolution, channels=channels, center_crop=True, shuffle=False)
    pixels = [sample["pixels"] for sample in itertools.islice(iter(stream), count)]
    if not pixels:
        raise ValueError("The stream holds no readable image.")
    return torch.stack(pixels)


def _datasets_stream(dataset_name: str, config_name: str | None, cache_dir: str | None):
    """`(IterableDataset, images per data shard or None)` of a Hub id, a local data set folder or a saved set."""
    from pathlib import Path

    import datasets

    saved = Path(dataset_name)
    if saved.is_dir() and ((saved / "dataset_dict.json").is_file() or (saved / "state.json").is_file()):
        loaded = datasets.load_from_disk(dataset_name)
        dataset = loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
        num_shards = max(1, min(len(dataset), 256))
        counts = [len(part) for part in np.array_split(np.arange(len(dataset)), num_shards)]  # as `shard` cuts
        return dataset.to_iterable_dataset(num_shards=num_shards), counts
    try:
        stream = datasets.load_dataset(dataset_name, config_name, split="train", streaming=True, cache_dir=cache_dir)
    except FileNotFoundError as error:
        raise ValueError(f"--dataset_name {dataset_name!r} was not found locally or on the Hub ({error}).") from error
    except (ConnectionError, OSError) as error:
        raise ValueError(f"--dataset_name {dataset_name!r} could not be streamed: {error}.") from error
    return stream, None


def open_streamed_images(
    *,
    train_shards: list[str] | str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    image_column: str | None = None,
    class_column: str | None = None,
    class_conditional: bool = False,
    cache_dir: str | None = None,
    resolution: int = 64,
    channels: int = 3,
    center_crop: bool = False,
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
    num_workers: int = 0,
    latents_column: str | None = None,
    source_class: type[StreamedImages] | None = None,
    **source_kwargs: Any,
) -> StreamedImages:
    """The streamed `DataSource` of `--train_shards` or `--dataset_name --streaming`; raises `ValueError` in one
    sentence for a missing shard, a pattern matching nothing, an unreachable URL or an unknown data set.

    Latent shards: `latents_column` names their latents member, and the source is `source_class(reader, ...,
    **source_kwargs)` (`ddpm_hub.latents.source.StreamedLatents`) instead of a `StreamedImages`.
    """
    import datasets

    from .shards import read_manifest, resolve_shards, shard_counts, shard_folder

    labelled = class_conditional or class_column is not None
    if train_shards:
        shards = resolve_shards(train_shards)
        manifest = read_manifest(shards)
        label_names = manifest.get("label_names") if manifest is not None else None
        if labelled and label_names is None:
            raise ValueError(
                "--class_conditional with --train_shards needs the label names of a manifest.json beside the shards "
                "(ddpm-hub prepare writes it)."
            )
        reader = open_webdataset(shards, image_column=image_column, labelled=labelled, latents_column=latents_column)
        description = f"{len(shards)} shards of {shard_folder(shards[0])}"
        return (source_class or StreamedImages)(
            reader,
            description=description,
            resolution=resolution,
            channels=channels,
            center_crop=center_crop,
            shuffle_buffer_size=shuffle_buffer_size,
            num_workers=num_workers,
            shard_counts=shard_counts(shards, manifest),
            label_names=label_names if labelled else None,
            **source_kwargs,
        )
    stream, counts = _datasets_stream(dataset_name, dataset_config_name, cache_dir)
    label_column, label_names = None, None
    if labelled:
        label_column = class_column or "label"
        feature = (stream.features or {}).get(label_column)
        if not isinstance(feature, datasets.ClassLabel):
            raise ValueError(
                f"--class_conditional on a stream needs a ClassLabel column {label_column!r} "
                "(its names are the classes)."
            )
        label_names = list(feature.names)
    reader = StreamReader(stream, image_column=image_column, label_column=label_column)
    return StreamedImages(
        reader,
        description=f"dataset {dataset_name} (streamed)",
        resolution=resolution,
        channels=channels,
        center_crop=center_crop,
        shuffle_buffer_size=shuffle_buffer_size,
        num_workers=num_workers,
        shard_counts=counts,
        label_names=label_names,
    )


def open_stream(data, resolution: int, channels: int, accelerator, **latent_shards: Any) -> StreamedImages:
    """The streamed source of a training run's `DataConfig` (`--train_shards`, or `--dataset_name --streaming`);
    `latent_shards` are `open_streamed_images`' arguments for latent shards."""
    workers = data.dataloader_num_workers
    if workers is None:
        workers = default_num_workers(int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
    return open_streamed_images(
        train_shards=data.train_shards,
        dataset_name=data.dataset_name,
        dataset_config_name=data.dataset_config_name,
        image_column=data.image_column,
        class_column=data.class_column,
        class_conditional=data.class_conditional,
        cache_dir=data.cache_dir,
        resolution=resolution,
        channels=channels,
        center_crop=data.center_crop,
        shuffle_buffer_size=data.shuffle_buffer_size,
        num_workers=workers,
        **latent_shards,
    )
