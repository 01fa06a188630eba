"""Sharing trained pipelines on the Hugging Face Hub.

Only the pipeline travels (model_index.json, unet/, scheduler/, a latent model's vae/, the pipeline's source files,
the model card and its sample grid, the training settings); checkpoints, tracker logs and optimizer state stay
local unless the user asks for checkpoints, which then go to a branch of their own. A push uploads a hard-linked
snapshot of those files, so training can keep rewriting the folder meanwhile. Failed uploads are retried with
backoff, then reported; the local folder is never touched by a push. The token is passed to the client and never
printed or logged.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from .export import PIPELINE_ENTRIES
from .files import writing
from .model_card import (
    CONFIG_FILE,
    DEFAULT_USER_NOTES,
    METRICS_FILE,
    SAMPLE_GRID,
    card_info_for_run,
    extract_user_notes,
    write_model_card,
)

logger = logging.getLogger(__name__)

# Stages the files of one push: snapshot(output_dir, staging, repo_id, api, revision).
Snapshot = Callable[[Path, Path, str, HfApi, "str | None"], None]

# What a pushed repo holds; anything else in an output folder stays local.
PIPELINE_FILES = (*PIPELINE_ENTRIES, "README.md", SAMPLE_GRID, CONFIG_FILE, METRICS_FILE)
CHECKPOINT_BRANCH = "checkpoints"
RETRY_ATTEMPTS = 4
# A push snapshots the files next to them (hard links: instant, and safe from a training run rewriting them).
STAGING_ADVICE = "a push stages its files inside the folder it uploads; make the folder writable, or copy it elsewhere"
RETRY_DELAY_SECONDS = float(os.environ.get("DDPM_HUB_RETRY_DELAY", "2"))

T = TypeVar("T")
STAGING_PREFIX = ".hub-push-"
_LIVE_STAGING: set[Path] = set()  # this process's snapshots not yet removed; an exit removes them


def _remove_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    _LIVE_STAGING.discard(staging)


@atexit.register
def _remove_all_staging() -> None:
    for staging in list(_LIVE_STAGING):
        _remove_staging(staging)


def remove_stale_staging(output_dir: Path) -> list[Path]:
    """Delete snapshots left in `output_dir` by pushes that were killed (their process is gone)."""
    removed = []
    for staging in Path(output_dir).glob(f"{STAGING_PREFIX}*"):
        pid = staging.name[len(STAGING_PREFIX) :].split("-")[0]
        if staging.is_dir() and not staging.is_symlink() and not (pid.isdigit() and _process_alive(int(pid))):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    if removed:
        logger.info("Removed %d upload snapshot(s) left by an interrupted push.", len(removed))
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Make SIGTERM end the process through Python's exit (finally blocks and atexit run), in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_transient(error: Exception) -> bool:
    """Server errors, rate limits and dropped connections are worth retrying; 4xx answers are not."""
    if isinstance(error, HfHubHTTPError):
        status = getattr(error.response, "status_code", None)
        return status is None or status == 429 or status >= 500
    return isinstance(error, (ConnectionError, TimeoutError, OSError)) or type(error).__module__.startswith("httpx")


def with_retries(action: Callable[[], T], what: str, attempts: int = RETRY_ATTEMPTS) -> T:
    """Run `action`, retrying transient failures with exponential backoff (2, 4, 8 s by default)."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not _is_transient(error):
                raise
            delay = RETRY_DELAY_SECONDS * 2 ** (attempt - 1)
            logger.warning(
                "%s failed (%s); retrying in %.0fs (attempt %d of %d).",
                what,
                _short(error),
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def _short(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def snapshot_pipeline(output_dir: Path, staging: Path, repo_id: str, api: HfApi, revision: str | None) -> None:
    """Hard-link (or copy) the files to push into `staging`, with the model card regenerated for `repo_id`.

    Symbolic links are never followed out of `output_dir` (skipped with a warning), and the settings file keeps
    only names, not the machine's paths.
    """
    link_files(output_dir, staging, PIPELINE_FILES)
    if not (staging / "model_index.json").is_file():
        raise ValueError(f"{output_dir} holds no saved pipeline (model_index.json is missing).")
    if not (staging / CONFIG_FILE).is_file():
        return  # not made by our trainer: its own README.md (if any) goes as it is
    previous = previous_card(staging, api, repo_id, revision)
    hparams, metrics = public_records(staging)
    info = card_info_for_run(hparams, metrics, repo_id)
    info.has_sample_grid = (staging / SAMPLE_GRID).is_file()
    # Written atomically (a new file renamed over the hard link), so output_dir/README.md is left as it was.
    write_model_card(staging, info, previous_card=previous)


def link_files(output_dir: Path, staging: Path, names) -> None:
    """Hard-link (or copy) the files and folders `names` of `output_dir` that exist into `staging`, never following
    a symbolic link out of `output_dir`."""
    for name in names:
        source = output_dir / name
        if not _inside(source, output_dir):
            continue
        if source.is_dir():
            shutil.copytree(source, staging / name, copy_function=_link_or_copy, ignore=_links_leaving(output_dir))
        elif source.is_file():
            _link_or_copy(source, staging / name)


def previous_card(staging: Path, api: HfApi, repo_id: str, revision: str | None) -> str | None:
    """The card whose user notes a regenerated card keeps: the local one if it has notes, else the Hub's."""
    local_card = (staging / "README.md").read_text(encoding="utf-8") if (staging / "README.md").is_file() else None
    return local_card if has_user_notes(local_card) else (remote_card(api, repo_id, revision) or local_card)


def public_records(staging: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The staged settings and metrics files rewritten without the machine's paths (`public_settings`); returns
    them. Each is a hard link to the local file: replaced, never written through."""
    records = []
    for name in (CONFIG_FILE, METRICS_FILE):
        path, values = staging / name, {}
        if path.is_file():
            values = public_settings(json.loads(path.read_text(encoding="utf-8")))
            path.unlink()
            path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        records.append(values)
    return records[0], records[1]


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` (following its links) stays inside `folder`; a link leaving it is reported and skipped."""
    if path.resolve().is_relative_to(folder.resolve()):
        return True
    if os.path.lexists(path):
        logger.warning("Not pushing %s: it is a symbolic link to a file outside %s.", path, folder)
    return False


def _links_leaving(folder: Path) -> Callable[[str, list[str]], set[str]]:
    """A `shutil.copytree` ignore function that leaves out links pointing outside `folder`."""
    return lambda directory, names: {name for name in names if not _inside(Path(directory) / name, folder)}


# Settings that name places on this machine: a reader of the repo needs at most their last part.
_PATH_SETTINGS = (
    "output_dir",
    "train_data_dir",
    "cache_dir",
    "logging_dir",
    "compile_cache_dir",
    "resume_from_checkpoint",
)
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/])(?:~|/)[^\s'\"]*")


def public_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """`training_config.json` as pushed: local paths (output, data, caches, home folders) cut to their basenames."""
    public = {}
    for key, value in hparams.items():
        if isinstance(value, str) and value not in ("None", ""):
            if key in _PATH_SETTINGS or _is_local_path(value):
                value = Path(value).name or value
            else:  # descriptions such as "fine-tuned from /home/me/runs/cats"
                value = _ABSOLUTE_PATH.sub(lambda match: Path(match.group()).name, value)
        public[key] = value
    return public


def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../")) or ("/" in value and os.path.exists(value))


def has_user_notes(card_text: str | None) -> bool:
    """Whether a card's notes section holds something the user wrote."""
    return (extract_user_notes(card_text) or "").strip() not in ("", DEFAULT_USER_NOTES)


def _link_or_copy(source, destination) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def remote_card(api: HfApi, repo_id: str, revision: str | None) -> str | None:
    """The README.md currently in the repo, or None (new repo, or unreachable: the push will tell)."""
    try:
        path = api.hf_hub_download(repo_id, "README.md", revision=revision)
    except Exception:
        return None
    return Path(path).read_text(encoding="utf-8")


class HubPublisher:
    """Pushes a training output folder to one Hub repo.

    Intermediate pushes (`push_async`, `push_checkpoint_async`) run in a background thread; pipeline snapshots
    coalesce (while one uploads, only the newest waits), checkpoints all go. `push_final` waits for them, pushes,
    retries, and returns the commit URL.
    """

    def __init__(
        self,
        api: HfApi,
        repo_id: str,
        output_dir: Path,
        revision: str | None = None,
        push_checkpoints: bool = False,
        snapshot: Snapshot = snapshot_pipeline,
    ):
        self.api, self.repo_id, self.output_dir = api, repo_id, Path(output_dir)
        self.revision, self.push_checkpoints, self.snapshot = revision, push_checkpoints, snapshot
        self._lock = threading.Lock()
        # Uploads waiting for the worker, oldest first: the newest pipeline snapshot, and every checkpoint.
        self._pending: dict[str, tuple[Path, str, dict[str, Any]]] = {}
        self._worker: threading.Thread | None = None

    @classmethod
    def create(
        cls,
        output_dir: str | os.PathLike,
        repo_id: str | None = None,
        *,
        token: str | None = None,
        private: bool = False,
        revision: str | None = None,
        push_checkpoints: bool = False,
        snapshot: Snapshot = snapshot_pipeline,
    ) -> HubPublisher:
        """Check the token, create the repo (private if asked) and the branch; fails fast with a clear error.

        `repo_id` may be "name" (in the token's namespace) or "org/name"; it defaults to the folder's name.
        `snapshot` stages what a push uploads (default: a pipeline's files and its regenerated card).
        """
        api = HfApi(token=token)
        name = repo_id or Path(output_dir).resolve().name
        try:
            repo_id = with_retries(
                lambda: api.create_repo(name, private=private, exist_ok=True).repo_id, f"Creating the Hub repo {name}"
            )
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            if push_checkpoints:
                api.create_branch(repo_id, branch=CHECKPOINT_BRANCH, exist_ok=True)
        except Exception as error:
            raise ValueError(f"Cannot push to the Hub repo {name!r}: {_short(error)}") from error
        logger.info("Pushing to %s/%s", api.endpoint, repo_id)
        remove_stale_staging(Path(output_dir))
        return cls(api, repo_id, Path(output_dir), revision, push_checkpoints, snapshot)

    def _upload(self, folder: Path, commit_message: str, **upload_kwargs) -> str:
        kwargs = dict(
            revision=self.revision,
            # Files gone from the pipeline are deleted in the repo too, but only within the pipeline's own folders.
            delete_patterns=["unet/*", "vae/*", "scheduler/*"],
        )
        kwargs.update(upload_kwargs)
        commit = with_retries(
            lambda: self.api.upload_folder(
                repo_id=self.repo_id, folder_path=folder, commit_message=commit_message, **kwargs
            ),
            f"Uploading to {self.repo_id}",
        )
        return commit.commit_url

    def push(self, commit_message: str) -> str:
        """Upload the pipeline now (with retries); returns the commit URL."""
        staging = self._stage(self._snapshot_pipeline)
        try:
            return self._upload(staging, commit_message)
        finally:
            _remove_staging(staging)

    def _stage(self, fill: Callable[[Path], None]) -> Path:
        """A new temporary folder inside the output folder, filled by `fill`; a failed write is a one-line
        `WriteError` and leaves no folder behind."""
        with writing("the upload's staging copy", self.output_dir, advice=STAGING_ADVICE):
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.output_dir))
            _LIVE_STAGING.add(staging)
            with writing("the upload's staging copy", self.output_dir, staging=staging, advice=STAGING_ADVICE):
                fill(staging)
        return staging

    def _snapshot_pipeline(self, staging: Path) -> None:
        self.snapshot(self.output_dir, staging, self.repo_id, self.api, self.revision)

    def _upload_later(self, key: str, staging: Path, commit_message: str, **upload_kwargs) -> None:
        """Queue an upload of `staging` (deleted afterwards); a newer upload under the same `key` replaces it."""
        with self._lock:
            replaced = self._pending.pop(key, None)
            self._pending[key] = (staging, commit_message, upload_kwargs)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="hub-push", daemon=True)
                self._worker.start()
        if replaced is not None:
            _remove_staging(replaced[0])  # superseded by the newer snapshot: never uploaded

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                staging, commit_message, upload_kwargs = self._pending.pop(next(iter(self._pending)))
            try:
                logger.info("Background push done: %s", self._upload(staging, commit_message, **upload_kwargs))
            except Exception as error:  # an intermediate push may fail; the final one reports for real
                logger.warning("Background push (%s) failed: %s", commit_message, _short(error))
            finally:
                _remove_staging(staging)

    def push_async(self, commit_message: str) -> None:
        """Snapshot now, upload in the background; training does not wait for the network."""
        self._upload_later("pipeline", self._stage(self._snapshot_pipeline), commit_message)

    def push_checkpoint_async(self, checkpoint: Path) -> None:
        """With --hub_push_checkpoints: upload a checkpoint to the 'checkpoints' branch in the background."""
        if not self.push_checkpoints:
            return

        def copy_checkpoint(staging: Path) -> None:  # hard links: the snapshot survives rotation
            shutil.copytree(checkpoint, staging / checkpoint.name, copy_function=_link_or_copy)

        staging = self._stage(copy_checkpoint)
        self._upload_later(
            checkpoint.name, staging, f"Add {checkpoint.name}", revision=CHECKPOINT_BRANCH, delete_patterns=None
        )

    def wait(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.join()

    def push_final(self, commit_message: str) -> str:
        """Wait for background pushes, then push and return the commit URL (raises after the retries)."""
        self.wait()
        url = self.push(commit_message)
        logger.info("Pushed to the Hub: %s", url)
        return url

    def close(self) -> None:
        self.wait()


def push_folder(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload DDPM pipeline with ddpm-hub",
    token: str | None = None,
) -> str:
    """Push an existing training output folder (or any saved pipeline folder); returns the commit URL."""
    if not (Path(output_dir) / "model_index.json").is_file():
        raise ValueError(f"{str(output_dir)!r} holds no saved pipeline (model_index.json is missing).")
    with terminate_as_exit():  # a killed push removes its snapshot too
        publisher = HubPublisher.create(output_dir, repo_id, token=token, private=private, revision=revision)
        return publisher.push_final(commit_message)
