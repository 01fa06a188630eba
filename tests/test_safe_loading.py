"""Models load from safetensors only; small bad inputs are one line (issue 20, items 10 and 12)."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_pipeline

from ddpm_hub.cli import main as cli_main


def pickled_pipeline(folder):
    """A saved pipeline whose UNet weights are a pickle (`.bin`), as older diffusers versions wrote them."""
    import torch
    from safetensors.torch import load_file

    make_tiny_pipeline().save_pretrained(folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    return folder


def sample(capsys, *args) -> tuple[int, str]:
    try:
        status = cli_main(["sample", *args, "--num_inference_steps", "1", "--num_images", "1"])
    except SystemExit as exit:
        status = exit.code
    return status, (capsys.readouterr().err.strip().splitlines() or [""])[-1]  # after the usage line: the error


def test_a_folder_with_only_pickled_weights_is_refused_unless_the_user_opts_in(tmp_path, capsys, monkeypatch):
    model = pickled_pipeline(tmp_path / "pickled")
    status, err = sample(capsys, str(model), "--output", str(tmp_path / "grid.png"))
    assert status == 2 and err.startswith("ddpm-hub: error: "), err
    assert "holds only pickled weights (pickled/unet/diffusion_pytorch_model.bin)" in err
    assert "use_safetensors=False).save_pretrained(" in err and "DDPM_HUB_ALLOW_PICKLED_WEIGHTS=1" in err
    assert not (tmp_path / "grid.png").exists()
    monkeypatch.setenv("DDPM_HUB_ALLOW_PICKLED_WEIGHTS", "1")
    status, err = sample(capsys, str(model), "--output", str(tmp_path / "grid.png"))
    assert status == 0 and (tmp_path / "grid.png").is_file(), err


def test_training_from_pickled_weights_is_refused_too(tmp_path, capsys):
    from ddpm_hub.training import main as train_main

    model = pickled_pipeline(tmp_path / "pickled")
    code = train_main(["--output_dir", str(tmp_path / "out"), "--pretrained_model_name_or_path", str(model),
                       "--dataset_name", "shapes", "--max_train_steps", "1"])  # fmt: skip
    assert code == 2 and "holds only pickled weights" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("content", [[], ["unet", "scheduler"], "a string"])
def test_a_model_index_that_is_not_an_object_is_one_line(saved_pipeline_dir, tmp_path, capsys, content):
    import shutil

    model = tmp_path / "odd"
    shutil.copytree(saved_pipeline_dir, model)
    (model / "model_index.json").write_text(json.dumps(content))
    status, err = sample(capsys, str(model), "--output", str(tmp_path / "grid.png"))
    assert status == 2 and "model_index.json holds a" in err, err
