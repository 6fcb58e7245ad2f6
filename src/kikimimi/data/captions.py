"""Caption data for audio-language training and retrieval: caption lists, caption tables, label captions.

- :func:`read_caption_rows` is the one reader of caption CSVs: a name column (``file_name``, or ``audio`` /
  ``path``; dataset adapters may name another, e.g. AudioCaps' ``youtube_id``) and ``caption`` and/or
  ``caption_1 … caption_K`` columns, one or more rows per file. Every caption-list problem raises
  :class:`CaptionError` naming the file and the line or item.
- :class:`CaptionTable` maps stable file keys (:func:`kikimimi.fileio.relative_key` against the list's
  folder) to one or more captions, read from such a CSV or from a JSON list.
- :func:`label_caption` / :func:`captions_from_labels` turn class labels into AudioSet-style captions
  ("The sound of A, B, and C.", docs/reference.md §7.3).

The float16 caption-embedding cache built from a table lives in :mod:`kikimimi.data.caption_cache`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kikimimi.fileio import relative_key

__all__ = [
    "DEFAULT_LABEL_TEMPLATES",
    "NAME_COLUMNS",
    "CaptionError",
    "CaptionRow",
    "CaptionTable",
    "captions_from_labels",
    "join_labels",
    "label_caption",
    "read_caption_rows",
]

#: AudioSet-style label caption (M2D-CLAP 2024): "The sound of A, B, and C."
DEFAULT_LABEL_TEMPLATES = ("The sound of {labels}.",)
#: columns naming the audio file of a caption CSV row, in order of preference (case-insensitive)
NAME_COLUMNS = ("file_name", "audio", "path")


class CaptionError(ValueError):
    """A caption list (CSV / JSON / task CSV / dataset metadata) is malformed or missing; the message names
    the file and the line or item."""


# --------------------------------------------------------------------------------------------
# Label captions
# --------------------------------------------------------------------------------------------


def join_labels(labels: Sequence[str]) -> str:
    """``["A"]`` → ``"A"``; ``["A", "B"]`` → ``"A and B"``; ``["A", "B", "C"]`` → ``"A, B, and C"`` (serial comma).

    Raises:
        ValueError: no (non-blank) label.
    """
    names = [str(s).strip() for s in labels if str(s).strip()]
    if not names:
        raise ValueError("no labels to put into a caption")
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return ", ".join(names[:-1]) + f", and {names[-1]}"


def label_caption(labels: Sequence[str], template: str = DEFAULT_LABEL_TEMPLATES[0]) -> str:
    """AudioSet-style caption: "The sound of A." / "The sound of A and B." / "The sound of A, B, and C.".

    ``template`` is a format string with ``{labels}`` (the :func:`join_labels` phrase).
    """
    return template.format(labels=join_labels(labels))


# --------------------------------------------------------------------------------------------
# Caption CSV rows
# --------------------------------------------------------------------------------------------

_CAPTION_COL = re.compile(r"^caption_?(\d+)$")


@dataclass(frozen=True)
class CaptionRow:
    """One data row of a caption CSV: its 1-based ``line``, the audio ``name`` cell (stripped, as written)
    and its non-empty ``captions`` (``caption`` first, then ``caption_1 … caption_K`` in number order)."""

    line: int
    name: str
    captions: tuple[str, ...]


def read_caption_rows(path: str | os.PathLike, *, name_columns: Sequence[str] = NAME_COLUMNS) -> list[CaptionRow]:
    """Read the rows of a caption CSV in file order.

    The first of ``name_columns`` present names the audio; captions come from a ``caption`` column and/or
    ``caption_1 … caption_K`` (also ``captionK``) columns, empty cells skipped. Column names are
    case-insensitive; blank lines are skipped.

    Raises:
        CaptionError: missing file, no header, no name or caption column, a row with more fields than the
            header, an empty name, a row without any caption, undecodable or malformed CSV.
    """
    path = Path(path)
    name_label = name_columns[0]
    if not path.is_file():
        raise CaptionError(f"'{path}': caption list not found")
    rows: list[CaptionRow] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise CaptionError(f"'{path}': empty caption list")
            cols = [h.strip().lower() for h in header]
            name_col = next((cols.index(c) for c in name_columns if c in cols), None)
            cap_cols = [i for i, c in enumerate(cols) if c == "caption"]
            numbered = sorted(
                ((int(m.group(1)), i) for i, c in enumerate(cols) if (m := _CAPTION_COL.match(c))),
            )
            cap_cols += [i for _, i in numbered]
            if name_col is None or not cap_cols:
                raise CaptionError(
                    f"'{path}': columns {header} lack {name_label} and caption (or caption_1..caption_K)"
                )
            for line, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) > len(cols):
                    raise CaptionError(f"'{path}' line {line}: {len(row)} fields but the header has {len(cols)}")
                name = row[name_col].strip() if name_col < len(row) else ""
                if not name:
                    raise CaptionError(f"'{path}' line {line}: empty {name_label}")
                caps = tuple(row[i].strip() for i in cap_cols if i < len(row) and row[i].strip())
                if not caps:
                    raise CaptionError(f"'{path}' line {line}: no caption for '{name}'")
                rows.append(CaptionRow(line, name, caps))
    except UnicodeDecodeError as exc:
        raise CaptionError(f"'{path}': not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise CaptionError(f"'{path}': malformed CSV ({exc})") from exc
    return rows


# --------------------------------------------------------------------------------------------
# Caption table
# --------------------------------------------------------------------------------------------


class CaptionTable:
    """File keys → captions (and audio paths).

    Args:
        captions: key → list of captions (at least one non-empty caption per key).
        paths: key → audio file path (absolute); keys must match ``captions``.
        source: where the table came from (for messages).

    Attributes:
        keys: sorted unique file keys.
        paths: audio paths in :attr:`keys` order.
    """

    def __init__(
        self, captions: Mapping[str, Sequence[str]], paths: Mapping[str, str | os.PathLike], source: str = "<memory>"
    ) -> None:
        if set(captions) != set(paths):
            diff = sorted(set(captions) ^ set(paths))[:5]
            raise CaptionError(f"'{source}': captions and paths have different keys, e.g. {diff}")
        self.source = str(source)
        self._captions: dict[str, list[str]] = {}
        for key in sorted(captions):
            caps = [str(c) for c in captions[key]]
            if not caps or any(not c.strip() for c in caps):
                raise CaptionError(f"'{source}': '{key}' has an empty caption or none at all")
            self._captions[key] = caps
        self._paths = {k: Path(paths[k]) for k in self._captions}

    # -- readers --------------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> CaptionTable:
        """Read a CSV with ``file_name`` and ``caption`` and/or ``caption_1 … caption_K`` columns.

        The rows are read by :func:`read_caption_rows`. Several rows may name the same file (their captions are
        added in row order). Relative ``file_name`` values are resolved against the CSV's folder; keys are
        :func:`relative_key` against ``root`` (default: the CSV's folder).

        Raises:
            CaptionError: missing file or columns, a row without file name or without any caption, no rows.
        """
        path = Path(path)
        rows = read_caption_rows(path)
        base = path.resolve().parent
        key_root = Path(root) if root is not None else base
        captions: dict[str, list[str]] = {}
        paths: dict[str, Path] = {}
        for row in rows:
            audio = Path(row.name) if os.path.isabs(row.name) else base / row.name
            key = relative_key(audio, key_root)
            captions.setdefault(key, []).extend(row.captions)
            paths[key] = audio
        if not captions:
            raise CaptionError(f"'{path}': no caption rows")
        return cls(captions, paths, source=str(path))

    @classmethod
    def from_json(cls, path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> CaptionTable:
        """Read a JSON list of ``{"file_name"|"audio": str, "caption": str | "captions": [str, …]}`` objects.

        A top-level ``{"data": [...]}`` wrapper is accepted. Paths and keys as :meth:`from_csv`; items naming
        the same file are merged.

        Raises:
            CaptionError: unreadable JSON, not a list, or an item (named by its index) without file or captions.
        """
        path = Path(path)
        if not path.is_file():
            raise CaptionError(f"'{path}': caption list not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CaptionError(f"'{path}': not valid JSON ({exc})") from exc
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise CaptionError(f"'{path}': expected a JSON list of caption items, got {type(data).__name__}")
        base = path.resolve().parent
        key_root = Path(root) if root is not None else base
        captions: dict[str, list[str]] = {}
        paths: dict[str, Path] = {}
        for i, item in enumerate(data):
            where = f"'{path}' item {i}"
            if not isinstance(item, dict):
                raise CaptionError(f"{where}: expected an object, got {type(item).__name__}")
            name = item.get("file_name", item.get("audio"))
            if not isinstance(name, str) or not name.strip():
                raise CaptionError(f"{where}: missing 'file_name' (or 'audio')")
            caps: Any = item.get("captions", item.get("caption"))
            if isinstance(caps, str):
                caps = [caps]
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise CaptionError(f"{where}: 'caption' must be a string or 'captions' a list of strings")
            caps = [c.strip() for c in caps if c.strip()]
            if not caps:
                raise CaptionError(f"{where}: no caption for '{name}'")
            name = name.strip()
            audio = Path(name) if os.path.isabs(name) else base / name
            key = relative_key(audio, key_root)
            captions.setdefault(key, []).extend(caps)
            paths[key] = audio
        if not captions:
            raise CaptionError(f"'{path}': no caption items")
        return cls(captions, paths, source=str(path))

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> CaptionTable:
        """:meth:`from_json` for ``.json`` files, else :meth:`from_csv`."""
        return cls.from_json(path, **kwargs) if str(path).lower().endswith(".json") else cls.from_csv(path, **kwargs)

    # -- access ---------------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """Sorted unique file keys."""
        return list(self._captions)

    @property
    def paths(self) -> list[Path]:
        """Audio paths in :attr:`keys` order."""
        return [self._paths[k] for k in self._captions]

    def path(self, key: str) -> Path:
        """The audio path of ``key`` (``KeyError`` if unknown)."""
        return self._paths[key]

    def captions(self, key: str) -> list[str]:
        """The captions of ``key`` (a copy; ``KeyError`` if unknown)."""
        return list(self._captions[key])

    @property
    def n_captions(self) -> int:
        """Total number of captions."""
        return sum(len(c) for c in self._captions.values())

    def items(self) -> Iterable[tuple[str, list[str]]]:
        """``(key, captions)`` pairs in key order."""
        return ((k, list(v)) for k, v in self._captions.items())

    def caption_digest(self, key: str) -> str:
        """Short SHA-1 (16 hex digits) of ``key`` and its captions: it changes when the captions change."""
        payload = json.dumps([key, self._captions[key]], ensure_ascii=False).encode("utf-8")
        return hashlib.sha1(payload).hexdigest()[:16]

    def fingerprint(self) -> str:
        """SHA-1 over keys and captions: equal tables give equal fingerprints."""
        h = hashlib.sha1()
        for key in self._captions:
            h.update(self.caption_digest(key).encode())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self._captions)

    def __contains__(self, key: object) -> bool:
        return key in self._captions

    def __repr__(self) -> str:
        return f"CaptionTable({len(self)} files, {self.n_captions} captions, source={self.source!r})"


def captions_from_labels(
    task_csv: str | os.PathLike,
    templates: Sequence[str] | None = None,
    *,
    splits: Sequence[str] | None = None,
    label_names: Mapping[str, str] | None = None,
    underscores_to_spaces: bool = True,
    root: str | os.PathLike | None = None,
) -> CaptionTable:
    """Label captions for an EVAR-style task CSV (``file_name,label[,split|fold]``, multi-labels comma-joined).

    Each file gets one caption per template (format strings with ``{labels}``, default
    :data:`DEFAULT_LABEL_TEMPLATES` → "The sound of A, B, and C."). Labels are mapped through ``label_names``
    (e.g. AudioSet MID → display name) and, by default, ``_`` becomes a space ("noise_burst" → "noise burst").
    ``splits`` keeps only rows whose ``split`` is listed (e.g. ``("train",)`` so evaluation clips stay unseen).

    Raises:
        CaptionError: missing file or columns, an empty label (naming the line), a template without
            ``{labels}``, or no rows left.
    """
    path = Path(task_csv)
    templates = tuple(templates) if templates is not None else DEFAULT_LABEL_TEMPLATES
    if not templates:
        raise CaptionError(f"'{path}': no caption templates")
    for t in templates:
        if "{labels}" not in t:
            raise CaptionError(f"caption template {t!r} has no '{{labels}}' placeholder")
    if not path.is_file():
        raise CaptionError(f"'{path}': task CSV not found")
    base = path.resolve().parent
    key_root = Path(root) if root is not None else base
    wanted = None if splits is None else {s.strip().lower() for s in splits}
    captions: dict[str, list[str]] = {}
    paths: dict[str, Path] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "file_name" not in fields or "label" not in fields:
                raise CaptionError(f"'{path}': needs file_name and label columns, found {reader.fieldnames}")
            if wanted is not None and "split" not in fields:
                raise CaptionError(f"'{path}': splits={sorted(wanted)} given but the CSV has no split column")
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
                if not any(row.values()):
                    continue
                name = row.get("file_name", "")
                if not name:
                    raise CaptionError(f"'{path}' line {line}: empty file_name")
                if wanted is not None and row.get("split", "").lower() not in wanted:
                    continue
                labels = [s.strip() for s in row.get("label", "").split(",") if s.strip()]
                if not labels:
                    raise CaptionError(f"'{path}' line {line}: empty label for '{name}'")
                if label_names is not None:
                    labels = [label_names.get(lab, lab) for lab in labels]
                if underscores_to_spaces:
                    labels = [lab.replace("_", " ") for lab in labels]
                audio = Path(name) if os.path.isabs(name) else base / name
                key = relative_key(audio, key_root)
                captions.setdefault(key, []).extend(label_caption(labels, t) for t in templates)
                paths[key] = audio
    except UnicodeDecodeError as exc:
        raise CaptionError(f"'{path}': not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise CaptionError(f"'{path}': malformed CSV ({exc})") from exc
    if not captions:
        raise CaptionError(f"'{path}': no rows" + (f" in splits {sorted(wanted)}" if wanted else ""))
    return CaptionTable(captions, paths, source=str(path))
