"""The Trainer through its public API (ddpm_hub/training/): cleanup on every exit path, and the two seams
(`DataSource`, `Step`) used by a data source of unknown length that keeps its own resume position."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import TINY, metrics_log
from tqdm.auto import tqdm

from ddpm_hub.arguments import parse_config
from ddpm_hub.config import CONFIG_TYPES
from ddpm_hub.hub import HubPublisher
from ddpm_hub.train_step import make_train_step
from ddpm_hub.training import DataSource, InMemoryImages, Step, Trainer, TrainState

torch.set_num_threads(1)


def configs(*args: str):
    return parse_config(CONFIG_TYPES, [*TINY, *args])


class Broken(RuntimeError):
    pass


class StepThatBreaks:
    """A `Step`: the real TrainStep, which raises on its `at`-th call (a bug in a new step, a device error)."""

    def __init__(self, inner: Step, at: int):
        self.inner, self.at, self.calls = inner, at, 0
        self.model = inner.model

    def __call__(self, samples, class_labels):
        self.calls += 1
        if self.calls == self.at:
            raise Broken(f"step {self.at} broke")
        return self.inner(samples, class_labels)


class RecordingPublisher(HubPublisher):
    """A real publisher (never asked to upload here) that records being closed."""

    closed = 0

    def close(self) -> None:
        RecordingPublisher.closed += 1
        super().close()


def test_an_error_inside_the_loop_closes_the_progress_bar_trackers_and_publisher(tmp_path, monkeypatch):
    out = tmp_path / "broken"
    monkeypatch.setattr(
        HubPublisher,
        "create",
        classmethod(lambda cls, output_dir, *a, **k: RecordingPublisher(None, "me/run", output_dir)),
    )
    RecordingPublisher.closed = 0
    model, data, run, hub = configs(
        "--output_dir", str(out), "--max_train_steps", "4", "--logger", "tensorboard", "--push_to_hub"
    )  # fmt: skip
    steps = []

    def breaking_step(*args) -> Step:
        steps.append(StepThatBreaks(make_train_step(*args), at=2))
        return steps[-1]

    trainer = Trainer(model, data, run, hub, step_factory=breaking_step)
    with pytest.raises(Broken, match="step 2 broke"):
        trainer.run()

    assert steps[0].calls == 2 and trainer.state.step == 1  # it did break inside the loop, after one step
    assert trainer.progress.disable and trainer.progress not in getattr(tqdm, "_instances", set())
    (tracker,) = trainer.accelerator.trackers
    assert tracker.name == "tensorboard" and tracker.writer.all_writers is None  # SummaryWriter.close() ran
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert RecordingPublisher.closed == 1


def test_an_error_in_setup_closes_the_publisher(tmp_path, monkeypatch):
    monkeypatch.setattr(
        HubPublisher,
        "create",
        classmethod(lambda cls, output_dir, *a, **k: RecordingPublisher(None, "me/run", output_dir)),
    )
    RecordingPublisher.closed = 0
    model, data, run, hub = configs("--output_dir", str(tmp_path / "out"), "--push_to_hub")

    class NoData(InMemoryImages):
        def num_batches(self, batch_size, num_processes):
            raise Broken("no data today")

    class Failing(Trainer):
        def load_data(self):
            return NoData(super().load_data().images)

    with pytest.raises(Broken, match="no data today"):
        Failing(model, data, run, hub).run()
    assert RecordingPublisher.closed == 1


class Stream:
    """A `DataSource` of unknown length over in-memory images: passes of 5 batches in a seeded order, whose
    position within a pass is its own state (as a streamed data set's iterator state would be)."""

    def __init__(self, images: InMemoryImages, batches_per_pass: int = 5):
        self.images, self.batches_per_pass = images, batches_per_pass
        self.description, self.num_skipped = "a test stream", 0
        self.label_names, self.num_classes, self.sample_shape = None, 0, images.sample_shape
        self.position, self.restored = 0, None
        self.epochs_started: list[tuple[int, int]] = []

    def num_batches(self, batch_size, num_processes):
        return None

    def make_loader(self, accelerator, batch_size, seed):
        self.device, self.batch_size, self.seed = accelerator.device, batch_size, seed

    def epoch_batches(self, epoch, skip_batches):
        assert skip_batches == 0  # the position is in the state, not an index
        self.epochs_started.append((epoch, self.position))
        pixels = self.images.images.pixels
        order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(self.seed + epoch))
        while self.position < self.batches_per_pass:
            rows = order[self.position * self.batch_size : (self.position + 1) * self.batch_size]
            self.position += 1
            yield pixels[rows].to(self.device)
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.restored = state
        self.position = state.get("position", 0)

    def to_model_input(self, samples, random_flip):
        return self.images.to_model_input(samples, random_flip)

    def reference_images(self, count):
        return self.images.reference_images(count)


