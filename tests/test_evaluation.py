"""Quality metrics (ddpm_hub/evaluation): the equations, the offline extractor, cached reference statistics,
`ddpm-hub eval` end to end, and evaluation during training (metrics.jsonl, best/, resume)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_hub.cli import main as cli_main
from ddpm_hub.data import draw_shapes
from ddpm_hub.evaluation.features import get_extractor
from ddpm_hub.evaluation.metrics import fid, frechet_distance, inception_score, kid, mmd2_unbiased, precision_recall
from ddpm_hub.evaluation.reference import reference_source, reference_statistics

SMALL = "efficientnet-lite0-40"  # 40-dimensional features: FID from 41+ images, and fast on a CPU


def exact_gaussian_sample(rng, mean, cov, n):
    """n points whose sample mean and (N-1)-covariance are exactly `mean` and `cov`."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened: cov(z) = I exactly
    return mean + z @ np.linalg.cholesky(cov).T


def psd_sqrt(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_fid_equals_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    cov1, cov2 = a @ a.T + np.eye(d), b @ b.T + 0.5 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) + 2
    # Closed form by another route: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), with symmetric eigen-roots.
    root1 = psd_sqrt(cov1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2) - 2 * np.trace(psd_sqrt(root1 @ cov2 @ root1))
    x, y = exact_gaussian_sample(rng, mu1, cov1, 200), exact_gaussian_sample(rng, mu2, cov2, 300)
    assert fid(x, y) == pytest.approx(expected, rel=1e-9)
    # Diagonal covariances: |mu1 - mu2|² + Σ (σ1 - σ2)².
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    assert frechet_distance(np.zeros(3), np.diag(s1), np.ones(3), np.diag(s2)) == pytest.approx(3 + 1 + 0 + 4)
    assert fid(x, x) == pytest.approx(0, abs=1e-8)


def test_kid_is_unbiased_and_positive_for_a_shift():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    same_mean, same_std = kid(x, y, num_subsets=50, subset_size=200)
    shifted_mean, _ = kid(x, y + 0.5, num_subsets=50, subset_size=200)
    assert abs(same_mean) < 3 * same_std and abs(same_mean) < 0.02 * shifted_mean
    assert shifted_mean > 10 * same_std
    # The estimator is the paper's double sum without i == j terms.
    small_x, small_y = x[:5], y[:7]
    k = lambda p, q: (p @ q / 16 + 1) ** 3  # noqa: E731
    brute = (
        sum(k(small_x[i], small_x[j]) for i in range(5) for j in range(5) if i != j) / 20
        + sum(k(small_y[i], small_y[j]) for i in range(7) for j in range(7) if i != j) / 42
        - 2 * sum(k(p, q) for p in small_x for q in small_y) / 35
    )
    assert mmd2_unbiased(small_x, small_y) == pytest.approx(brute, rel=1e-10)


def test_precision_recall_on_constructed_manifolds():
    rng = np.random.default_rng(2)
    real = rng.uniform(0, 1, (600, 2))
    half = rng.uniform(0, 1, (600, 2)) * [0.5, 1.0]  # samples covering only the left half of the data
    precision, recall = precision_recall(real, half)
    assert precision > 0.95 and 0.35 < recall < 0.65
    precision, recall = precision_recall(real, real + 10)  # nowhere near the data
    assert precision == 0 and recall == 0


def test_inception_score_of_confident_and_collapsed_classifiers():
    one_hot = np.eye(10)[np.arange(200) % 10]
    assert inception_score(one_hot, num_splits=4)[0] == pytest.approx(10, rel=1e-6)
    assert inception_score(np.eye(10)[np.zeros(200, int)], num_splits=4)[0] == pytest.approx(1)


