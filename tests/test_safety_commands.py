"""The newest commands under attack: `ddpm-hub prepare`, `--train_shards`, the latent cache, `ddpm-hub distill` and
`ddpm-hub eval` lose nothing of the user's, refuse bad input in one line before heavy work, and never train on data
that silently changed (docs/safety.md).

Everything runs in this process on tiny data: 24 random 20 px images, 16 px shards of 8, the tiny UNet of
conftest.py and the tiny VAE of test_latents.py.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_pipeline
from test_latents import random_images, save_tiny_vae
from test_safety import read_only_folder

from ddpm_hub.cli import main as cli_main
from ddpm_hub.train import main as train_main

# A run that stops at its first optimizer step: what matters here is what happens before it.
TRAIN = ["--model", "tiny", "--train_batch_size", "4", "--max_train_steps", "1", "--ddpm_num_inference_steps", "2",
         "--eval_batch_size", "2", "--logger", "none", "--save_images_epochs", "100", "--dataloader_num_workers", "0",
         "--shuffle_buffer_size", "8"]  # fmt: skip
DISTILL = ["--start_steps", "4", "--end_steps", "2", "--steps_per_round", "2", "--checkpointing_steps", "1",
           "--eval_rounds", "false", "--dataset_name", "shapes", "--max_train_samples", "8", "--train_batch_size", "4",
           "--logger", "none", "--eval_batch_size", "2", "--lr_warmup_steps", "0"]  # fmt: skip


FINAL_STUDENT = ("unet", "scheduler", "model_index.json", "metrics.json", "README.md", "training_config.json")


def run(capsys, command, args) -> tuple[int, list[str], str]:
    """(exit status, error lines, stderr) of a command's `main` in this process (argparse's exit included)."""
    capsys.readouterr()
    try:
        status = command([str(arg) for arg in args])
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if "error:" in line], err


def assert_one_line(status, lines, err, *words, code: int = 2) -> str:
    assert status == code and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes but a run's log (a run in this process keeps writing the log lines of later ones to it)."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "train.log")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def prepare(*args):
    return cli_main(["prepare", *map(str, args)])


def distill(*args):
    return cli_main(["distill", *map(str, args)])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(24):
        PIL.Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos) -> Path:
    """3 shards of 8 images at 16 px, with their manifest."""
    out = tmp_path_factory.mktemp("shards") / "set"
    assert prepare(photos, out, "--resolution", 16, "--shard_size", 8) == 0
    return out


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    make_tiny_pipeline().save_pretrained(path)
    return path


# ---- 1., 2. what is not theirs, commands leave alone --------------------------------------------------------------


def test_distill_refuses_a_folder_that_is_not_a_distillation_or_is_the_teacher(capsys, teacher, tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "README.md").write_text("mine\n")
    (out / "metrics.json").write_text('{"mine": 1}')
    before = snapshot(out)
    status, lines, err = run(capsys, cli_main, ["distill", teacher, "--output_dir", out, *DISTILL])
    assert_one_line(status, lines, err, "is not empty and is not a distillation", "README.md", "--overwrite_output_dir")
    assert snapshot(out) == before

    before = snapshot(teacher)
    for extra in ([], ["--overwrite_output_dir"], ["--resume_from_checkpoint", "latest"]):
        status, lines, err = run(capsys, cli_main, ["distill", teacher, "--output_dir", teacher, *DISTILL, *extra])
        line = assert_one_line(status, lines, err, "is the TEACHER folder")
        assert "holds a distillation" not in line
    assert snapshot(teacher) == before


def test_prepare_refuses_a_folder_that_is_not_its_shard_set_and_its_own_source(capsys, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-000000.tar").write_bytes(b"my own tar")
    args = ["--resolution", 16, "--shard_size", 8]
    status, lines, err = run(capsys, cli_main, ["prepare", photos, out, *args])
    assert_one_line(status, lines, err, "is not empty and is not a shard set written by ddpm-hub prepare")
    assert snapshot(out) == {"train-000000.tar": b"my own tar"}

    before = snapshot(photos)
    for target in (photos, photos / "shards"):
        status, lines, err = run(capsys, cli_main, ["prepare", photos, target, *args])
        assert_one_line(status, lines, err, "SRC", "choose a new or empty folder")
    assert snapshot(photos) == before and not (photos / "shards").exists()

    (tmp_path / "a-file").write_text("x")  # 9. OUT is a file
    status, lines, err = run(capsys, cli_main, ["prepare", photos, tmp_path / "a-file", *args])
    assert_one_line(status, lines, err, "exists and is not a folder")


# ---- 3., 4. bad input is refused before heavy work ---------------------------------------------------------------


def test_a_resolution_no_image_can_be_decoded_at_is_refused_before_decoding(capsys, photos, tmp_path, monkeypatch):
    from ddpm_hub.data import images

    decoded = []
    monkeypatch.setattr(images, "open_image", lambda *a, **k: decoded.append(1) or pytest.fail("decoded"))
    for resolution in (100_000, 1_000_000_000):
        args = [*TRAIN, "--train_data_dir", photos, "--resolution", resolution, "--output_dir", tmp_path / "run"]
        status, lines, err = run(capsys, train_main, args)
        assert_one_line(status, lines, err, f"--resolution {resolution} is too large", "9459")
        status, lines, err = run(capsys, cli_main, ["prepare", photos, tmp_path / "out", "--resolution", resolution])
        assert_one_line(status, lines, err, f"--resolution {resolution} is too large", "9459")
    assert not decoded and not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_decoding_that_cannot_fit_in_memory_is_refused_and_never_called_unreadable(
    capsys, photos, tmp_path, monkeypatch
):
    from ddpm_hub.data import images

    # 16 px RGB images are 768 bytes: with 1 kB available not one fits (half is for the source and the resizing).
    monkeypatch.setattr(images, "available_memory", lambda: 1000)
    args = [*TRAIN, "--train_data_dir", photos, "--resolution", 16, "--output_dir", tmp_path / "run"]
    status, lines, err = run(capsys, train_main, args)
    assert_one_line(status, lines, err, "--resolution 16: one decoded image takes 768 bytes", "1,000 bytes of memory")
    # prepare writes a shard from memory: 8 of them need 6 kB; 10 kB holds 6.
    monkeypatch.setattr(images, "available_memory", lambda: 10_000)
    status, lines, err = run(
        capsys, cli_main, ["prepare", photos, tmp_path / "out", "--shard_size", 8, "--resolution", 16]
    )
    assert_one_line(status, lines, err, "--shard_size 8", "use --shard_size 6 or less")
    assert not list((tmp_path / "out").glob("*.tar")) if (tmp_path / "out").exists() else True

    # A MemoryError the estimate missed is not an unreadable image: no manifest of zero images, exit status 1.
    import ddpm_hub.prepare as prepare_module

    monkeypatch.setattr(images, "available_memory", lambda: 10**12)
    monkeypatch.setattr(prepare_module, "resize_and_crop", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    status, lines, err = run(
        capsys, cli_main, ["prepare", photos, tmp_path / "mem", "--shard_size", 8, "--resolution", 16]
    )
    assert_one_line(status, lines, err, "out of memory", code=1)
    assert "Skipping unreadable" not in err and not (tmp_path / "mem" / "manifest.json").exists()


def test_eval_checks_the_reference_before_loading_or_sampling_the_model(
    capsys, saved_pipeline_dir, monkeypatch, tmp_path
):
    from ddpm_hub import DDPMHubPipeline

    monkeypatch.setattr(DDPMHubPipeline, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(DDPMHubPipeline, "__call__", lambda *a, **k: pytest.fail("the model was sampled"))
    missing = tmp_path / "no" / "such" / "reference"
    started = time.perf_counter()
    status, lines, err = run(
        capsys, cli_main, ["eval", saved_pipeline_dir, "--reference", missing, "--num_samples", 4096]
    )
    assert_one_line(status, lines, err, f"--reference {str(missing)!r} does not exist")
    assert time.perf_counter() - started < 60


# ---- 5. a resumed distillation keeps its teacher -----------------------------------------------------------------


def test_a_distillation_resumed_with_another_teacher_is_refused(capsys, teacher, tmp_path):
    out = tmp_path / "student"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "README.md").write_text("mine")
    # --overwrite_output_dir distils into a folder of the user's, replacing only what a distillation writes.
    assert distill(teacher, "--output_dir", out, *DISTILL, "--overwrite_output_dir") == 0
    assert (out / "notes.txt").read_text() == "mine" and "distilled from" in (out / "README.md").read_text()
    other = tmp_path / "other-teacher"
    make_tiny_pipeline(seed=1).save_pretrained(other)

    finished = snapshot(out)
    args = ["distill", other, "--output_dir", out, *DISTILL, "--resume_from_checkpoint", "latest"]
    status, lines, err = run(capsys, cli_main, args)
    assert_one_line(status, lines, err, "was distilled from another teacher", str(teacher), "--overwrite_output_dir")
    assert snapshot(out) == finished  # the card and metrics.json still name the first teacher

    # Killed mid-round (after its checkpoint-1): the other teacher would train the rest of the round.
    for folder, names in ((out, FINAL_STUDENT), (out / "round-2", (*FINAL_STUDENT[:-1], "checkpoint-2"))):
        for name in names:
            shutil.rmtree(folder / name) if (folder / name).is_dir() else (folder / name).unlink()
    killed = snapshot(out)
    status, lines, err = run(capsys, cli_main, args)
    assert_one_line(status, lines, err, "was distilled from another teacher", "round-2/training_config.json")
    assert snapshot(out) == killed
    assert distill(teacher, "--output_dir", out, *DISTILL, "--resume_from_checkpoint", "latest") == 0


# ---- 6., 8. shards that no longer match their manifest -----------------------------------------------------------


def _damage_missing(folder: Path) -> str:
    (folder / "train-000001.tar").unlink()
    return "train-000001.tar is missing (1 of the 3 shards it lists)"


def _damage_stray(folder: Path) -> str:
    shutil.copy(folder / "train-000000.tar", folder / "train-000099.tar")
    return "train-000099.tar is not one of the 3 shards it lists"


def _damage_truncated(folder: Path) -> str:
    shard = folder / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    return "train-000002.tar is 5,000 bytes, the manifest says 20,480"


@pytest.mark.parametrize(
    "damage", [_damage_missing, _damage_stray, _damage_truncated], ids=["missing", "stray", "truncated"]
)
def test_shards_that_differ_from_their_manifest_are_one_line_saying_what_differs(capsys, shards, tmp_path, damage):
    folder = shutil.copytree(shards, tmp_path / "set")
    expected = damage(folder)
    args = [*TRAIN, "--train_shards", folder, "--output_dir", tmp_path / "run"]
    status, lines, err = run(capsys, train_main, args)
    assert_one_line(status, lines, err, "do not match its manifest.json", expected)
    assert not (tmp_path / "run").exists()


def test_verify_shards_compares_every_sha256(capsys, shards, tmp_path):
    folder = shutil.copytree(shards, tmp_path / "set")
    shard = folder / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    args = [*TRAIN, "--train_shards", folder, "--output_dir", tmp_path / "run", "--verify_shards"]
    status, lines, err = run(capsys, train_main, args)
    assert_one_line(status, lines, err, "the sha256 of train-000001.tar differs")


def test_prepare_writes_again_a_finished_shard_that_was_damaged_since(photos, shards, tmp_path):
    import hashlib

    args = ["--resolution", 16, "--shard_size", 8]
    for interrupted in (True, False):
        out = shutil.copytree(shards, tmp_path / f"again-{interrupted}")
        manifest = json.loads((out / "manifest.json").read_text())
        if interrupted:  # stopped after its second shard: progress recorded, no third shard, no manifest
            (out / "prepare-progress.json").write_text(json.dumps({**manifest, "shards": manifest["shards"][:2]}))
            (out / "manifest.json").unlink()
            (out / "train-000002.tar").unlink()
        (out / "train-000000.tar").write_bytes((out / "train-000000.tar").read_bytes()[:5000])
        assert prepare(photos, out, *args) == 0
        written = json.loads((out / "manifest.json").read_text())
        assert written["shards"] == manifest["shards"]  # the same shards, written again whole
        for entry in written["shards"]:
            assert hashlib.sha256((out / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]


def test_a_truncated_shard_is_skipped_and_counted_with_its_name(shards, tmp_path, caplog):
    from ddpm_hub.data import open_streamed_images

    folder = tmp_path / "no-manifest"  # without a manifest nothing is checked before reading
    folder.mkdir()
    for shard in shards.glob("train-*.tar"):
        shutil.copy(shard, folder)
    (folder / "train-000001.tar").write_bytes((shards / "train-000001.tar").read_bytes()[:1100])
    source = open_streamed_images(train_shards=str(folder), resolution=16, num_workers=0, shuffle_buffer_size=0)

    class OneProcess:
        num_processes, process_index, device = 1, 0, torch.device("cpu")

    source.make_loader(OneProcess(), batch_size=1, seed=1)  # shards in the order 0, 1, 2 (seed 1, epoch 0)
    with caplog.at_level(logging.WARNING):
        keys = [key for _ in source.epoch_batches(0, 0) for key in source.last_keys]  # one pass (no manifest)
    assert len(keys) == 16 and source.num_skipped == 1
    assert re.search(r"Skipping the rest of shard train-000001.tar after 0 samples \(ReadError", caplog.text)
    # The first shard is read while the stream opens (datasets infers the samples' members from it): one line.
    (folder / "train-000000.tar").write_bytes((shards / "train-000000.tar").read_bytes()[:1100])
    with pytest.raises(ValueError, match=r"^the first shard \S+train-000000.tar cannot be read \(ReadError"):
        open_streamed_images(train_shards=str(folder), resolution=16, num_workers=0)


# ---- 7. the latent cache is verified ----------------------------------------------------------------------------


def _wrong_values(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({name: tensor * 100 for name, tensor in load_file(str(path)).items()}, str(path))


def _nan(path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as entry:  # the header's checksum kept
        tensors, metadata = {name: entry.get_tensor(name) for name in entry.keys()}, entry.metadata()
    tensors["mean"][0] = float("nan")
    save_file(tensors, str(path), metadata=metadata)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("damage", [_wrong_values, _nan, _truncated], ids=["wrong-values", "nan", "truncated"])
def test_a_damaged_latent_cache_is_encoded_again_with_a_warning(tmp_path, damage, caplog):
    from ddpm_hub.latents import cached_latents, load_vae, read_vae_info

    vae = load_vae(read_vae_info(str(save_tiny_vae(tmp_path / "vae"))))
    pixels = random_images(count=6).pixels
    options = dict(cache_root=tmp_path / "cache", resolution=16, center_crop=True, random_flip=True)
    fresh, path, encoded = cached_latents(pixels, vae, **options)
    assert encoded
    damage(path)
    with caplog.at_level(logging.WARNING):
        stats, again, encoded = cached_latents(pixels, vae, **options)
    assert encoded and again == path and "cannot be used" in caplog.text and str(path) in caplog.text
    assert torch.equal(stats.mean, fresh.mean) and torch.equal(stats.std, fresh.std)
    caplog.clear()
    stats, _, encoded = cached_latents(pixels, vae, **options)  # written again, whole: read as it is
    assert not encoded and not caplog.text and torch.equal(stats.mean, fresh.mean)


# ---- 9. read-only output folders ---------------------------------------------------------------------------------


def test_a_read_only_output_folder_is_one_line_before_any_work(capsys, photos, teacher, tmp_path, monkeypatch):
    from ddpm_hub.data import images

    monkeypatch.setattr(images, "load_source", lambda *a, **k: pytest.fail("the data was read"))
    with read_only_folder(tmp_path / "ro", monkeypatch) as folder:
        status, lines, err = run(
            capsys, train_main, [*TRAIN, "--train_data_dir", photos, "--output_dir", folder / "run"]
        )
        assert_one_line(status, lines, err, f"--output_dir {str(folder / 'run')!r} cannot be written", "errno")
        status, lines, err = run(capsys, cli_main, ["distill", teacher, "--output_dir", folder, *DISTILL])
        assert_one_line(status, lines, err, f"--output_dir {str(folder)!r} cannot be written", "errno")
        status, lines, err = run(capsys, cli_main, ["prepare", photos, folder / "shards", "--resolution", 16])
        assert_one_line(status, lines, err, "cannot be written", "errno")
        assert list(folder.iterdir()) == []


# ---- 10. the words fit the case ----------------------------------------------------------------------------------


def test_latent_shards_whose_vae_changed_at_its_path_say_so(capsys, photos, tmp_path):
    vae = save_tiny_vae(tmp_path / "vae")
    out = tmp_path / "latent-shards"
    assert (
        prepare(photos, out, "--resolution", 16, "--shard_size", 8, "--vae_name_or_path", vae, "--device", "cpu") == 0
    )
    shutil.rmtree(vae)
    save_tiny_vae(vae, seed=1)  # the same class and shapes, other weights, at the same path
    status, lines, err = run(capsys, train_main, [*TRAIN, "--train_shards", out, "--output_dir", tmp_path / "run"])
    line = assert_one_line(status, lines, err, f"the VAE at {vae}", "changed since `ddpm-hub prepare` ran")
    assert "leave --vae_name_or_path out" not in line


def test_a_setup_error_leaves_no_folder_behind(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "new" / "run"
    status, lines, err = run(capsys, train_main, [*TRAIN, "--train_data_dir", empty, "--output_dir", out])
    assert_one_line(status, lines, err, "holds no image files")
    assert not (tmp_path / "new").exists()
