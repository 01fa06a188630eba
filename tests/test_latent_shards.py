"""Latent shards (issue 17, item 5): `ddpm-hub prepare SRC OUT --vae_name_or_path VAE` stores latents beside the
images, and `--train_shards OUT` trains a latent model on them, streamed, without encoding again.

24 labelled 20 px images (two class folders) become 16 px samples in 3 shards of 8; the tiny random f2 VAE of
`test_latents.py` gives 4x8x8 latents.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from test_evaluation import SMALL
from test_latent_training import encoded_images  # noqa: F401 (a fixture)
from test_latents import save_tiny_vae
from test_train import assert_same_weights

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.app import panels
from ddpm_hub.cli import main as cli_main
from ddpm_hub.latents import cached_latents, load_vae, read_vae_info
from ddpm_hub.latents.shards import read_sample_latents
from ddpm_hub.prepare import main as prepare_main
from ddpm_hub.train import main as train_main

TRAIN = [
    "--model",
    "tiny",
    "--train_batch_size",
    "4",
    "--ddpm_num_inference_steps",
    "2",
    "--eval_batch_size",
    "4",
    "--logging_steps",
    "1",
    "--logger",
    "none",
    "--save_images_epochs",
    "100",
    "--dataloader_num_workers",
    "0",
    "--shuffle_buffer_size",
    "8",
]


@pytest.fixture(scope="module")
def vae(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "kl")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(24):
        (folder / ("cat" if i % 2 else "dog")).mkdir(exist_ok=True)
        array = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        PIL.Image.fromarray(array).save(folder / ("cat" if i % 2 else "dog") / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos, vae) -> Path:
    out = tmp_path_factory.mktemp("shards") / "latent"
    args = [str(photos), str(out), "--resolution", "16", "--shard_size", "8", "--vae_name_or_path", str(vae)]
    assert prepare_main([*args, "--device", "cpu"]) == 0
    return out


def members(shard: Path) -> dict[str, dict[str, bytes]]:
    """`{key: {extension: bytes}}` of a tar shard."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            key, extension = member.name.split(".", 1)
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def test_prepare_with_a_vae_writes_latent_shards_whose_manifest_names_the_vae(shards, vae):
    manifest = json.loads((shards / "manifest.json").read_text())
    latents = manifest["latents"]
    assert latents["vae_name_or_path"] == str(vae.resolve()) and latents["vae_class"] == "AutoencoderKL"
    assert len(latents["vae_fingerprint"]) == 32 and latents["scaling_factor"] == pytest.approx(0.18215)
    assert latents["latent_shape"] == [4, 8, 8] and latents["dtype"] == "float16"
    assert latents["moments"] == ["mean", "std"] and latents["views"] == ["image", "flipped"]
    assert manifest["num_images"] == 24 and len(manifest["shards"]) == 3 and manifest["label_names"] == ["cat", "dog"]
    samples = members(shards / "train-000000.tar")
    assert len(samples) == 8
    for sample in samples.values():
        assert set(sample) == {"png", "cls", "latents.safetensors"}
        assert PIL.Image.open(io.BytesIO(sample["png"])).size == (16, 16)
        moments = read_sample_latents(sample["latents.safetensors"])
        assert moments.shape == (2, 2, 4, 8, 8) and moments.dtype == torch.float16  # views x (mean, std) x latent

    # The same command again: nothing to do. The same OUT with another VAE: refused.
    args = [str(shards), "--resolution", "16", "--shard_size", "8", "--vae_name_or_path"]
    photos = manifest["settings"]["source"]
    assert prepare_main([photos, *args, str(vae)]) == 0
    other = save_tiny_vae(shards.parent / "other", seed=1)
    assert prepare_main([photos, *args, str(other)]) == 2