def test_offline_extractor_is_independent_of_batch_size():
    images = torch.from_numpy(np.stack([np.asarray(im).transpose(2, 0, 1) for im in draw_shapes(4, size=32, seed=3)]))
    extractor = get_extractor("efficientnet-lite0")
    whole = extractor.extract(images, batch_size=4)
    assert whole.features.shape == (4, 1280) and whole.features.dtype == np.float64
    for batch_size in (1, 3):
        # Equal up to float32 rounding (oneDNN may pick another convolution algorithm for another batch shape).
        np.testing.assert_allclose(extractor.extract(images, batch_size=batch_size).features, whole.features, atol=2e-6)
    assert not np.allclose(whole.features[0], whole.features[1])  # different images, different features
    np.testing.assert_allclose(whole.probabilities.sum(axis=1), 1, rtol=1e-6)


def save_shapes(folder: Path, count: int, size: int = 16, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(draw_shapes(count, size=size, seed=seed)):
        image.save(folder / f"{i:03d}.png")
    return folder


def test_reference_statistics_are_cached_and_recomputed_when_the_folder_changes(tmp_path):
    folder = save_shapes(tmp_path / "data", 8)
    extractor = get_extractor(SMALL)

    def statistics(extractor):
        identity, images = reference_source(str(folder))  # a new identity: the folder as it is now
        return reference_statistics(
            extractor, identity, resolution=16, cache_dir=tmp_path / "cache", images=lambda: images(16, 3)
        )

    first = statistics(extractor)
    again = statistics(extractor)
    assert not first.from_cache and again.from_cache and again.cache_file == first.cache_file
    np.testing.assert_array_equal(again.features, first.features)
    assert first.num_images == 8 and first.mu.shape == (40,) and first.sigma.shape == (40, 40)

    draw_shapes(1, size=16, seed=99)[0].save(folder / "003.png")  # one image replaced
    changed = statistics(extractor)
    assert not changed.from_cache and not np.array_equal(changed.features, first.features)
    draw_shapes(1, size=16, seed=7)[0].save(folder / "new.png")  # one image added
    grown = statistics(extractor)
    assert not grown.from_cache and grown.num_images == 9
    assert not statistics(get_extractor(f"{SMALL[:-3]}-80")).from_cache  # per extractor


def test_features_from_different_extractors_are_never_compared(tmp_path):
    from ddpm_hub.evaluation.evaluate import score

    identity, pixels = reference_source(str(save_shapes(tmp_path / "data", 4)))
    reference = reference_statistics(
        get_extractor(SMALL), identity, resolution=16, cache_dir=tmp_path, images=lambda: pixels(16, 3)
    )
    images = torch.from_numpy(np.stack([np.asarray(im).transpose(2, 0, 1) for im in draw_shapes(4, size=16, seed=1)]))
    with pytest.raises(
        ValueError, match=f"from {SMALL[:-3]}-80 cannot be compared with reference statistics from {SMALL}"
    ):
        score(get_extractor(f"{SMALL[:-3]}-80").extract(images), reference, ("kid",))
    assert score(get_extractor(SMALL).extract(images), reference, ("kid",))["kid_mean"] != 0


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        status = cli_main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_eval_cli_on_a_tiny_model_and_on_its_saved_images(saved_pipeline_dir, tmp_path, capsys):
    reference = save_shapes(tmp_path / "reference", 48)
    common = ["--reference", str(reference), "--features", SMALL, "--cache_dir", str(tmp_path / "cache"), "--seed", "5"]
    status, out, err = run_cli(
        ["eval", str(saved_pipeline_dir), *common, "--num_samples", "44", "--num_inference_steps", "2",
         "--batch_size", "16", "--metrics", "fid,kid,pr", "--save_images", str(tmp_path / "generated"),
         "--output", str(tmp_path / "model.json")], capsys,
    )  # fmt: skip
    assert status == 0, err
    result = json.loads((tmp_path / "model.json").read_text())
    assert result["extractor"] == SMALL and result["num_images"] == 44 and result["resolution"] == 16
    assert result["sampler"] == "ddim" and result["num_inference_steps"] == 2 and result["reference_images"] == 48
    assert result["fid"] > 0 and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1 and "kid_std" in result
    assert re.search(r"^FID\s+\d", out, re.M) and re.search(rf"^extractor\s+{SMALL}", out, re.M)
    assert len(list((tmp_path / "generated").glob("*.png"))) == 44

    # The saved PNGs score exactly as the images did in memory (same uint8 pixels), reusing the cached reference.
    status, out, err = run_cli(["eval", str(tmp_path / "generated"), *common, "--metrics", "fid,kid",
                                "--output", str(tmp_path / "folder.json")], capsys)  # fmt: skip
    assert status == 0, err
    from_folder = json.loads((tmp_path / "folder.json").read_text())
    # (The extractor's batches differ in size, so its float sums may differ in their last bits.)
    assert from_folder["fid"] == pytest.approx(result["fid"], rel=1e-6)
    assert from_folder["kid_mean"] == pytest.approx(result["kid_mean"], rel=1e-6)
    assert from_folder["num_images"] == 44 and from_folder["sampler"] == "images from folder"
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_eval_cli_inception_score_needs_a_classifier(saved_pipeline_dir, tmp_path, capsys):
    reference = save_shapes(tmp_path / "reference", 6)
    status, out, err = run_cli(
        ["eval", str(saved_pipeline_dir), "--reference", str(reference), "--metrics", "is", "--num_samples", "6",
         "--num_inference_steps", "1", "--cache_dir", str(tmp_path / "cache"), "--output", str(tmp_path / "is.json")],
        capsys,
    )  # fmt: skip
    assert status == 0, err
    result = json.loads((tmp_path / "is.json").read_text())
    assert result["extractor"] == "efficientnet-lite0" and 1 <= result["inception_score_mean"] <= 1000
    assert "fid" not in result


@pytest.mark.parametrize(
    "args, message",
    [
        (["--features", "clip"], "--features 'clip' is not one of: efficientnet-lite0"),
        (["--metrics", "fid,lpips"], "--metrics 'lpips' is not one of: fid, kid, pr, is"),
        (["--reference", "EMPTY"], "--reference '.*empty' holds no image files"),
        (
            ["--num_samples", "40"],
            "--num_samples 40 is too few for FID with efficientnet-lite0-40 .*more than 40 images",
        ),
        (["--features", "efficientnet-lite0", "--num_samples", "1000"], "1000 is too few for FID .*1280-dimensional"),
        (["--features", "inception", "--metrics", "kid"], "--features inception needs inception-2015-12-05.pt"),
    ],
)
def test_eval_bad_input_is_one_line(saved_pipeline_dir, tmp_path, capsys, monkeypatch, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    monkeypatch.setenv("DDPM_HUB_INCEPTION", str(tmp_path / "missing" / "inception-2015-12-05.pt"))
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    base = ["eval", str(saved_pipeline_dir), "--reference", "shapes", "--features", SMALL, "--num_samples", "48",
            "--num_inference_steps", "1", "--cache_dir", str(tmp_path / "cache"),
            "--output", str(tmp_path / "r.json")]  # fmt: skip
    status, out, err = run_cli(base + args, capsys)
    assert status in (1, 2)
    error = err.strip().splitlines()[-1]
    assert re.match(r"ddpm-hub( eval)?: error: ", error) and re.search(message, error), err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eval_steps", "2", "--eval_features", "vgg"], "--eval_features 'vgg' is not one of"),
        (["--eval_steps", "2", "--eval_metrics", "fid,lpips"], "--eval_metrics 'lpips' is not one of"),
        (["--eval_steps", "2", "--eval_metrics", "fid,ssim"], "--eval_metrics ssim score a super-resolution run"),
        (["--eval_steps", "2", "--eval_num_samples", "100"], "--eval_num_samples 100 is too few for FID"),
        (["--eval_epochs", "0"], "--eval_epochs must be positive"),
    ],
)
def test_training_eval_flags_fail_fast_with_one_line(tmp_path, capsys, args, message):
    from ddpm_hub.train import main as train_main

    try:
        code = train_main(["--output_dir", str(tmp_path / "out"), "--model", "tiny", *args])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train_unconditional.py: error: ") and re.search(message, error), error


