"""The explorer app (ddpm_hub/app/): served on 127.0.0.1, called through gradio_client, and driven in a real browser.

One app is started per module with the tiny saved pipeline and a tiny finished training run (the real training
CLI), and every panel is called through its API name as a remote user would. The browser test starts the real
`ddpm-hub explore` command and drives Debian's headless Chromium with Selenium and chromedriver; it is skipped
only where Chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
from conftest import SUBPROCESS_TIMEOUT, clean_env  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from test_train import TINY, launch, ok  # noqa: E402

from ddpm_hub import schedule_curves  # noqa: E402
from ddpm_hub.app import panels, resolve_targets  # noqa: E402

# ddpm_hub.app.ui (and so gradio, seconds to import) is imported inside the fixtures, so that pytest-xdist workers
# which only collect this file do not pay for it.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--window-size=1280,1500",
]  # fmt: skip
RUN_STEPS = 4
URL_LINE = r"ddpm-hub explorer: (http://127\.0\.0\.1:\d+/?)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pixels(path_or_image) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, PIL.Image.Image) else PIL.Image.open(path_or_image)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def plot_image(plot: dict) -> PIL.Image.Image:
    """The picture inside a gr.Plot value (a matplotlib figure sent as a base64 data URL)."""
    assert plot["type"] == "matplotlib"
    return PIL.Image.open(io.BytesIO(base64.b64decode(plot["plot"].split(",", 1)[1])))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished training run of the tiny model, written by the real training CLI, with previews every 2 steps."""
    folder = tmp_path_factory.mktemp("runs")
    out = folder / "tiny-run"
    ok(launch(*TINY, "--output_dir", str(out), "--max_train_steps", str(RUN_STEPS), "--save_images_steps", "2",
              "--logging_steps", "1", cwd=folder, python=True))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def app(saved_pipeline_dir, tiny_run, tmp_path_factory):
    from ddpm_hub.app.ui import build_app
    from ddpm_hub.app.ui import launch as launch_app

    demo = build_app(
        str(saved_pipeline_dir), run_dir=str(tiny_run), outputs_dir=tmp_path_factory.mktemp("t2i"),
        text2image_model="no-such-org/no-such-model",
    )  # fmt: skip
    url = launch_app(demo, port=free_port(), block=False)
    assert url.startswith("http://127.0.0.1:")
    yield demo, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


@pytest.fixture
def client(app) -> Client:
    return app[1]


