"""Latent training runs end to end (issue 16): `train_unconditional.py --vae_name_or_path` with tiny random VAEs.

The VAEs (f2: 32 px images become 16x16 latents) are built in `test_latents.py` and saved to folders, so every
route goes through diffusers' `from_pretrained`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import PIL.Image
import pytest
import torch
from conftest import run_python
from diffusers import AutoencoderKL, VQModel
from test_latents import save_tiny_vae
from test_train import assert_same_weights, launch, ok

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.cli import main as cli_main
from ddpm_hub.train import main as train_main

# 32 px shapes -> 16x16 latents for the tiny UNet; a few optimizer steps, milliseconds each.
LATENT = [
    "--dataset_name", "shapes", "--model", "tiny", "--resolution", "32", "--max_train_samples", "24",
    "--train_batch_size", "8", "--ddpm_num_inference_steps", "2", "--eval_batch_size", "4", "--logging_steps", "2",
    "--logger", "none", "--save_images_epochs", "100",
]  # fmt: skip


@pytest.fixture(scope="module")
def vaes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vaes")
    return {kind: save_tiny_vae(root / kind, kind) for kind in ("kl", "vq")}


@pytest.fixture
def encoded_images(monkeypatch) -> dict[str, int]:
    """Counts the images each autoencoder class's encoder is given, in this process."""
    counts = {"AutoencoderKL": 0, "VQModel": 0}
    for cls in (AutoencoderKL, VQModel):
        original = cls.encode

        def counting(self, x, *args, _original=original, _name=cls.__name__, **kwargs):
            counts[_name] += x.shape[0]
            return _original(self, x, *args, **kwargs)

        monkeypatch.setattr(cls, "encode", counting)
    return counts


def train(tmp_path: Path, vae: Path, *extra: str, out: str = "run") -> Path:
    output_dir = tmp_path / out
    args = [*LATENT, "--vae_name_or_path", str(vae), "--cache_dir", str(tmp_path / "cache"), *extra]
    assert train_main([*args, "--output_dir", str(output_dir)]) == 0
    return output_dir


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_a_latent_run_exports_a_pipeline_that_samples_images(tmp_path, vaes, encoded_images, kind):
    cls = "AutoencoderKL" if kind == "kl" else "VQModel"
    out = train(tmp_path, vaes[kind], "--max_train_steps", "3", "--random_flip")
    assert encoded_images[cls] == 2 * 24  # every image and its flip, once
    assert (out / "vae" / "config.json").is_file() and (out / "unet").is_dir()
    unet_config = json.loads((out / "unet" / "config.json").read_text())
    channels = 4 if kind == "kl" else 3
    assert (unet_config["sample_size"], unet_config["in_channels"], unet_config["out_channels"]) == (
        16,
        channels,
        channels,
    )
    pipe = DDPMHubPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.set_sampler("ddim")(batch_size=2, num_inference_steps=2, output_type="np").images.shape == (
        2,
        32,
        32,
        3,
    )
    config = json.loads((out / "training_config.json").read_text())
    assert config["resolution"] == 32 and config["latent_shape"] == f"{channels}x16x16" and config["vae_class"] == cls
    card = (out / "README.md").read_text()
    assert "latent image diffusion model" in card and str(vaes[kind]) in card and "licence" in card
    assert "| resolution | 32 |" in card
    # The preview grid is decoded: 2 x 2 images of 32 px (latents would make it 2 x 2 of 16).
    with PIL.Image.open(out / "sample_grid.png") as grid:
        assert grid.size == (64, 64) and grid.mode == "RGB"

    # The second run with the same settings reads the cache; another resolution encodes again.
    train(tmp_path, vaes[kind], "--max_train_steps", "1", "--random_flip", out="again")
    assert encoded_images[cls] == 2 * 24
    train(tmp_path, vaes[kind], "--max_train_steps", "1", "--random_flip", "--resolution", "16", out="smaller")
    assert encoded_images[cls] == 4 * 24


def test_the_saved_latent_pipeline_loads_without_ddpm_hub(tmp_path, vaes):
    out = train(tmp_path, vaes["kl"], "--max_train_steps", "2")
    shape = run_python(
        f"from diffusers import DiffusionPipeline\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        f"print(tuple(pipe(num_inference_steps=2, output_type='np').images.shape))",
        without_ddpm_hub=True,
    )
    assert "(1, 32, 32, 3)" in shape