def test_the_latents_in_the_shards_are_what_the_latent_cache_computes(shards, vae, tmp_path):
    samples = [s for shard in sorted(shards.glob("train-*.tar")) for s in members(shard).values()]
    pixels = torch.stack(
        [torch.from_numpy(np.asarray(PIL.Image.open(io.BytesIO(s["png"])))).permute(2, 0, 1) for s in samples]
    )
    stats, _, _ = cached_latents(
        pixels.contiguous(),
        load_vae(read_vae_info(str(vae))),
        cache_root=tmp_path,
        resolution=16,
        center_crop=False,
        random_flip=True,
    )
    stored = torch.stack([read_sample_latents(s["latents.safetensors"]) for s in samples]).float()
    torch.testing.assert_close(stored[:, :, 0], stats.mean.float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(stored[:, :, 1], stats.std.float(), atol=2e-3, rtol=2e-3)
    assert not torch.equal(stored[:, 0], stored[:, 1])  # the flipped view is another image's latents


def test_training_on_latent_shards_gives_a_latent_pipeline_without_encoding(
    shards,
    tmp_path,
    encoded_images,  # noqa: F811
    monkeypatch,
):
    import ddpm_hub.data.shards

    out = tmp_path / "run"
    args = [*TRAIN, "--train_shards", str(shards), "--class_conditional", "--random_flip", "--num_epochs", "2"]
    # Scored during training against the shards' own images (decoded samples, pixel references).
    args += ["--eval_epochs", "2", "--eval_features", SMALL, "--eval_metrics", "kid", "--eval_num_samples", "8"]
    args += ["--eval_num_inference_steps", "2", "--cache_dir", str(tmp_path / "cache")]
    calls = {"resolve_shards": 0, "read_manifest": 0}

    def counting(name):  # a remote shard set is one listing and one manifest fetch: each counted here
        original = getattr(ddpm_hub.data.shards, name)

        def counted(*args):
            calls[name] += 1
            return original(*args)

        return counted

    for name in calls:
        monkeypatch.setattr(ddpm_hub.data.shards, name, counting(name))
    assert train_main([*args, "--dataloader_num_workers", "2", "--output_dir", str(out)]) == 0
    monkeypatch.undo()
    assert encoded_images["AutoencoderKL"] == 0  # the latents came from the shards
    # The run resolved its shards and read their manifest once: for the VAE check, the stream and the FID key.
    assert calls == {"resolve_shards": 1, "read_manifest": 1}, calls
    config = json.loads((out / "training_config.json").read_text())
    manifest = json.loads((shards / "manifest.json").read_text())
    assert config["vae_name_or_path"] == manifest["latents"]["vae_name_or_path"]  # implied by the shards
    assert config["resolution"] == 16 and config["latent_shape"] == "4x8x8"
    # 2 workers read 3 shards of 8: the shortest reader has 8 images, 2 batches of 4 each: 4 steps an epoch.
    assert config["steps_per_epoch"] == 4 and config["max_train_steps"] == 8
    assert (out / "vae" / "config.json").is_file()
    scores = [
        line for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "eval_kid_mean" in line
    ]
    assert [line["step"] for line in scores] == [8] and scores[0]["eval_kid_mean"] > 0, scores
    assert "(24 images)" in json.loads((out / "metrics.json").read_text())["eval_settings"]  # the shards' images
    pipe = DDPMHubPipeline.from_pretrained(out).set_sampler("ddim")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, class_labels=["cat", "dog"], output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()

    # The shards' images are the FID reference of `ddpm-hub eval` and the explorer's data.
    status = cli_main(
        [
            "eval",
            str(out),
            "--reference",
            str(shards),
            "--features",
            SMALL,
            "--metrics",
            "kid",
            "--num_samples",
            "8",
            "--num_inference_steps",
            "2",
            "--cache_dir",
            str(tmp_path / "cache"),
            "--output",
            str(tmp_path / "eval.json"),
        ]
    )
    assert status == 0 and json.loads((tmp_path / "eval.json").read_text())["reference_images"] == 24
    first = PIL.Image.open(io.BytesIO(members(shards / "train-000000.tar")["000000000"]["png"]))
    explored = panels.data_images(str(shards), 2)
    assert len(explored) == 2 and np.array_equal(np.asarray(explored[0]), np.asarray(first))


def test_resume_on_latent_shards_is_bit_identical(shards, tmp_path):
    # 6 batches an epoch; checkpoint 4 is inside the first epoch and the run crosses into the second.
    args = [*TRAIN, "--train_shards", str(shards), "--random_flip", "--max_train_steps", "8"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_main([*args, "--checkpointing_steps", "4", "--output_dir", str(straight)]) == 0
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-4", resumed / "checkpoint-4")  # as if the first run had died here
    resume = ["--checkpointing_steps", "4", "--resume_from_checkpoint", "latest"]
    assert train_main([*args, *resume, "--output_dir", str(resumed)]) == 0
    logged = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert min(logged) == 5 and max(logged) == 8  # it did resume at step 4
    assert_same_weights(straight / "checkpoint-8" / "model.safetensors", resumed / "checkpoint-8" / "model.safetensors")


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--vae_name_or_path", "OTHER"],
            r"--vae_name_or_path \S+ is not the VAE the shards were encoded with .*"
            r"its weights or config differ \(fingerprint \w+, theirs \w+\); leave --vae_name_or_path out",
        ),
        (
            ["--vae_name_or_path", "VQ"],
            r"is not the VAE the shards were encoded with .*: a VQModel with \[3, 8, 8\] "
            r"latents, theirs are \[4, 8, 8\]",
        ),
        (["--resolution", "32"], r"--resolution 32 differs from the latent shards' 16 px images"),
        (
            ["--vae_name_or_path", "SAME", "--train_shards", "PIXELS"],
            r"--vae_name_or_path with --train_shards without latents: write latent shards with `ddpm-hub prepare",
        ),
    ],
    ids=["other-weights", "other-class", "resolution", "pixel-shards"],
)
def test_a_mismatched_vae_or_setting_is_one_line_with_status_2(shards, photos, vae, tmp_path, capsys, extra, expected):
    pixels = tmp_path / "pixels"
    if "PIXELS" in extra:  # shards without latents
        assert prepare_main([str(photos), str(pixels), "--resolution", "16", "--shard_size", "8"]) == 0
    names = {
        "OTHER": str(save_tiny_vae(tmp_path / "other", seed=1)),
        "VQ": str(save_tiny_vae(tmp_path / "vq", "vq")),
        "SAME": str(vae),
        "PIXELS": str(pixels),
    }
    extra = [names.get(arg, arg) for arg in extra]
    capsys.readouterr()
    out = tmp_path / "run"
    args = [*TRAIN, "--train_shards", str(shards), "--max_train_steps", "2", *extra, "--output_dir", str(out)]
    status = train_main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("train_unconditional.py: error:")]
    assert status == 2 and len(lines) == 1 and re.search(expected, lines[0]), err[-2000:]
    assert not (out / "checkpoint-2").exists() and not (out / "unet").exists()


