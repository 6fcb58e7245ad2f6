"""Hugging Face Hub repositories as model sources: ``hf://owner/name[@revision]`` in, ``push`` out.

A kikimimi model repository on the Hub is a kikimimi model folder as it is: ``config.json`` + ``model.safetensors``
(:mod:`kikimimi.checkpoints.ours`) for an encoder or a CLAP model, ``captioner.json`` + ``model.safetensors`` (+
``audio_model/``, the encoder it reads) for a captioner, and a ``README.md`` model card. Nothing is converted.

- :func:`download_hf` fetches a repository (``huggingface_hub.snapshot_download``) into the standard Hub cache
  (``HF_HOME`` / ``HF_HUB_CACHE``) and returns the snapshot folder. ``HF_ENDPOINT`` is read at each call (a
  mirror, or the local server of the tests). Offline (``HF_HUB_OFFLINE=1``, ``KIKIMIMI_OFFLINE=1``, or the Hub
  unreachable) the cached snapshot is used; a repository never downloaded is one line of error.
- :func:`kikimimi.checkpoints.hub.resolve_model_source` sends ``hf://`` sources here, so ``kikimimi.load``,
  ``kikimimi.load_clap``, ``--model`` options and ``init_from`` take them wherever they take a model name.
- The weights' integrity is checked where kikimimi folders are read: ``load_kikimimi`` compares
  ``model.safetensors`` with the ``weights_sha256`` of its ``config.json`` (:mod:`kikimimi.checkpoints.digest`).
- :func:`push_folder` uploads a model folder as one commit (``HfApi.create_repo`` + ``upload_folder``);
  ``dry_run=True`` returns the plan (every file with its size and SHA-256) and contacts nothing.

``huggingface_hub`` is the optional extra ``hub``: ``pip install "kikimimi[hub]"``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kikimimi.checkpoints.digest import sha256_file_cached
from kikimimi.checkpoints.errors import CheckpointError

__all__ = [
    "HF_SCHEME",
    "HubRef",
    "PushFile",
    "PushPlan",
    "download_hf",
    "hub_offline",
    "is_hf_uri",
    "parse_hf_uri",
    "plan_push",
    "push_folder",
]

HF_SCHEME = "hf://"
HUB_EXTRA_HINT = 'pip install "kikimimi[hub]"'
#: ``owner/name``: the Hub's repository id rules (letters, digits, ``-_.``; no ``--`` or ``..``; ≤ 96 chars).
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
#: Files never pushed: caches, temporaries of kikimimi writers and locks.
_SKIP_NAMES = (".kikimimi.lock", ".kikimimi-job.json")


@dataclass(frozen=True)
class HubRef:
    """A model repository on the Hub: ``repo_id`` ``"owner/name"`` and an optional ``revision`` (branch, tag or
    commit; ``None`` = the default branch)."""

    repo_id: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        return f"{HF_SCHEME}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def __str__(self) -> str:
        return self.uri


def is_hf_uri(source: object) -> bool:
    """True for a string that starts with ``hf://``."""
    return isinstance(source, str) and source.startswith(HF_SCHEME)


def _check_repo_id(repo_id: str, given: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_PART_RE.match(p) and "--" not in p and ".." not in p for p in parts):
        raise CheckpointError(given, "not a Hub repository id: expected owner/name (letters, digits, '-', '_', '.')")


def parse_hf_uri(source: str) -> HubRef:
    """``"hf://owner/name[@revision]"`` → :class:`HubRef`; a bare ``"owner/name"`` is accepted too.

    Raises:
        CheckpointError: not of that form (the message names the source).
    """
    text = source[len(HF_SCHEME):] if source.startswith(HF_SCHEME) else source
    repo_id, sep, revision = text.partition("@")
    if sep and not revision:
        raise CheckpointError(source, "empty revision after '@' (hf://owner/name@revision)")
    _check_repo_id(repo_id, source)
    return HubRef(repo_id, revision or None)


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise CheckpointError(None, f"Hub models need the package huggingface_hub ({exc}); {HUB_EXTRA_HINT}") from exc
    return huggingface_hub