def test_every_panel_has_an_api_name(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("load_model", "model_steps", "forward_process", "schedules", "step_by_step", "scrub",
                 "compare_samplers", "upscale", "text_to_image", "upscale_image", "training_monitor"):  # fmt: skip
        assert f"/{name}" in endpoints


def test_forward_process_shows_x_t_the_strip_and_the_schedule_values(client):
    frames = {}
    for t in (0, 600, 999):
        noisy, values, strip, slider = client.predict(
            "cat (Twemoji)", None, "cosine", 1000, False, t, 0, api_name="/forward_process"
        )
        frames[t] = pixels(noisy)
        assert frames[t].shape == (256, 256, 3)
        alpha_bar = float(schedule_curves("cosine").alphas_cumprod[t])
        assert values["t"] == t and values["ᾱ_t"] == pytest.approx(alpha_bar)
        assert values["√ᾱ_t"] == pytest.approx(alpha_bar**0.5)
        assert values["√(1−ᾱ_t)"] == pytest.approx((1 - alpha_bar) ** 0.5)
        assert PIL.Image.open(strip).size == (128 * panels.STRIP_FRAMES, 128 + 14)
        assert slider["maximum"] == 999
    clean = pixels(panels.enlarge(panels.builtin_image("cat (Twemoji)").resize((64, 64), PIL.Image.BICUBIC)))
    assert np.abs(frames[0] - clean).mean() < 20  # t = 0 is almost the image...
    assert np.abs(frames[999] - clean).mean() > 40  # ...t = T-1 almost pure noise
    assert frames[999].std() > 30

    # The loaded model's own schedule goes through its q_sample, at its resolution, over its T.
    noisy, values, _, slider = client.predict(
        "shapes #1", None, "this model", 200, False, 500, 0, api_name="/forward_process"
    )
    assert values["ᾱ_t"] == pytest.approx(float(schedule_curves("linear").alphas_cumprod[500]))
    assert slider["maximum"] == 999 and PIL.Image.open(noisy).size == (256, 256)  # 16 px x 16


def test_uploaded_image_and_bad_upload(client, tmp_path):
    photo = tmp_path / "photo.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 90, 4), dtype=np.uint8), "RGBA").save(photo)
    noisy, *_ = client.predict("cat (Twemoji)", handle_file(str(photo)), "linear", 1000, False, 10, 0,
                               api_name="/forward_process")  # fmt: skip
    assert PIL.Image.open(noisy).size == (256, 256)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(AppError, match="Cannot read 'broken.png' as an image"):
        client.predict("cat (Twemoji)", handle_file(str(broken)), "linear", 1000, False, 10, 0,
                       api_name="/forward_process")  # fmt: skip


def test_schedules_plot_and_the_model_schedule_marked(client, app):
    plot = plot_image(client.predict(["linear", "cosine", "sigmoid"], 500, True, api_name="/schedules"))
    assert plot.width > 800 and pixels(plot).std() > 10

    pipeline = app[0].explorer.pipeline
    figure = panels.schedule_figure(500, ["linear", "quadratic"], zero_terminal_snr=True, pipeline=pipeline)
    alpha_axis, snr_axis, beta_axis = figure.axes
    labels = [line.get_label() for line in alpha_axis.lines]
    assert labels == ["linear", "linear, zero SNR", "quadratic", "quadratic, zero SNR", "this model (linear)"]
    assert snr_axis.get_yscale() == "log" and len(beta_axis.lines) == 5
    # The zero-terminal-SNR curve really ends at alpha_bar = 0; the model's curve spans its own 1000 steps.
    assert alpha_axis.lines[1].get_ydata()[-1] == 0 and len(alpha_axis.lines[-1].get_xdata()) == 1000


def test_step_by_step_returns_every_step_and_an_animated_gif(client):
    steps = 5
    slider, frame, final, gif, info = client.predict("ddim", steps, 0.0, 3, api_name="/step_by_step")
    assert slider["maximum"] == steps and slider["value"] == steps
    assert f"{steps} steps" in info
    with PIL.Image.open(gif) as animation:
        assert animation.n_frames == steps
    last = pixels(frame)
    assert last.shape[1] == 2 * 192 and last.std() > 5  # x_t | predicted x_0
    assert pixels(final).std() > 5

    first = pixels(client.predict(1, api_name="/scrub"))  # scrub back to the first step (pure noise)
    assert first.shape == last.shape and np.abs(first - last).mean() > 5

    # Same seed, same sampler: the same image again.
    assert np.array_equal(pixels(client.predict("ddim", steps, 0.0, 3, api_name="/step_by_step")[2]), pixels(final))


def test_samplers_compared_side_by_side_with_their_times(client):
    gallery, table = client.predict(["ddim", "euler", "dpmpp_2m"], 3, 1, api_name="/compare_samplers")
    assert [item["caption"].split(":")[0] for item in gallery] == ["ddim", "euler", "dpmpp_2m"]
    assert all(re.fullmatch(r"\w+: \d+\.\d\d s", item["caption"]) for item in gallery)
    images = [pixels(item["image"]) for item in gallery]
    assert all(image.shape == (128, 128, 3) and image.std() > 5 for image in images)
    assert np.abs(images[0] - images[1]).mean() > 1  # different samplers, different images
    assert [row[0] for row in table["data"]] == ["ddim", "euler", "dpmpp_2m"]
    assert all(row[1] > 0 for row in table["data"])


def test_step_sliders_start_at_the_models_own_count(app, saved_pipeline_dir, tiny_run, tmp_path):
    # A distilled student records its step count (`default_num_inference_steps`); a trained model records none: 20.
    assert "default_num_inference_steps" not in json.loads((tiny_run / "model_index.json").read_text())
    from ddpm_hub import DDPMHubPipeline
    from ddpm_hub.app.ui import build_app

    tiny = DDPMHubPipeline.from_pretrained(saved_pipeline_dir)
    student = tmp_path / "student"
    DDPMHubPipeline(tiny.unet, tiny.scheduler, default_num_inference_steps=3).save_pretrained(student)

    def sliders(demo) -> list[int]:
        blocks = {block.elem_id: block for block in demo.blocks.values()}
        return [blocks["steps"].value, blocks["compare-steps"].value, blocks["upscale-steps"].value]

    assert sliders(build_app(str(student))) == [3, 3, 3] and sliders(app[0]) == [20, 20, 20]
    # Loading a model sets this visitor's sliders to its count; the panels, given no count, sample at it too.
    visitor = Client(app[1].src, verbose=False)
    visitor.predict(str(student), api_name="/load_model")
    assert list(visitor.predict(api_name="/model_steps")) == [3, 3, 3]
    visitor.predict(str(saved_pipeline_dir), api_name="/load_model")
    assert list(visitor.predict(api_name="/model_steps")) == [20, 20, 20]
    student_pipe = DDPMHubPipeline.from_pretrained(student)
    assert len(panels.sample_trajectory(student_pipe).timesteps) == 3
    assert len(panels.sample_trajectory(tiny, num_inference_steps=2).timesteps) == 2


def test_training_monitor_follows_a_run(client, tiny_run):
    status, plot, gallery, settings = client.predict(str(tiny_run), api_name="/training_monitor")
    assert "finished" in status and f"at step {RUN_STEPS}" in status
    assert settings["max_train_steps"] == RUN_STEPS and settings["model"] == "tiny"
    previews = sorted((tiny_run / "samples").glob("step-*.png"), reverse=True)
    assert len(gallery) == len(previews) >= 2
    assert gallery[0]["caption"] == f"step {RUN_STEPS}"
    assert PIL.Image.open(gallery[0]["image"]).size == PIL.Image.open(previews[0]).size
    assert plot_image(plot).width < 1000  # loss only

    # Once a quality metric is logged, the next refresh plots it beside the loss.
    with open(tiny_run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": RUN_STEPS, "fid": 123.5, "kid": 0.25}) + "\n")
    status, plot, _, _ = client.predict(str(tiny_run), api_name="/training_monitor")
    assert "fid 123.5" in status and "kid 0.25" in status
    assert plot_image(plot).width > 1000  # loss and quality side by side


def test_errors_are_messages_and_the_app_keeps_working(client, tmp_path, saved_pipeline_dir):
    with pytest.raises(AppError, match="No training output folder"):
        client.predict(str(tmp_path / "missing"), api_name="/training_monitor")
    not_a_pipeline = tmp_path / "empty"
    not_a_pipeline.mkdir()
    status, _ = client.predict(str(not_a_pipeline), api_name="/load_model")
    assert "is not a pipeline folder" in status and f"Still using {saved_pipeline_dir}" in status
    status, _ = client.predict(str(tmp_path / "missing"), api_name="/load_model")
    assert "is neither an existing local folder nor a Hub id" in status
    status, _ = client.predict("no-such-org/no-such-model", api_name="/load_model")
    assert "Cannot load 'no-such-org/no-such-model' (offline" in status
    with pytest.raises(AppError, match="nope is not in the list of choices"):
        client.predict("nope", 2, 0.0, 0, api_name="/step_by_step")
    with pytest.raises(AppError, match="Cannot load 'no-such-org/no-such-model' from the Hub"):
        client.predict("no-such-org/no-such-model", "a cat", "", "model default", 2, 7.5, 0, 0, 0,
                       api_name="/text_to_image")  # fmt: skip
    with pytest.raises(AppError, match="This model generates from noise; load a super-resolution model"):
        client.predict(panels.BUILTIN_IMAGES[0], None, "ddim", 2, 0, 0, api_name="/upscale")
    # The previous model is still loaded and samples.
    assert client.predict("euler", 2, 0.0, 0, api_name="/step_by_step")[0]["maximum"] == 2


def test_text_to_image_loads_its_model_on_first_use_and_shows_the_saved_metadata(client, app, tmp_path):
    from tiny_sd import build_tiny_sd

    model = tmp_path / "tiny-sd"
    build_tiny_sd(model)
    panel = app[0].explorer.text2image
    assert panel._loaded is None or panel._key[0] != str(model)  # nothing loaded until the panel is used
    image, metadata = client.predict(str(model), "a cat in a hat", "blurry", "ddim", 2, 5.0, 32, 32, 7,
                                     api_name="/text_to_image")  # fmt: skip
    assert PIL.Image.open(image).size == (32, 32)
    assert metadata["prompt"] == "a cat in a hat" and metadata["negative_prompt"] == "blurry"
    assert metadata["seed"] == 7 and metadata["scheduler"] == "ddim" and metadata["num_inference_steps"] == 2
    saved = list(panel.output_dir.glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text()) == metadata


def test_text_to_image_shows_the_clip_score_and_upscales_4x(client, app, tmp_path):
    from tiny_sd import build_tiny_clip, build_tiny_sd, build_tiny_upscaler

    from ddpm_hub.text2img import CLIPScorer

    for name, build in (("sd", build_tiny_sd), ("clip", build_tiny_clip), ("upscaler", build_tiny_upscaler)):
        build(tmp_path / name)
    clip = str(tmp_path / "clip")
    image, metadata = client.predict(str(tmp_path / "sd"), "a cat", "", "ddim", 2, 5.0, 32, 32, 3, True, clip,
                                     api_name="/text_to_image")  # fmt: skip
    assert 0 <= metadata["clip_score"] <= 100 and metadata["clip_model"] == str((tmp_path / "clip").resolve())
    upscaled, saved = client.predict(handle_file(image), metadata, str(tmp_path / "upscaler"), 30, 2, 9.0, True, clip,
                                     api_name="/upscale_image")  # fmt: skip
    assert PIL.Image.open(upscaled).size == (128, 128)
    assert saved["upscaler"] == str((tmp_path / "upscaler").resolve()) and saved["upscale_noise_level"] == 30
    assert (saved["prompt"], saved["seed"], saved["width"]) == ("a cat", 3, 32)  # the generated image's own
    # Scored again: the score is of the upscaled pixels.
    assert saved["clip_score"] == pytest.approx(CLIPScorer.from_pretrained(clip)(upscaled, "a cat")[0], abs=1e-4)
    sidecars = [json.loads(path.read_text()) for path in app[0].explorer.text2image.output_dir.glob("*.json")]
    assert metadata in sidecars and saved in sidecars
    with pytest.raises(AppError, match="Generate an image first"):
        client.predict(None, None, str(tmp_path / "upscaler"), 20, 2, 9.0, False, clip, api_name="/upscale_image")


def test_explore_finds_the_newest_training_output(tmp_path, tiny_run, saved_pipeline_dir):
    assert resolve_targets(None, tmp_path) == (None, None)
    (tmp_path / "old-run").mkdir()
    (tmp_path / "old-run" / "metrics.jsonl").write_text("")
    os.utime(tmp_path / "old-run" / "metrics.jsonl", (1, 1))
    os.utime(tmp_path / "old-run", (1, 1))
    assert resolve_targets(None, tmp_path) == (None, str(tmp_path / "old-run"))  # a run with no pipeline yet
    shutil.copytree(tiny_run, tmp_path / "new-run")
    assert resolve_targets(None, tmp_path) == (str(tmp_path / "new-run"),) * 2
    assert resolve_targets(str(saved_pipeline_dir), tmp_path) == (str(saved_pipeline_dir), None)  # not a run


def test_space_app_loads_the_model_named_by_its_variable(monkeypatch, saved_pipeline_dir):
    import runpy

    from conftest import REPO_ROOT

    monkeypatch.setenv("DDPM_HUB_MODEL", str(saved_pipeline_dir))
    demo = runpy.run_path(str(REPO_ROOT / "space" / "app.py"), run_name="space_app")["demo"]
    assert demo.explorer.pipeline is not None and demo.explorer.source == str(saved_pipeline_dir)
    requirements = (REPO_ROOT / "space" / "requirements.txt").read_text()
    assert "ddpm-hub[app]" in requirements


def test_explore_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    from ddpm_hub.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # as where gradio is not installed
    assert main(["explore"]) == 1
    assert capsys.readouterr().err.strip() == 'ddpm-hub explore: The explorer needs Gradio: pip install "ddpm-hub[app]"'


# ------------------------------------------------------------------------------------------------------------------
# A real browser
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explore_command(tiny_run, tmp_path_factory):
    """`ddpm-hub explore` started as a user would, in a folder whose newest training output is the tiny run."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    cwd = tmp_path_factory.mktemp("explore")
    shutil.copytree(tiny_run, cwd / "ddpm-model")
    command = [str(Path(sys.executable).with_name("ddpm-hub")), "explore", "--port", str(free_port())]
    process = subprocess.Popen(command, cwd=cwd, env=clean_env(GRADIO_ANALYTICS_ENABLED="False"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    # Read its output all along, so that a full pipe never blocks the server.
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        url = _wait(
            lambda: next((m.group(1) for line in list(lines) if (m := re.search(URL_LINE, line))), None)
            or (process.poll() is not None and pytest.fail("ddpm-hub explore exited:\n" + "".join(lines))),
            timeout=SUBPROCESS_TIMEOUT, what="ddpm-hub explore to print its URL",
        )  # fmt: skip
        yield url, "".join(lines)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def _wait(condition, timeout: float = 60, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def test_browser_shows_every_panel_and_the_t_slider_changes_x_t(explore_command, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from ddpm_hub.app.ui import TITLES

    url, log = explore_command
    assert "Loaded " in log  # the newest training output in the folder was found and loaded
    browser.get(url)

    def x_t_source():
        images = browser.find_elements(By.CSS_SELECTOR, "#forward-xt img")
        return images[0].get_attribute("src") if images and images[0].get_attribute("src") else None

    first = _wait(x_t_source, what="the first x_t image")
    shown = (
        "return [...document.querySelectorAll('#forward-xt img, #forward-strip img')]"
        ".filter(image => image.naturalWidth > 0).length"
    )
    _wait(lambda: browser.execute_script(shown) == 2, what="x_t and the strip to be drawn")
    tabs = [tab.get_attribute("textContent").strip() for tab in browser.find_elements(By.CSS_SELECTOR, "[role=tab]")]
    for title in TITLES.values():
        assert title in tabs
    assert "ddpm-hub explorer" in browser.title
    assert "Loaded " in browser.find_element(By.ID, "model-status").text

    screenshot = PIL.Image.open(io.BytesIO(browser.get_screenshot_as_png()))
    # DDPM_HUB_SCREENSHOT=docs/explorer.png python -m pytest tests/test_app.py -k browser  (README's picture)
    if os.environ.get("DDPM_HUB_SCREENSHOT"):
        screenshot.convert("RGB").quantize(64).save(os.environ["DDPM_HUB_SCREENSHOT"], optimize=True)
    shot = pixels(screenshot)
    assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 200  # not blank: text, images

    box = browser.find_element(By.CSS_SELECTOR, "#forward-t input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("900", Keys.ENTER)
    second = _wait(lambda: (x_t_source() or first) != first and x_t_source(), what="x_t to change")

    def fetch(src: str) -> np.ndarray:
        with urllib.request.urlopen(src, timeout=30) as response:
            return pixels(PIL.Image.open(io.BytesIO(response.read())))

    assert np.abs(fetch(first) - fetch(second)).mean() > 10  # t = 250 -> 900: visibly noisier


def test_step_by_step_with_a_classifier_steers_towards_its_class(client, tmp_path):
    import torch
    from conftest import make_tiny_pipeline

    from ddpm_hub.classifier import classifier_for

    torch.manual_seed(0)
    classifier_for(make_tiny_pipeline(), ["a", "b"], width=8, layers_per_block=1).save_pretrained(tmp_path / "clf")
    plain = client.predict("ddim", 3, 0.0, 1, api_name="/step_by_step")
    guided = client.predict("ddim", 3, 0.0, 1, "b", str(tmp_path / "clf"), 8.0, api_name="/step_by_step")
    assert guided[0]["maximum"] == 3 and np.abs(pixels(guided[2]) - pixels(plain[2])).mean() > 0
    with pytest.raises(Exception, match="Unknown class label 'c'; the classifier knows: a, b."):
        client.predict("ddim", 3, 0.0, 1, "c", str(tmp_path / "clf"), 8.0, api_name="/step_by_step")
