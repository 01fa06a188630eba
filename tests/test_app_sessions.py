"""The explorer shared with others: one visitor's model is theirs alone, only what the server names can be opened,
and every request is bounded (issue 20, item 8). Two `gradio_client` clients are two visitors."""

from __future__ import annotations

import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import PIL.Image
import pytest
from conftest import make_tiny_pipeline
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_app import free_port

from ddpm_hub import schedule_curves

SLIDER_200 = "Steps must be between 1 and 200|greater than maximum value 200"  # the slider's bound, or ours
FORWARD = ("cat (Twemoji)", None, "this model", 1000, False, 500, 0)


@pytest.fixture(scope="module")
def shared(saved_pipeline_dir, tmp_path_factory):
    """An explorer served as if to a network: the tiny pipeline, plus one other allowed model (a cosine schedule)."""
    from ddpm_hub.app.access import Limits
    from ddpm_hub.app.ui import build_app, launch

    folder = tmp_path_factory.mktemp("models")
    other = folder / "cosine-model"
    make_tiny_pipeline(seed=1, beta_schedule="squaredcos_cap_v2").save_pretrained(other)
    outside = folder / "not-allowed"
    make_tiny_pipeline(seed=2).save_pretrained(outside)
    limits = Limits(max_upload_bytes=200_000, max_image_pixels=64 * 64)
    demo = build_app(str(saved_pipeline_dir), outputs_dir=folder / "t2i", text2image_model="no-such-org/no-such-model",
                     exposed=True, allow=[str(other)], limits=limits)  # fmt: skip
    url = launch(demo, port=free_port(), block=False)
    downloads = tmp_path_factory.mktemp("downloads")
    visitors = [Client(url, verbose=False, download_files=str(downloads)) for _ in range(2)]
    yield demo, visitors, other, outside
    demo.close()


def alpha_bar(client) -> float:
    return client.predict(*FORWARD, api_name="/forward_process")[1]["ᾱ_t"]


def test_a_visitors_loaded_model_is_theirs_alone(shared):
    demo, (alice, bob), other, _ = shared
    served = float(schedule_curves("linear").alphas_cumprod[500])
    assert alpha_bar(alice) == pytest.approx(served) and alpha_bar(bob) == pytest.approx(served)
    status, _ = alice.predict(str(other), api_name="/load_model")
    assert status.startswith("Loaded cosine-model") and str(other.parent) not in status
    assert alpha_bar(alice) != pytest.approx(served)  # Alice's own model...
    assert alpha_bar(bob) == pytest.approx(served)  # ...and Bob still has the served one
    assert demo.explorer.source != str(other)
    a = alice.predict("ddim", 2, 0.0, 0, api_name="/step_by_step")[2]
    b = bob.predict("ddim", 2, 0.0, 0, api_name="/step_by_step")[2]
    assert not np.array_equal(np.asarray(PIL.Image.open(a)), np.asarray(PIL.Image.open(b)))


def test_a_shared_explorer_opens_nothing_it_was_not_started_with_and_names_no_path(shared, tmp_path):
    _, (alice, _), _, outside = shared
    messages = []
    for path in (outside, tmp_path / "missing", "/etc", "some-org/some-model"):
        status, _ = alice.predict(str(path), api_name="/load_model")
        assert "only opens the models it was started with" in status, status
        messages.append(status.split(" Still using")[0])
        with pytest.raises(AppError, match="only opens the training folders") as error:
            alice.predict(str(path), api_name="/training_monitor")
        assert str(tmp_path) not in str(error.value)
    assert len(set(messages)) == 1  # the same words whether the path exists or not
    with pytest.raises(AppError, match="only opens the models"):
        alice.predict(str(outside), "a cat", "", "model default", 2, 7.5, 0, 0, 0, api_name="/text_to_image")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.predict(["ddim"] * 200, 2, 0, api_name="/compare_samplers"), "each sampler at most once"),
        (lambda c: c.predict(["ddim", "euler"], 100_000, 0, api_name="/compare_samplers"), SLIDER_200),
        (lambda c: c.predict("ddim", 5000, 0.0, 0, api_name="/step_by_step"), SLIDER_200),
        (
            lambda c: c.predict("cat (Twemoji)", None, "linear", 10**7, False, 5, 0, api_name="/forward_process"),
            "T must be between|greater than maximum value 4000",
        ),
        (
            lambda c: c.predict(
                "no-such-org/no-such-model",
                "a cat",
                "",
                "model default",
                2,
                7.5,
                1024,
                1024,
                0,
                api_name="/text_to_image",
            ),
            "1024x1024 is more than",
        ),
        (
            lambda c: c.predict(
                "no-such-org/no-such-model",
                "a cat",
                "",
                "model default",
                2,
                7.5,
                100_000,
                64,
                0,
                api_name="/text_to_image",
            ),
            "height must be between 8 and 1024",
        ),
        (
            lambda c: c.predict(
                "no-such-org/no-such-model",
                "a cat",
                "",
                "model default",
                10**6,
                7.5,
                0,
                0,
                0,
                api_name="/text_to_image",
            ),
            "Steps must be between 1 and 150|greater than maximum value 150",
        ),
    ],
)
def test_oversized_requests_are_refused_at_once(shared, call, message):
    began = time.monotonic()
    with pytest.raises(AppError, match=message):
        call(shared[1][1])
    assert time.monotonic() - began < 30  # refused before any work (the load of this shared machine aside)


def test_oversized_uploads_are_refused_before_decoding(shared, tmp_path):
    client = shared[1][1]
    big = tmp_path / "big.png"
    PIL.Image.new("RGB", (100, 100)).save(big)  # over this app's 64 x 64 pixel cap, tiny in bytes
    with pytest.raises(AppError, match="100x100 pixels"):
        client.predict(
            "cat (Twemoji)", handle_file(str(big)), "linear", 1000, False, 10, 0, api_name="/forward_process"
        )
    heavy = tmp_path / "heavy.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(heavy)
    assert heavy.stat().st_size > 200_000
    with pytest.raises(Exception, match="(?i)size|large|exceed"):
        client.predict(
            "cat (Twemoji)", handle_file(str(heavy)), "linear", 1000, False, 10, 0, api_name="/forward_process"
        )


def test_work_whose_visitor_cancelled_stops_at_its_next_step(shared, tmp_path_factory, monkeypatch):
    from ddpm_hub.app import panels

    demo, (alice, _), _, _ = shared
    steps, outcome = [], []
    real = panels.sample_trajectory

    def slow_and_watched(pipeline, sampler, num_inference_steps, eta, seed, progress):
        def step(fraction, description):
            steps.append(fraction)
            time.sleep(0.2)  # a slow model: 200 steps would take 40 s
            progress(fraction, description)

        try:
            return real(pipeline, sampler, num_inference_steps, eta, seed, progress=step)
        except BaseException as error:
            outcome.append(type(error).__name__)
            raise

    monkeypatch.setattr(panels, "sample_trajectory", slow_and_watched)
    job = alice.submit("ddim", 200, 0.0, 0, api_name="/step_by_step")
    deadline = time.monotonic() + 300
    while len(steps) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.1)
    assert outcome == ["ClientGone"] and len(steps) < 200
