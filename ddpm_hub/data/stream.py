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
  batches per epoch (the least any reader can count on), so DDP's collectives stay in step: each reader takes
  exactly its share of samples, and a reader that falls short (unreadable images skipped, or a manifest that counts
  more images than the shards hold) starts its own split again from the beginning, in the same order, as torch's
  `DistributedSampler` pads; one warning says how many samples each process repeated and why, and a split with no
  readable image at all is an error. Without a manifest an epoch is one pass over this process's shards and the
  run needs `--max_train_steps` (with several processes, give them shards of equal size).
- **Exact resume**: datasets' `IterableDataset.state_dict` records shard and example positions but drops the
  shuffle buffer's content on resume (its documented limitation), so a resumed run would not see the same next
  samples. Instead each reader's position is `(epoch, examples taken)` (and its counts of samples yielded, images
  skipped and samples repeated), and resuming replays the reader's seeded stream up to that point *without
  decoding* (reading bytes only, the cost of one pass over the reader's part of the current epoch at most).
  torchdata's `StatefulDataLoader` keeps these per-worker positions and which worker delivers the next batch, and
  its state is what every checkpoint saves (`StreamedImages.state_dict`).
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
from typing import Any, Protocol

import numpy as np
import torch

from .identity import DataIdentity, pixels_identity, shards_identity
from .images import augment, open_image, resize_and_crop, to_model_mode
from .shards import ShardSet

logger = logging.getLogger(__name__)
# torchdata's StatefulDataLoader calls a torch API that torch 2.13 deprecates, once per loader: not the user's concern.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

DEFAULT_SHUFFLE_BUFFER = 1000
REFERENCE_IMAGES = 10_000  # FID references of a stream: its first 10k images (`ddpm-hub eval --reference SHARDS` too)
_READ_BATCH = 64  # examples datasets hands over at a time while reading one shard


class StreamMember(Protocol):
    """A member of every shard sample that a stream trains on instead of the image (latent shards' latents: see
    `ddpm_hub.latents.source.LatentMember`). Its images stay the FID references."""

    column: str  # the member's name after the sample's key, e.g. "latents.safetensors"
    sample_shape: tuple[int, int, int]  # (C, H, W) of one training sample as the model sees it
    description: str  # added to the stream's description, e.g. "as latents of the VAE ..."

    def decode(self, payload: bytes) -> torch.Tensor:
        """One sample's member, as the batches hold it (in a DataLoader worker)."""
        ...

    def to_model_input(self, samples: torch.Tensor, random_flip: bool) -> torch.Tensor:
        """A batch of decoded members -> model input, on the device (the step's first random draw)."""
        ...


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
    """One `datasets.IterableDataset`, read one data shard at a time, as `{"key", "image", "label", "member"}`
    examples (`member`: the raw bytes of `member_column`, a member decoded instead of the image, else `None`).

    A data shard that cannot be read to its end (a truncated or corrupt tar) ends with one more example whose
    `unreadable` says what was lost; the stream skips and counts it as an unreadable image, with a warning.
    `shard_names` (the tar files, in order) name the shard in that warning.
    """

    def __init__(
        self,
        dataset,
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        member_column: str | None = None,
        shard_names: list[str] | None = None,
    ):
        import datasets

        if dataset.features is None:
            dataset = dataset._resolve_features()
        self.image_column = _image_column(dataset.features, image_column)
        if isinstance(dataset.features[self.image_column], datasets.Image):
            dataset = dataset.cast_column(self.image_column, datasets.Image(decode=False))
        self.label_column, self.member_column = label_column, member_column
        self.dataset = dataset
        self.num_shards = dataset.num_shards
        self.shard_names = shard_names if shard_names is not None and len(shard_names) == self.num_shards else None

    def iter_shard(self, index: int) -> Iterator[dict[str, Any]]:
        shard = self.dataset.shard(num_shards=self.num_shards, index=index, contiguous=True)
        position = 0
        # `.iter` reads in this process: datasets' own worker split (in `__iter__`) is ours to do here.
        batches = iter(shard.iter(batch_size=_READ_BATCH))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as error:  # noqa: BLE001 (a truncated or corrupt shard: its rest is skipped and counted)
                name = self.shard_names[index] if self.shard_names else f"data shard {index}"
                lost = f"the rest of shard {name} after {position} samples ({type(error).__name__}: {error})"
                yield {"key": f"{index}/{name}", "image": None, "label": None, "member": None, "unreadable": lost}
                return
            for row in range(len(batch[self.image_column])):
                key = batch["__key__"][row] if "__key__" in batch else f"{index}/{position}"
                yield {
                    "key": f"{index}/{key}",
                    "image": batch[self.image_column][row],
                    "label": self._label(batch, row),
                    "member": batch[self.member_column][row] if self.member_column else None,
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
    shards: list[str], *, image_column: str | None = None, labelled: bool = False, member_column: str | None = None
) -> StreamReader:
    """A reader of WebDataset tars through datasets' `webdataset` builder (members `KEY.png`, `KEY.cls`, `KEY.json`,
    and a member decoded instead of the image, such as latent shards' `KEY.latents.safetensors`, read as
    `member_column`)."""
    import tarfile

    import datasets

    try:
        dataset = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train", streaming=True)
    except (tarfile.TarError, EOFError) as error:  # datasets reads the first shard's first samples for their features
        raise ValueError(
            f"the first shard {shards[0]} cannot be read ({type(error).__name__}: {error}); it is truncated or not a "
            "tar file: write it again with `ddpm-hub prepare`, or leave it out of --train_shards."
        ) from error
    label_column = None
    if labelled:
        label_column = next((name for name in ("cls", "json") if name in dataset.features), None)
        if label_column is None:
            raise ValueError("--class_conditional needs a .cls or .json label member in every shard sample.")
    if member_column is not None and member_column not in dataset.features:
        raise ValueError(f"The shards' samples have no {member_column} member; write them with ddpm-hub prepare.")
    from .shards import shard_name

    return StreamReader(
        dataset,
        image_column=image_column,
        label_column=label_column,
        member_column=member_column,
        shard_names=[shard_name(shard) for shard in shards],
    )


class ShardStream(torch.utils.data.IterableDataset):
    """Decoded uint8 samples of this process and DataLoader worker, in a seeded order; see the module docstring.

    Each sample is `{"pixels": uint8 (C, H, W), "label": int (-1 without), "key": str, "reader": int, "skipped": int,
    "repeated": int}` (the last two: this reader's unreadable images and repeated samples so far in the epoch).
    With `samples_per_reader`, every reader yields exactly that many samples an epoch (a short split starts again
    from its beginning); without it, one pass over its split.
    With a `member` (a `StreamMember`, e.g. latent shards' latents), `"member"`, the member decoded by it, replaces
    `"pixels"` (the image is not decoded).
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
        member: StreamMember | None = None,
        samples_per_reader: int | None = None,
    ):
        self.member = member
        self.reader, self.resolution, self.channels, self.center_crop = reader, resolution, channels, center_crop
        self.seed, self.shuffle_buffer_size, self.shuffle = seed, shuffle_buffer_size, shuffle
        self.rank, self.num_processes, self.endless = rank, num_processes, endless
        self.samples_per_reader = samples_per_reader
        self.epoch = 0
        self._start: dict[str, int] | None = None
        self._position = {"epoch": 0, "taken": 0, "yielded": 0, "skipped": 0, "repeated": 0}

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

    def _decode(self, example: dict[str, Any], rng: np.random.Generator, warn: bool = True) -> torch.Tensor | None:
        if example.get("unreadable"):
            if warn:
                logger.warning("Skipping %s.", example["unreadable"])
            return None
        if self.member is not None:
            try:
                return self.member.decode(example["member"])
            except Exception as error:  # noqa: BLE001 (a corrupt member is skipped and counted, as an image)
                if warn:
                    logger.warning("Skipping unreadable %s %s: %s", self.member.column, example["key"], error)
                return None
        try:
            image = to_model_mode(open_image(example["image"]), self.channels)
        except MemoryError:  # not the image's fault
            raise
        except Exception as error:  # noqa: BLE001 (any unreadable image is skipped and counted, as in memory)
            if warn:
                logger.warning("Skipping unreadable image %s: %s", example["key"], error)
            return None
        image = resize_and_crop(image, self.resolution, self.center_crop, rng)
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(array[None] if self.channels == 1 else array.transpose(2, 0, 1)))

    def _split(self, epoch: int, reader: int, readers: int) -> Iterator[tuple[dict[str, Any], bool]]:
        """`(example, repeated)` of this reader's split of `epoch` in its seeded order; with `samples_per_reader`,
        the same split again and again from its beginning once it has been read (`repeated` is then True)."""
        for again in itertools.count():
            examples = self._shuffled(
                self._raw(epoch, reader, readers), np.random.default_rng([self.seed, epoch, reader])
            )
            read = 0
            for example in examples:
                read += 1
                yield example, again > 0
            if self.samples_per_reader is None:
                return
            if not read:
                raise EmptySplitError(self._empty_message(epoch, reader, readers))

    def _empty_message(self, epoch: int, reader: int, readers: int) -> str:
        workers = readers // self.num_processes
        return (
            f"reader {reader} of {readers} (process {self.rank}, DataLoader worker {reader - self.rank * workers}) "
            f"found no readable image in its split of epoch {epoch}, although the manifest counts "
            f"{self.samples_per_reader} or more: its shards are empty or unreadable, or manifest.json is wrong "
            "(re-run `ddpm-hub prepare`)."
        )

    def _epoch_samples(self, epoch: int, reader: int, readers: int, **start: int) -> Iterator[dict[str, Any]]:
        """This reader's decoded samples of `epoch`, from the position `start` (`taken` examples read, `yielded`
        samples, `skipped` unreadable images of the split, `repeated` samples of its second or later pass)."""
        taken, skipped, repeated = start.get("taken", 0), start.get("skipped", 0), start.get("repeated", 0)
        yielded, quota = start.get("yielded", taken - skipped), self.samples_per_reader
        examples = self._split(epoch, reader, readers)
        collections.deque(itertools.islice(examples, taken), maxlen=0)  # resume: replay without decoding
        if quota is not None and yielded >= quota:
            return  # resumed at the end of this reader's epoch
        for example, again in examples:
            if again and not yielded:
                raise EmptySplitError(self._empty_message(epoch, reader, readers))
            taken += 1
            pixels = self._decode(example, np.random.default_rng([self.seed, epoch, reader, taken]), warn=not again)
            if pixels is None:
                skipped += int(not again)  # an image of the split, counted once
                continue
            yielded, repeated = yielded + 1, repeated + int(again)
            self._position = dict(epoch=epoch, taken=taken, yielded=yielded, skipped=skipped, repeated=repeated)
            label = example["label"]
            yield {
                "pixels" if self.member is None else "member": pixels,
                "label": -1 if label is None else label,
                "key": example["key"],
                "reader": reader,
                "skipped": skipped,
                "repeated": repeated,
            }
            if quota is not None and yielded >= quota:
                return

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader, readers = self._reader_index()
        start, self._start = self._start or {"epoch": self.epoch}, None
        # Set now, not at the first sample: StatefulDataLoader records a worker's state as soon as its iterator
        # exists, and a checkpoint before the worker's first batch of an epoch must resume in that epoch.
        self._position = {"taken": 0, "skipped": 0, "repeated": 0, **start}
        self._position.setdefault("yielded", self._position["taken"] - self._position["skipped"])
        return self._samples(reader, readers, dict(start))

    def _samples(self, reader: int, readers: int, start: dict[str, int]) -> Iterator[dict[str, Any]]:
        epoch = start.pop("epoch")
        while True:
            yielded = False
            for sample in self._epoch_samples(epoch, reader, readers, **start):
                yielded = True
                yield sample
            if not self.endless or not (yielded or start.get("taken")):
                return
            epoch, start = epoch + 1, {}


class EmptySplitError(ValueError):
    """A reader whose split of an epoch holds no readable image, although the manifest promises some."""


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
        member (`StreamMember`, *optional*): a member of every sample to train on instead of its image (latent
            shards' latents); it decodes the member and turns batches of it into model input.
        image_column (`str`, *optional*): the image column asked for (it keys the reference statistics).
        shards (`ShardSet`, *optional*): the resolved `--train_shards` (they key the FID reference cache).
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
        member: StreamMember | None = None,
        shards: ShardSet | None = None,
        image_column: str | None = None,
    ):
        self.reader, self.member, self.shards, self.image_column = reader, member, shards, image_column
        self.description = description if member is None else f"{description}, {member.description}"
        self.resolution, self.channels, self.center_crop = resolution, channels, center_crop
        self.shuffle_buffer_size, self.num_workers, self.shard_counts = shuffle_buffer_size, num_workers, shard_counts
        self.label_names = label_names
        self.sample_shape = (channels, resolution, resolution) if member is None else tuple(member.sample_shape)
        self._identity: DataIdentity | None = None
        self.last_keys: list[str] = []  # keys of the latest batch (for tests and debugging)
        self._skipped_before, self._skipped_now, self._repeated_now = 0, {}, {}
        self._repeats_reported = False
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
        per_reader = self._batches_per_reader(batch_size, num_processes)
        return None if per_reader is None else self._readers_per_process() * per_reader

    def _batches_per_reader(self, batch_size: int, num_processes: int) -> int | None:
        if self.shard_counts is None:
            return None
        readers = num_processes * self._readers_per_process()
        counts = sorted(self.shard_counts)
        least = sum(counts[: len(counts) // readers]) if len(counts) >= readers else sum(counts) // readers
        if least < batch_size:
            from ..errors import SetupError

            raise SetupError(
                f"{self.description} has {least} images for some of its {readers} readers ({num_processes} processes x "
                f"{self._readers_per_process()} workers), fewer than one batch of {batch_size}; lower "
                "--train_batch_size or --dataloader_num_workers."
            )
        return least // batch_size

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
        per_reader = self._batches_per_reader(batch_size, processes)
        self._dataset = ShardStream(
            self.reader,
            resolution=self.resolution,
            channels=self.channels,
            center_crop=self.center_crop,
            seed=seed,
            shuffle_buffer_size=self.shuffle_buffer_size,
            rank=accelerator.process_index,
            num_processes=processes,
            member=self.member,
            # Exactly the manifest's share per reader, a short one refilled: every process yields the same batches.
            samples_per_reader=None if per_reader is None else per_reader * batch_size,
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
        try:
            collections.deque(itertools.islice(batches, to_skip), maxlen=0)
            for batch in batches:
                self._batches_done += 1
                self._count(batch)
                last = self._num_batches is not None and self._batches_done >= self._num_batches
                if last:  # every process is here at once (the same batch count): a collective is in step
                    self._report_repeats(epoch)
                yield self._to_device(batch)
                if last:
                    break
        except EmptySplitError as error:  # bad data: one line, exit status 2 (a DataLoader worker's is a traceback)
            from ..errors import SetupError

            message = str(error).strip().splitlines()[-1].split("EmptySplitError: ", 1)[-1]
            raise SetupError(f"{self.description}: {message}") from None
        self._skipped_before, self._skipped_now, self._repeated_now = self.num_skipped, {}, {}

    def _count(self, batch: dict[str, Any]) -> None:
        self.last_keys = list(batch["key"])
        for reader, skipped, repeated in zip(*(batch[key].tolist() for key in ("reader", "skipped", "repeated"))):
            self._skipped_now[reader] = max(self._skipped_now.get(reader, 0), skipped)
            self._repeated_now[reader] = max(self._repeated_now.get(reader, 0), repeated)

    def _report_repeats(self, epoch: int) -> None:
        """Say which processes repeated samples in `epoch` to give the manifest's batch count, and why: one warning
        the first time, a line of the log after that. A collective with several processes."""
        own = {"repeated": sum(self._repeated_now.values()), "skipped": sum(self._skipped_now.values())}
        processes = [own]
        if self._accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            processes = gather_object([own])
        short = [(rank, counts) for rank, counts in enumerate(processes) if counts["repeated"]]
        if not short:
            return
        parts = "; ".join(
            f"process {rank} repeated {counts['repeated']} sample{'s' * (counts['repeated'] > 1)} ("
            + (
                f"{counts['skipped']} unreadable image{'s' * (counts['skipped'] > 1)} skipped"
                if counts["skipped"]
                else "no image skipped: manifest.json counts more images than the shards hold, re-run `ddpm-hub "
                "prepare`"
            )
            + ")"
            for rank, counts in short
        )
        log = logger.info if self._repeats_reported else logger.warning
        self._repeats_reported = True
        log(
            "%s gave fewer samples than its manifest counts in epoch %d: %s. A short reader starts its own split "
            "again from the beginning, so that every process yields the manifest's %d batches an epoch and the "
            "processes stay in step.",
            self.description,
            epoch,
            parts,
            self._num_batches,
        )

    def _to_device(self, batch: dict[str, Any]):
        device = self._accelerator.device
        pixels = batch["pixels" if self.member is None else "member"].to(device, non_blocking=True)
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
        if self.member is not None:
            return self.member.to_model_input(samples, random_flip)
        return augment(samples, random_flip)

    def reference_images(self, count: int | None = None) -> torch.Tensor:
        """The first `count` (default `REFERENCE_IMAGES`) images of the stream in shard order (centre crops), for FID
        references: read by a stream of their own, so the training stream's position is not touched."""
        return first_images(self.reader, count or REFERENCE_IMAGES, resolution=self.resolution, channels=self.channels)

    def identity(self) -> DataIdentity:
        """What `reference_images` reads: shards by their names and sha256s, as `ddpm-hub eval --reference SHARDS`
        keys them (so the two share one cache); a `datasets` stream, which has no cheap fingerprint, by its first
        images' pixels (read here, once)."""
        if self._identity is None:
            if self.shards is not None:
                self._identity = shards_identity(self.shards, image_column=self.image_column)
            else:
                pixels = self.reference_images()
                self._identity = pixels_identity(self.description, pixels, image_column=self.image_column)
        return self._identity


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
    train_shards: list[str] | str | ShardSet | None = None,
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
    member: StreamMember | None = None,
    verify: bool = False,
) -> StreamedImages:
    """The streamed `DataSource` of `--train_shards` or `--dataset_name --streaming`; raises `ValueError` in one
    sentence for a missing shard, a pattern matching nothing, shards that do not match their manifest (names and
    sizes; sha256s too with `verify`), an unreachable URL or an unknown data set.

    `member` (shards only) trains on a member of every sample instead of its image, e.g. latent shards' latents
    (`ddpm_hub.latents.source.LatentMember`).
    """
    import datasets

    from .shards import shard_counts, shard_folder, verify_shards

    labelled = class_conditional or class_column is not None
    if train_shards:
        shard_set = ShardSet.resolve(train_shards)
        if verify:
            verify_shards(shard_set)
        shards, manifest = list(shard_set.paths), shard_set.manifest
        label_names = manifest.get("label_names") if manifest is not None else None
        if labelled and label_names is None:
            raise ValueError(
                "--class_conditional with --train_shards needs the label names of a manifest.json beside the shards "
                "(ddpm-hub prepare writes it)."
            )
        column = member.column if member is not None else None
        reader = open_webdataset(shards, image_column=image_column, labelled=labelled, member_column=column)
        description = f"{len(shards)} shards of {shard_folder(shards[0])}"
        return StreamedImages(
            reader,
            description=description,
            resolution=resolution,
            channels=channels,
            center_crop=center_crop,
            shuffle_buffer_size=shuffle_buffer_size,
            num_workers=num_workers,
            shard_counts=shard_counts(shards, manifest),
            label_names=label_names if labelled else None,
            member=member,
            shards=shard_set,
            image_column=image_column,
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
        image_column=image_column,
    )
