"""Per-file results of a batch command (``tag``, ``zeroshot``), appended as JSON lines so a killed run resumes.

A results file is UTF-8 JSON lines. Line 1 is a header
``{"format": "kikimimi-results/1", "command": "tag", "settings": {...}, "about": {...}, "kikimimi": "0.1.0"}``
recording what produced the results: ``settings`` (the model's identity — a content fingerprint of its weights,
:func:`kikimimi.inference.jobs.job_record` — labels, windows…) is compared on resume; ``about`` (the model as the
user named it) and the version are only recorded. Every later line is one input's result, an object with a
``"file"`` key.
Each line is written whole, flushed and ``fsync``-ed before the next input starts, so after ``kill -9`` the
file holds every finished input and at most one torn last line, which the next run cuts off. A rerun with the
same settings skips the files already present and appends the rest in the same order, so the finished file
equals an uninterrupted run's. A rerun with other settings is refused unless ``overwrite`` is given, and one
writer at a time holds the file (:func:`kikimimi.fileio.output_lock`).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from kikimimi.fileio import kikimimi_version, output_lock

__all__ = ["FORMAT", "DiscardedResults", "ResultsLog", "ResultsLogError"]

FORMAT = "kikimimi-results/1"


class ResultsLogError(ValueError):
    """The results file belongs to other settings or is not a kikimimi results file; the message says what to do."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class ResultsLog:
    """Append-only, resumable JSON-lines results of ``command`` run with ``settings``.

    Use as a context manager (or :meth:`open` then :meth:`close`); once open, :attr:`done` holds the ``file``
    keys already written and :meth:`append` adds one result.

    Args:
        path: the results file (``.jsonl``); its folder is created.
        command: the sub-command name, recorded in the header.
        settings: JSON-serialisable values that determine the results (a mismatch with an existing file is
            refused, naming the differing keys).
        overwrite: start a fresh file instead of refusing a mismatch.
        about: JSON-serialisable values recorded in the header but not compared (e.g. the model as named).
    """

    def __init__(self, path: str | os.PathLike, command: str, settings: dict[str, Any], *,
                 overwrite: bool = False, about: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.header = {"format": FORMAT, "command": command, "settings": json.loads(_dumps(settings)),
                       "about": json.loads(_dumps(about or {})), "kikimimi": kikimimi_version()}
        self.overwrite = overwrite
        self.done: set[str] = set()
        self._stack = ExitStack()
        self._file = None

    def __enter__(self) -> ResultsLog:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> ResultsLog:
        """Lock the file, then resume it (check its header, cut a torn line) or start it; idempotent.

        Raises:
            ResultsLogError: the file holds results of other settings (without ``overwrite``) or is not ours.
            kikimimi.fileio.OutputInUseError: another process writes to it.
        """
        if self._file is not None:
            return self
        tag = hashlib.sha1(self.path.name.encode("utf-8")).hexdigest()[:10]
        # one writer per results file (other files in the folder are other jobs'); no folder sweep: a results
        # file is appended to, never written through temporaries
        self._stack.enter_context(output_lock(self.path.parent, self.header["command"], sweep=False,
                                              lock_name=f".kikimimi-results-{tag}.lock"))
        try:
            if self.path.exists() and not self.overwrite:
                self.done = self._resume()
            else:
                self._start()
            self._file = self._stack.enter_context(open(self.path, "a", encoding="utf-8"))
        except BaseException:
            self._stack.close()
            raise
        return self

    def close(self) -> None:
        """Release the file and its lock."""
        self._stack.close()
        self._file = None

    def _start(self) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(_dumps(self.header) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _resume(self) -> set[str]:
        """Check the header, cut a torn last line, and return the finished ``file`` keys."""
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1  # a line without its newline was cut by a kill
        lines = data[:good_end].decode("utf-8", errors="replace").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            if not lines:  # killed before the header was complete
                self._start()
                return set()
            raise ResultsLogError(f"'{self.path}' is not a kikimimi results file; choose another --out "
                                  "or pass --overwrite to replace it")
        if header.get("command") != self.header["command"] or header.get("settings") != self.header["settings"]:
            old = header.get("settings") or {}
            differ = sorted(k for k in {*old, *self.header["settings"]} if old.get(k) != self.header["settings"].get(k))
            what = ", ".join(differ) or f"command {header.get('command')!r}"
            names = ((header.get("about") or {}).get("model"), self.header["about"].get("model"))
            if "model" in differ and all(names):
                what += f": model {names[0]!r} there, {names[1]!r} now"
            raise ResultsLogError(f"'{self.path}' holds results of other settings ({what}); "
                                  "pass --overwrite to replace it or choose another --out")
        done = set()
        for line in lines[1:]:
            try:
                done.add(json.loads(line)["file"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ResultsLogError(f"'{self.path}': a damaged line in the middle of the file; "
                                      "pass --overwrite to start again") from None
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Write one result (an object with a ``"file"`` key) durably."""
        assert self._file is not None, "use ResultsLog as a context manager"
        self._file.write(_dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.add(record["file"])


class DiscardedResults:
    """Stands in for :class:`ResultsLog` when no results file was asked for: remembers nothing."""

    done: frozenset[str] = frozenset()

    def __enter__(self) -> DiscardedResults:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def append(self, record: dict[str, Any]) -> None:
        """Discard ``record``."""