def test_a_copy_of_the_shards_vae_elsewhere_is_accepted(shards, vae, tmp_path):
    copy = shutil.copytree(vae, tmp_path / "copy-of-the-vae")
    args = [*TRAIN, "--train_shards", str(shards), "--max_train_steps", "1", "--vae_name_or_path", str(copy)]
    assert train_main([*args, "--output_dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "training_config.json").read_text())["vae_name_or_path"] == str(copy)


def test_an_interrupted_latent_prepare_resumes_and_writes_the_same_shards(shards, photos, vae, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(shards, out)
    manifest = json.loads((out / "manifest.json").read_text())
    # As if prepare had been stopped after its second shard: progress recorded, no third shard, no manifest.
    progress = {"settings": manifest["settings"], "shards": manifest["shards"][:2]}
    (out / "prepare-progress.json").write_text(json.dumps(progress))
    (out / "manifest.json").unlink()
    (out / "train-000002.tar").unlink()
    args = [str(photos), str(out), "--resolution", "16", "--shard_size", "8", "--vae_name_or_path", str(vae)]
    assert prepare_main(args) == 0
    assert json.loads((out / "manifest.json").read_text())["shards"] == manifest["shards"]  # same sha256s
    assert not (out / "prepare-progress.json").exists()


def test_a_vq_vae_stores_one_latent_per_view_and_trains(photos, tmp_path):
    vq = save_tiny_vae(tmp_path / "vq", "vq")
    out = tmp_path / "vq-shards"
    assert (
        prepare_main([str(photos), str(out), "--resolution", "16", "--shard_size", "24", "--vae_name_or_path", str(vq)])
        == 0
    )
    latents = json.loads((out / "manifest.json").read_text())["latents"]
    assert (
        latents["moments"] == ["latent"] and latents["latent_shape"] == [3, 8, 8] and latents["vae_class"] == "VQModel"
    )
    sample = next(iter(members(out / "train-000000.tar").values()))
    assert read_sample_latents(sample["latents.safetensors"]).shape == (2, 1, 3, 8, 8)
    args = [*TRAIN, "--train_shards", str(out), "--random_flip", "--max_train_steps", "2"]
    assert train_main([*args, "--output_dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "vae" / "config.json").read_text())["_class_name"] == "VQModel"


def test_shards_whose_vae_is_gone_say_so_in_one_line(shards, tmp_path, capsys):
    moved = shutil.copytree(shards, tmp_path / "moved")
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["latents"]["vae_name_or_path"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    args = [*TRAIN, "--train_shards", str(moved), "--max_train_steps", "1", "--output_dir", str(tmp_path / "run")]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"error: the latent shards' VAE \S+gone \(named by their manifest.json\) could not be read .*; "
        r"pass --vae_name_or_path with a copy of it.$",
        err.strip(),
    ), err[-2000:]