def test_training_with_eval_steps_keeps_the_best_model_and_resumes_with_its_score(tmp_path, monkeypatch, caplog):
    import logging

    from test_train import TINY, metrics_log

    from ddpm_hub.train import main as train_main

    # Both runs in this process: the reference cache is its environment's, the log caplog's.
    monkeypatch.setenv("DDPM_HUB_CACHE", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    args = [*TINY, "--output_dir", str(out), "--checkpointing_steps", "3", "--save_images_epochs", "100",
            "--eval_steps", "3", "--eval_num_samples", "44", "--eval_features", SMALL,
            "--eval_num_inference_steps", "2", "--eval_batch_size", "22"]  # fmt: skip
    assert train_main([*args, "--max_train_steps", "3"]) == 0
    assert "FID from 44 images is biased" in caplog.text  # the small-sample warning
    fids = [line for line in metrics_log(out) if "eval_fid" in line]
    assert [line["step"] for line in fids] == [3] and fids[0]["eval_fid"] > 0 and "eval_kid_mean" in fids[0]
    assert (out / "best" / "model_index.json").is_file() and (out / "best" / "unet").is_dir()
    best = json.loads((out / "best" / "eval_results.json").read_text())
    assert best["step"] == 3 and best["fid"] == pytest.approx(fids[0]["eval_fid"]) and best["extractor"] == SMALL
    state = json.loads((out / "checkpoint-3" / "training_state.json").read_text())
    assert state["best_fid"]["fid"] == pytest.approx(fids[0]["eval_fid"])
    card_metrics = json.loads((out / "metrics.json").read_text())
    assert (
        card_metrics["best_fid"] == pytest.approx(fids[0]["eval_fid"], rel=1e-5)
        and SMALL in card_metrics["eval_settings"]
    )
    assert "best_fid" in (out / "README.md").read_text()

    (out / "best" / "eval_results.json").touch()
    caplog.clear()
    assert train_main([*args, "--max_train_steps", "6", "--resume_from_checkpoint", "latest"]) == 0
    assert f"Best FID so far: {best['fid']:.4g} at step 3" in caplog.text
    fids = [line for line in metrics_log(out) if "eval_fid" in line]
    assert [line["step"] for line in fids] == [3, 6]
    state = json.loads((out / "checkpoint-6" / "training_state.json").read_text())
    assert state["best_fid"]["fid"] == pytest.approx(min(f["eval_fid"] for f in fids))
    best_now = json.loads((out / "best" / "eval_results.json").read_text())
    assert best_now["step"] == state["best_fid"]["step"]  # best/ moved only if step 6 was better


@pytest.mark.slow
def test_eval_under_accelerate_launch_with_two_processes_matches_one(saved_pipeline_dir, tmp_path, capsys):
    """Each process samples its share of the seeds and the first gathers: the numbers do not depend on the split."""
    import subprocess

    from conftest import SUBPROCESS_TIMEOUT, clean_env
    from test_train import ACCELERATE, _free_port

    args = ["eval", str(saved_pipeline_dir), "--reference", "shapes", "--features", SMALL, "--num_samples", "42",
            "--num_inference_steps", "2", "--metrics", "fid,kid", "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    status, _, err = run_cli([*args, "--output", str(tmp_path / "one.json")], capsys)
    assert status == 0, err
    command = [ACCELERATE, "launch", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--multi_gpu", "--main_process_port", str(_free_port()),
               "-m", "ddpm_hub.cli", *args, "--output", str(tmp_path / "two.json")]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["num_images"] == 42 and two["fid"] == pytest.approx(one["fid"], rel=1e-9)


def test_an_inception_file_with_the_wrong_digest_is_refused_before_it_is_loaded(
    tmp_path, monkeypatch, capsys, saved_pipeline_dir
):
    import torch

    wrong = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(wrong))  # loadable TorchScript: only the digest tells
    monkeypatch.setenv("DDPM_HUB_INCEPTION", str(wrong))
    loaded = []
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: loaded.append(args))
    status, _, err = run_cli(["eval", str(saved_pipeline_dir), "--reference", "shapes", "--features", "inception",
                              "--metrics", "kid", "--num_samples", "8", "--num_inference_steps", "1",
                              "--output", str(tmp_path / "r.json")], capsys)  # fmt: skip
    assert status in (1, 2) and not loaded
    assert "is not the published inception-2015-12-05.pt (sha256" in err.strip().splitlines()[-1]