class StreamTrainer(Trainer):
    def load_data(self) -> DataSource:
        return Stream(super().load_data())


def test_a_data_source_of_unknown_length_trains_by_max_train_steps_and_resumes_from_its_state(tmp_path):
    out = tmp_path / "stream"
    common = ["--output_dir", str(out), "--checkpointing_steps", "3", "--no_use_ema"]
    first = StreamTrainer(*configs(*common, "--max_train_steps", "7"))
    first.run()
    assert isinstance(first.data, DataSource)
    # Passes of 5 batches until step 7: epoch 0 (steps 1-5), epoch 1 (steps 6-7).
    assert first.data.epochs_started == [(0, 0), (1, 0)]
    assert [row["epoch"] for row in metrics_log(out) if "epoch_seconds" in row] == [0, 1]
    saved = json.loads((out / "checkpoint-6" / "training_state.json").read_text())
    assert saved["data_state"] == {"position": 1} and saved["epoch"] == 1 and saved["steps_per_epoch"] is None
    assert json.loads((out / "training_config.json").read_text())["steps_per_epoch"] == "unknown"
    assert (out / "model_index.json").is_file()

    resumed = StreamTrainer(*configs(*common, "--max_train_steps", "9", "--resume_from_checkpoint", "checkpoint-6"))
    resumed.run()
    assert resumed.data.restored == {"position": 1}
    assert resumed.data.epochs_started == [(1, 1)]  # the rest of epoch 1, from its own position
    assert resumed.state.step == 9 and (out / "checkpoint-9").is_dir()


def test_a_data_source_of_unknown_length_needs_max_train_steps(tmp_path):
    trainer = StreamTrainer(*configs("--output_dir", str(tmp_path / "out"), "--num_epochs", "2"))
    with pytest.raises(ValueError, match="not known in advance; give the run's length with --max_train_steps"):
        trainer.run()


def test_construction_has_no_side_effects(tmp_path):
    out = tmp_path / "not-yet"
    trainer = Trainer(*configs("--output_dir", str(out)))
    assert not out.exists() and isinstance(trainer.state, TrainState) and trainer.state.step == 0


def test_in_memory_images_are_a_data_source(tmp_path):
    from ddpm_hub.data import load_images

    images = InMemoryImages(load_images("shapes", resolution=16, max_train_samples=20))
    assert isinstance(images, DataSource)
    assert images.num_batches(8, 1) == 2 and images.num_batches(8, 2) == 1 and images.state_dict() == {}
    assert images.sample_shape == (3, 16, 16) and images.label_names is None and images.num_classes == 0
    reference = images.reference_images(None)
    assert reference.dtype == torch.uint8 and tuple(reference.shape) == (20, 3, 16, 16)
    model_input = images.to_model_input(reference[:4], random_flip=False)
    assert model_input.min() >= -1 and model_input.max() <= 1 and model_input.dtype == torch.float32


def test_the_schedule_says_what_side_work_is_due_when():
    from ddpm_hub.evaluation.during_training import Evaluator
    from ddpm_hub.training import Schedule, SideWork

    every = ["--logging_steps", "2", "--checkpointing_steps", "3", "--save_images_steps", "4"]
    every += ["--save_images_epochs", "2", "--save_model_epochs", "1", "--eval_steps", "5"]
    _, _, run, _ = configs(*every, "--eval_num_samples", "50", "--eval_features", "efficientnet-lite0-40")
    schedule = Schedule(run, Evaluator(run, "unused"), max_train_steps=7, num_epochs=4)
    assert schedule.after_step(1) == SideWork()
    assert schedule.after_step(2) == SideWork(log=True)
    assert schedule.after_step(3) == SideWork(checkpoint=True)
    assert schedule.after_step(4) == SideWork(log=True, preview=True)
    assert schedule.after_step(5) == SideWork(evaluate=True)
    assert schedule.after_step(7) == SideWork(log=True)  # the last step always logs
    assert schedule.after_epoch(0, 2) == SideWork(export=True)
    assert schedule.after_epoch(1, 4) == SideWork(preview=True, export=True)
    assert schedule.after_epoch(2, 7) == SideWork(preview=True)  # the last epoch previews; the finish exports
    assert not schedule.finished(6) and schedule.finished(7)
    streamed = Schedule(run, Evaluator(run, "unused"), max_train_steps=7, num_epochs=None)
    assert streamed.after_epoch(4, 6) == SideWork(export=True) and streamed.after_epoch(5, 7) == SideWork(preview=True)
