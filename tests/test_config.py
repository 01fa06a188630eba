"""Config resolved once: the `None` defaults of training filled in one place, the constants in one light module,
one `EvalConfig` behind training's `--eval_*` flags and `ddpm-hub eval`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from conftest import clean_env, make_tiny_pipeline

from ddpm_hub.arguments import parse_config
from ddpm_hub.config import CONFIG_TYPES, EvalConfig, ModelConfig, TrainConfig
from ddpm_hub.defaults import NEW_MODEL_SCHEDULE, resolve_defaults, tracker_hparams
from ddpm_hub.models import get_preset


def test_a_new_model_gets_the_documented_defaults():
    model, run = resolve_defaults(ModelConfig(model="tiny"), TrainConfig())
    assert (model.ddpm_beta_schedule, model.ddpm_num_steps, model.prediction_type) == ("cosine", 1000, "v_prediction")
    assert run.learning_rate == get_preset("tiny").learning_rate
    model, run = resolve_defaults(
        ModelConfig(model="tiny", ddpm_beta_schedule="linear", prediction_type="epsilon"),
        TrainConfig(learning_rate=3e-4),
    )
    assert (model.ddpm_beta_schedule, model.ddpm_num_steps, model.prediction_type) == ("linear", 1000, "epsilon")
    assert run.learning_rate == 3e-4


def test_a_pretrained_model_keeps_its_own_schedule(tmp_path):
    make_tiny_pipeline(beta_schedule="sigmoid", num_train_timesteps=50, prediction_type="epsilon").save_pretrained(
        tmp_path
    )
    model, run = resolve_defaults(ModelConfig(pretrained_model_name_or_path=str(tmp_path)), TrainConfig())
    assert (model.ddpm_beta_schedule, model.ddpm_num_steps, model.prediction_type) == ("sigmoid", 50, "epsilon")
    assert run.learning_rate == 1e-4
    model, _ = resolve_defaults(
        ModelConfig(pretrained_model_name_or_path=str(tmp_path), ddpm_num_steps=80), TrainConfig()
    )
    assert (model.ddpm_beta_schedule, model.ddpm_num_steps) == ("sigmoid", 80)
    with pytest.raises(ValueError, match="is not a loadable pipeline"):
        resolve_defaults(ModelConfig(pretrained_model_name_or_path=str(tmp_path / "missing")), TrainConfig())


def test_every_schedule_default_is_one_the_flags_accept():
    configs = parse_config(CONFIG_TYPES, [f"--{name}={value}" for name, value in NEW_MODEL_SCHEDULE.items()])
    assert all(getattr(configs[0], name) == value for name, value in NEW_MODEL_SCHEDULE.items())


def test_trackers_get_scalars_but_the_record_keeps_null():
    values = {"max_train_samples": None, "channel_mult": [1, 2], "seed": 0, "logger": "tensorboard"}
    assert tracker_hparams(values) == {
        "max_train_samples": "none",
        "channel_mult": "[1, 2]",
        "seed": 0,
        "logger": "tensorboard",
    }
    assert values["max_train_samples"] is None


def test_training_eval_flags_are_eval_config_fields():
    defaults, run = EvalConfig(), TrainConfig()
    for name in ("num_samples", "sampler", "features"):
        assert getattr(run, f"eval_{name}") == getattr(defaults, name)
    # `ddpm-hub eval` takes the model's own step count unless told (else 50); training scores its model at 50.
    assert defaults.num_inference_steps is None and run.eval_num_inference_steps == 50
    assert run.eval_metrics == "fid,kid" and defaults.metrics == "fid,kid,pr"
    assert dataclasses.asdict(run.eval_config()) == dict(
        num_samples=2048, sampler="ddim", num_inference_steps=50, metrics="fid,kid", features="efficientnet-lite0",
        batch_size=run.eval_batch_size, seed=run.seed,
    )  # fmt: skip


def test_config_module_imports_no_heavy_module():
    # Parsing flags (and every --help) needs neither torch nor diffusers nor transformers.
    code = (
        "import sys, ddpm_hub.config, ddpm_hub.cli_config\n"
        "heavy = ['ddpm_hub.training', 'ddpm_hub.train_step', 'ddpm_hub.evaluation', 'ddpm_hub.app',"
        " 'ddpm_hub.text2img', 'ddpm_hub.sampling', 'ddpm_hub.hub', 'torch', 'diffusers', 'transformers']\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(OMP_NUM_THREADS="1"), capture_output=True,
                            text=True, timeout=900, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_training_config_records_the_resolved_defaults_and_keeps_null(tmp_path):
    import json

    from ddpm_hub.train import main as train_main

    out = tmp_path / "run"
    argv = ["--model", "tiny", "--dataset_name", "shapes", "--max_train_samples", "16", "--train_batch_size", "8",
            "--max_train_steps", "1", "--ddpm_num_inference_steps", "1", "--eval_batch_size", "2",
            "--logger", "tensorboard", "--output_dir", str(out)]  # fmt: skip
    assert train_main(argv) == 0
    config = json.loads((out / "training_config.json").read_text())
    assert (config["ddpm_beta_schedule"], config["ddpm_num_steps"], config["prediction_type"]) == (
        "cosine", 1000, "v_prediction",
    )  # fmt: skip
    assert config["learning_rate"] == get_preset("tiny").learning_rate
    # Flags without a value stay JSON null (the TensorBoard hparams got strings: the run above logged them).
    assert config["resume_from_checkpoint"] is None and config["channel_mult"] is None
    assert config["max_train_samples"] == 16