@pytest.mark.parametrize("flip", [False, True], ids=["no-flips", "flips"])
def test_resume_of_a_latent_run_is_bit_identical(tmp_path, vaes, caplog, flip):
    # Checkpoint 3 falls in the middle of the second epoch (2 optimizer steps per epoch of 16 images).
    args = [*LATENT, "--vae_name_or_path", str(vaes["kl"]), "--cache_dir", str(tmp_path / "cache"),
            "--max_train_samples", "16", "--max_train_steps", "5", "--checkpointing_steps", "3",
            *(["--random_flip"] if flip else [])]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    caplog.set_level(logging.INFO)  # both runs in this process: their log is caplog's
    assert train_main([*args, "--output_dir", str(straight)]) == 0
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-3", resumed / "checkpoint-3")  # as if the first run had died here
    caplog.clear()
    assert train_main([*args, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]) == 0
    assert "Using the cached latents" in caplog.text and "Resumed from" in caplog.text
    assert_same_weights(straight / "checkpoint-5" / "model.safetensors", resumed / "checkpoint-5" / "model.safetensors")
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight / unet, resumed / unet)


def _unet_folder(tmp_path: Path, channels: int) -> str:
    config = {"in_channels": channels, "out_channels": channels, "block_out_channels": [16, 32], "norm_num_groups": 8,
              "down_block_types": ["DownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "UpBlock2D"]}  # fmt: skip
    path = tmp_path / "unet.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("not-a-vae", "is not an autoencoder: its config is for UNet2DModel"),
        ("empty-folder", "has no autoencoder config"),
        ("pipeline-folder", "add --vae_subfolder vae"),
        ("resolution", "--resolution 33 is not divisible by 2, the downsampling factor of the VAE"),
        ("unet-config", "has in/out channels 3/3, but the latents of the VAE"),
        ("pretrained", "--pretrained_model_name_or_path .* has in/out channels 3/3, but the latents"),
    ],
)
def test_bad_latent_input_is_one_line_with_status_2_before_any_work(
    tmp_path, vaes, saved_pipeline_dir, capsys, encoded_images, case, message
):
    import re

    vae, extra = str(vaes["kl"]), []
    if case == "not-a-vae":
        vae = str(saved_pipeline_dir / "unet")
    elif case == "empty-folder":
        (tmp_path / "empty").mkdir()
        vae = str(tmp_path / "empty")
    elif case == "pipeline-folder":
        shutil.copytree(saved_pipeline_dir, tmp_path / "pipe")
        shutil.copytree(vaes["kl"], tmp_path / "pipe" / "vae")
        vae = str(tmp_path / "pipe")
    elif case == "resolution":
        extra = ["--resolution", "33"]
    elif case == "unet-config":
        extra = ["--model_config_name_or_path", _unet_folder(tmp_path, 3)]
    elif case == "pretrained":
        extra = ["--pretrained_model_name_or_path", str(saved_pipeline_dir)]
    out = tmp_path / "out"
    status = train_main([*LATENT, "--vae_name_or_path", vae, *extra, "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and re.search(message, err[-1]), err
    assert err[-1].startswith("train_unconditional.py: error: ")
    assert sum(encoded_images.values()) == 0 and not out.exists()  # nothing encoded, nothing written


def test_flags_of_a_latent_run_need_the_vae(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main([*LATENT, "--latent_scaling_factor", "0.5", "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--latent_scaling_factor need --vae_name_or_path" in capsys.readouterr().err


def test_sample_eval_and_explorer_work_on_a_latent_model(tmp_path, vaes, capsys):
    from ddpm_hub.app.panels import MODEL_SCHEDULE, forward_process
    from ddpm_hub.data import draw_shapes

    out = train(tmp_path, vaes["kl"], "--max_train_steps", "2", "--latent_scaling_factor", "0.5")
    pipe = DDPMHubPipeline.from_pretrained(out)
    assert pipe.config.latent_scaling_factor == 0.5  # the run's override travels with the pipeline
    assert cli_main(["sample", str(out), "--output", str(tmp_path / "grid.png"), "--num_images", "2",
                     "--num_inference_steps", "2", "--sampler", "ddim"]) == 0  # fmt: skip
    import PIL.Image

    assert PIL.Image.open(tmp_path / "grid.png").size[1] == 32  # one row of 32 px images
    # The forward process of the model's own schedule: the latents are noised, the frames decoded pixels.
    pipe.set_progress_bar_config(disable=True)
    frames = forward_process(draw_shapes(1)[0], MODEL_SCHEDULE, 100, pipeline=pipe)
    assert frames.values["t"] == 100 and frames.strip.height >= 32
    capsys.readouterr()
    reference = tmp_path / "reference"
    reference.mkdir()
    for index, image in enumerate(draw_shapes(48)):
        image.save(reference / f"{index}.png")
    status = cli_main(["eval", str(out), "--reference", str(reference), "--features", "efficientnet-lite0-40",
                       "--num_samples", "44", "--num_inference_steps", "2", "--batch_size", "22", "--metrics", "fid",
                       "--cache_dir", str(tmp_path / "eval-cache"),
                       "--output", str(tmp_path / "eval.json")])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["resolution"] == 32 and result["fid"] > 0  # decoded 32 px images against 32 px references


def test_eval_steps_on_a_latent_run_scores_decoded_images(tmp_path, vaes):
    out = train(
        tmp_path, vaes["kl"], "--max_train_steps", "2", "--eval_steps", "2", "--eval_num_samples", "44",
        "--eval_features", "efficientnet-lite0-40", "--eval_num_inference_steps", "2", "--eval_batch_size", "22",
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("eval_fid", 0) > 0 for row in rows)
    assert (out / "best" / "vae" / "config.json").is_file()


@pytest.mark.slow
def test_compiled_latent_run(tmp_path, vaes):
    out = train(tmp_path, vaes["kl"], "--max_train_steps", "2", "--compile", "--compile_backend", "aot_eager",
                "--random_flip")  # fmt: skip
    assert (out / "vae").is_dir()
    final_loss = json.loads((out / "metrics.json").read_text())["final_loss"]
    assert torch.isfinite(torch.tensor(final_loss))  # the compiled step trained on sampled latents


def test_a_vae_from_the_hub_online_then_offline_from_the_cache_and_the_push(hub_server, tmp_path, vaes):
    import subprocess
    import sys

    from test_hub import SCRIPT, hub_env

    env = hub_env(hub_server, tmp_path)
    run_python(
        "from huggingface_hub import HfApi\n"
        "api = HfApi()\n"
        "api.create_repo('test-org/tiny-vae')\n"
        f"api.upload_folder(folder_path={str(vaes['kl'])!r}, repo_id='test-org/tiny-vae')\n",
        env=env,
    )
    args = [sys.executable, SCRIPT, *LATENT, "--vae_name_or_path", "test-org/tiny-vae", "--max_train_steps", "2",
            "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    pushed = subprocess.run(
        [*args, "--output_dir", str(tmp_path / "online"), "--push_to_hub", "--hub_model_id", "test-org/latent-ddpm"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    files = hub_server.repo_files("test-org/latent-ddpm")
    assert "vae/config.json" in files and "vae/diffusion_pytorch_model.safetensors" in files
    assert "latent image diffusion model" in hub_server.read_file("test-org/latent-ddpm", "README.md").decode()

    # Offline, the VAE loads from the Hugging Face cache the online run filled, and the latents from their cache.
    offline = subprocess.run(
        [*args, "--output_dir", str(tmp_path / "offline")], env={**env, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr[-4000:]
    assert "Using the cached latents" in offline.stderr and (tmp_path / "offline" / "vae").is_dir()


def test_two_processes_encode_once_and_train_on_the_latents(tmp_path, vaes):
    out = tmp_path / "ddp"
    args = [*LATENT, "--vae_name_or_path", str(vaes["kl"]), "--cache_dir", str(tmp_path / "cache"),
            "--max_train_steps", "2", "--train_batch_size", "4", "--random_flip"]  # fmt: skip
    result = ok(launch(*args, "--output_dir", str(out), cwd=tmp_path, processes=2))
    # The main process encodes and writes the cache (inside main_process_first); the other one then reads it.
    assert result.stderr.count("Encoding 24 images with the VAE") == 1
    assert len(list((tmp_path / "cache" / "ddpm_hub_latents").glob("*.safetensors"))) == 1
    assert "batch 4 per device x 2 processes" in result.stderr and (out / "vae").is_dir()