def _endpoint() -> str | None:
    """``HF_ENDPOINT`` as set now (``huggingface_hub`` reads it once at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def hub_offline() -> bool:
    """``KIKIMIMI_OFFLINE=1``, or the Hub library's offline mode (``HF_HUB_OFFLINE=1`` at its import)."""
    if os.environ.get("KIKIMIMI_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    constants = _hub().constants
    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


def download_hf(source: str | HubRef, *, progress: bool = False, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local snapshot folder of a Hub model repository, downloaded into the Hub cache when needed.

    Args:
        source: ``hf://owner/name[@revision]`` (or a :class:`HubRef`).
        progress: show the Hub library's progress bars.
        cache_dir: another cache folder (default: the Hub's, ``HF_HUB_CACHE``).

    Raises:
        CheckpointError: no such repository or revision, offline with nothing cached, or the Hub unreachable
            with nothing cached (one line naming the ``hf://`` source).
    """
    ref = source if isinstance(source, HubRef) else parse_hf_uri(source)
    hub = _hub()
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import utils as hub_utils

    offline = hub_offline()
    kwargs: dict[str, Any] = dict(repo_id=ref.repo_id, revision=ref.revision, cache_dir=cache_dir,
                                  endpoint=_endpoint())
    quiet = not progress and not hub_utils.are_progress_bars_disabled()
    if quiet:
        hub_utils.disable_progress_bars()
    try:
        try:
            folder = hub.snapshot_download(local_files_only=offline, **kwargs)
        except (hub_errors.LocalEntryNotFoundError, OSError) as exc:
            if offline or isinstance(exc, hub_errors.HfHubHTTPError):
                raise
            folder = hub.snapshot_download(local_files_only=True, **kwargs)  # the Hub unreachable: the cache
    except hub_errors.RevisionNotFoundError as exc:
        raise CheckpointError(ref.uri, f"no revision {ref.revision!r} in this Hub repository") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise CheckpointError(ref.uri, "no such Hub model repository (or it is private: log in with `hf auth "
                                       "login` or set HF_TOKEN)") from exc
    except hub_errors.LocalEntryNotFoundError as exc:
        why = "offline (HF_HUB_OFFLINE / KIKIMIMI_OFFLINE)" if offline else "the Hub is unreachable"
        raise CheckpointError(ref.uri, f"not in the Hub cache and {why}; run once online to cache it") from exc
    except hub_errors.HfHubHTTPError as exc:
        raise CheckpointError(ref.uri, f"Hub download failed ({str(exc).splitlines()[0]})") from exc
    finally:
        if quiet:
            hub_utils.enable_progress_bars()
    return Path(folder)


# ------------------------------------------------------------------------------------------ push
@dataclass(frozen=True)
class PushFile:
    """One file of a push: its path in the repository, size in bytes and SHA-256 (hex)."""

    path_in_repo: str
    size: int
    sha256: str


@dataclass
class PushPlan:
    """What :func:`push_folder` uploads (``dry_run=True`` returns it without contacting the Hub)."""

    repo_id: str
    revision: str | None
    folder: Path
    commit_message: str
    files: list[PushFile] = field(default_factory=list)
    commit_url: str | None = None  # set after a real push

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "revision": self.revision, "folder": str(self.folder),
                "commit_message": self.commit_message, "commit_url": self.commit_url,
                "files": [vars(f) for f in self.files]}


def _pushable(folder: Path) -> list[Path]:
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or path.is_symlink() or any(p.startswith(".") for p in rel.parts):
            continue  # hidden files: temporaries of atomic writers, .cache, .git
        if path.name in _SKIP_NAMES:
            continue
        out.append(path)
    return out


def plan_push(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None,
              commit_message: str | None = None) -> PushPlan:
    """The files of ``folder`` that a push uploads (hidden files and kikimimi locks left out), hashed.

    Raises:
        CheckpointError: ``folder`` is not a kikimimi model folder (no ``config.json`` nor ``captioner.json``) or
            ``repo_id`` is not ``owner/name``.
    """
    folder = Path(folder)
    _check_repo_id(repo_id, repo_id)
    if not ((folder / "config.json").is_file() or (folder / "captioner.json").is_file()):
        raise CheckpointError(folder, "not a kikimimi model folder (no config.json or captioner.json) to push")
    files = [PushFile(p.relative_to(folder).as_posix(), p.stat().st_size, sha256_file_cached(p))
             for p in _pushable(folder)]
    return PushPlan(repo_id, revision, folder, commit_message or f"Upload kikimimi model {folder.name}", files)


def push_folder(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None,
                commit_message: str | None = None, private: bool | None = None, token: str | None = None,
                dry_run: bool = False) -> PushPlan:
    """Upload a kikimimi model folder to the Hub repository ``repo_id`` as one commit (created if missing).

    ``dry_run=True``: the :class:`PushPlan` only, nothing contacted. The token is the Hub library's (``token``,
    ``HF_TOKEN`` or ``hf auth login``).

    Raises:
        CheckpointError: see :func:`plan_push`; the Hub refusing the upload (one line, the repository named).
    """
    plan = plan_push(folder, repo_id, revision=revision, commit_message=commit_message)
    if dry_run:
        return plan
    hub = _hub()
    from huggingface_hub import errors as hub_errors

    api = hub.HfApi(endpoint=_endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(plan.folder), repo_id=repo_id, revision=revision,
                                 commit_message=plan.commit_message,
                                 allow_patterns=[f.path_in_repo for f in plan.files])
    except hub_errors.HfHubHTTPError as exc:
        raise CheckpointError(f"{HF_SCHEME}{repo_id}", f"Hub upload failed ({str(exc).splitlines()[0]})") from exc
    plan.commit_url = str(getattr(info, "commit_url", info))
    return plan
