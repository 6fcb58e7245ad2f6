"""Pretrained models by name: the table of official NTT releases, and user-registered kikimimi folders.

Every official BYOL-A / M2D / M2D-CLAP release (the project's list of official release locations, see
``docs/usage.md`` "Models by name") is one :class:`ModelEntry` with a short stable name, e.g.
``m2d-vit-base-mr7`` or ``m2d-clap-2025``; adding a model is adding one entry. A model trained with kikimimi
(a ``model.safetensors`` + ``config.json`` folder, local or at an ``https://`` base URL) is added with
:func:`register_model`, in the running process or (``persist=True``) in ``$KIKIMIMI_HOME/registry.json``
for later sessions and the CLI.

kikimimi's own models trained on openly licensed audio (issue 27) are *packaged*: their folders ship inside the
package (``kikimimi/weights/<name>/``, :data:`PACKAGED_MODELS`), load with no download, and are verified against
the SHA-256 in the folder's ``SHA256SUMS`` on every load (and against ``config.json``'s ``weights_sha256``).

Sizes of the M2D-family zips and most SHA-256 values are not published; :mod:`kikimimi.checkpoints.hub`
records them on first download (trust on first use) and verifies them on every later load. A user can pin a
hash by registering the entry again with ``sha256=`` (``register_model(..., replace=True)``). Where independent
projects have recorded the SHA-256 of the weight file *inside* a release archive (the 2025 M2D-CLAP, the 80x200
M2D; ../shared/docs/official-releases.md), the entry pins it as ``inner_sha256``: a download whose unpacked weight
file differs is refused, naming the expected and the received value. ``recommended`` marks the model NTT's
README recommends (the 2025 M2D-CLAP, since upstream commit 3d0c4de).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.home import cache_root
from kikimimi.fileio import atomic_write_json

__all__ = [
    "ALIASES",
    "LICENCES",
    "Licence",
    "PACKAGED_DIR",
    "PACKAGED_MODELS",
    "ModelEntry",
    "UnknownModelError",
    "find_entry",
    "get_entry",
    "list_models",
    "packaged_sha256",
    "packaged_sums",
    "DEFAULT_PACKAGED",
    "default_packaged_model",
    "register_model",
    "unregister_model",
    "user_registry_path",
]


@dataclass(frozen=True)
class Licence:
    """A licence as data: ``summary`` is printed before the first download; ``gated`` needs an explicit yes."""

    key: str
    title: str
    summary: str
    url: str
    gated: bool
    spdx: str = ""  # the SPDX identifier, where the licence has one (``models list`` prints it)


#: Licences by key. The official weights carry their authors' evaluation-only licence (read the full text in
#: the repository before accepting); kikimimi downloads them for the user on request, never re-hosts them.
LICENCES: dict[str, Licence] = {
    "ntt-m2d-eval": Licence(
        "ntt-m2d-eval",
        "NTT licence of the M2D weights (evaluation only)",
        "These weights are NTT's and are licensed for internal, non-commercial evaluation only: no "
        "redistribution, no modification of the files, no commercial use. kikimimi downloads them for you "
        "from NTT's public release and reads them; it never bundles or re-hosts them.",
        "https://github.com/nttcslab/m2d (licence file in the repository)",
        True,
    ),
    "ntt-byola-eval": Licence(
        "ntt-byola-eval",
        "NTT licence of the BYOL-A weights (evaluation only)",
        "These weights are NTT's and are licensed for internal, non-commercial evaluation only: no "
        "redistribution, no modification of the files, no commercial use. kikimimi downloads them for you "
        "from NTT's public repository and reads them; it never bundles or re-hosts them.",
        "https://github.com/nttcslab/byol-a (licence file in the repository)",
        True,
    ),
    "apache-2.0": Licence(
        "apache-2.0", "Apache License 2.0", "Weights trained with kikimimi and released under Apache-2.0.",
        "https://www.apache.org/licenses/LICENSE-2.0", False, "Apache-2.0",
    ),
    "unknown": Licence(
        "unknown", "licence not stated", "No licence was stated when this model was registered; check with "
        "whoever published it before use.", "", False,
    ),
}

#: Papers (keys of docs/reference.md §1).
PAPERS = {
    "M2D": "Niizumi et al., Masked Modeling Duo, IEEE/ACM TASLP 32, 2024 (first at ICASSP 2023)",
    "M2D-CLAP": "Niizumi et al., M2D-CLAP, Interspeech 2024 (arXiv:2406.02032)",
    "M2D2": "Niizumi et al., M2D2 / M2D-CLAP (2025), arXiv:2503.22104, IEEE Access 13, 2025",
    "BYOL-A": "Niizumi et al., BYOL for Audio, IJCNN 2021 (v1) / IEEE/ACM TASLP 31, 2023 (v2)",
}

KINDS = ("zip", "tgz", "file", "folder")
#: Weight-file layouts the importer knows (docs/reference.md §5); ``kikimimi`` = our safetensors folder.
LAYOUTS = ("m2d-full", "m2d-enconly", "evar-ft", "clap2024-full", "clap2025", "byola-v1", "byola-v2", "kikimimi")


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable model.

    Attributes:
        name: short stable name (``m2d-vit-base-mr7``); lower case, digits and ``-``.
        url: ``https://`` URL of the zip / file, ``https://`` base URL of a kikimimi folder, or a local folder.
        kind: ``"zip"`` (one folder in the official name grammar inside), ``"tgz"`` (the same as a gzip tar
            archive), ``"file"`` (a weight file) or ``"folder"`` (kikimimi ``config.json`` + ``model.safetensors``).
        family: ``m2d``, ``m2d-as``, ``m2d-s``, ``m2d-x``, ``m2d-clap``, ``msm-mae`` or ``byola`` (or
            ``kikimimi``-trained families).
        description: one line.
        sample_rate: model rate in Hz.
        input_size: training input ``(n_mels, frames)``.
        patch_size: ViT patch ``(freq, time)``; ``None`` for BYOL-A.
        embedding_dim: size of ``kikimimi.load(name).embed`` vectors (M2D: Fg·768; BYOL-A: d or 3072).
        head: ``"clap"`` (audio/text projector), ``"tagging"`` (527 AudioSet classes, sorted-MID order) or None.
        layout: the weight-file layout (one of :data:`LAYOUTS`).
        paper: key of :data:`PAPERS` (or a citation).
        licence: key of :data:`LICENCES`.
        size_bytes: exact size of the download when known.
        sha256: SHA-256 of the download when known (else recorded on first download).
        inner: weight file inside the zip when the release notes name it (else found: the single ``.pth``,
            or the highest ``checkpoint-N.pth``).
        approx_size: the documented approximate size of the weight file, for display.
        packaged: shipped inside the kikimimi package (``url`` is its folder under :data:`PACKAGED_DIR`).
        inner_sha256: SHA-256 of the weight file inside the archive when known (verified after unpacking).
        recommended: the model the official README recommends (shown by ``kikimimi models info``).
    """

    name: str
    url: str
    kind: str
    family: str
    description: str
    sample_rate: int
    input_size: tuple[int, int]
    patch_size: tuple[int, int] | None
    embedding_dim: int
    head: str | None
    layout: str
    paper: str
    licence: str
    size_bytes: int | None = None
    sha256: str | None = None
    inner: str | None = None
    approx_size: str | None = None
    packaged: bool = False
    inner_sha256: str | None = None
    recommended: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"model {self.name!r}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.licence not in LICENCES:
            raise ValueError(f"model {self.name!r}: licence must be one of {sorted(LICENCES)}, got {self.licence!r}")
        for field_name in ("sha256", "inner_sha256"):
            value = getattr(self, field_name)
            if value is not None and (len(value) != 64 or not all(c in "0123456789abcdef" for c in value)):
                raise ValueError(f"model {self.name!r}: {field_name} must be 64 lower-case hex digits")

    @property
    def file_name(self) -> str:
        """Last component of the URL: the zip / weight file name (``""`` for a folder)."""
        return "" if self.kind == "folder" else self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def folder_name(self) -> str:
        """Official folder name (the zip stem), which the importer parses for sizes; the file stem otherwise."""
        return self.file_name.rsplit(".", 1)[0] if self.file_name else self.name

    @property
    def is_local(self) -> bool:
        """A registered local folder (no download)."""
        return "://" not in self.url

    @property
    def licence_info(self) -> Licence:
        return LICENCES[self.licence]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEntry:
        data = dict(data)
        for key in ("input_size", "patch_size"):
            if data.get(key) is not None:
                data[key] = tuple(int(v) for v in data[key])
        return cls(**data)


_M2D_RELEASE = "https://github.com/nttcslab/m2d/releases/download"
_BYOLA_RAW = "https://github.com/nttcslab/byol-a/raw/master"


def _m2d(name: str, tag: str, folder: str, family: str, description: str, *, sample_rate: int = 16000,
         input_size: tuple[int, int] = (80, 608), patch_size: tuple[int, int] = (16, 16),
         layout: str = "m2d-full", head: str | None = None, paper: str = "M2D", inner: str | None = None,
         approx_size: str | None = None, kind: str = "zip", inner_sha256: str | None = None,
         recommended: bool = False) -> ModelEntry:
    embedding_dim = (input_size[0] // patch_size[0]) * 768  # ViT-Base: Fg frequency patches × 768
    suffix = ".tgz" if kind == "tgz" else ".zip"
    return ModelEntry(name, f"{_M2D_RELEASE}/{tag}/{folder}{suffix}", kind, family, description, sample_rate,
                      input_size, patch_size, embedding_dim, head, layout, paper, "ntt-m2d-eval", inner=inner,
                      approx_size=approx_size, inner_sha256=inner_sha256, recommended=recommended)


def _byola(name: str, path: str, description: str, embedding_dim: int, layout: str, *,
           size_bytes: int | None = None, sha256: str | None = None) -> ModelEntry:
    return ModelEntry(name, f"{_BYOLA_RAW}/{path}", "file", "byola", description, 16000, (64, 96), None,
                      embedding_dim, None, layout, "BYOL-A", "ntt-byola-eval", size_bytes=size_bytes, sha256=sha256)


_FULL, _ENC = "≈1.6 GB (full training file)", "≈326 MB (encoder only)"
#: SHA-256 of weight files inside release archives, each recorded by independent projects
#: (../shared/docs/official-releases.md): the 2025 M2D-CLAP's checkpoint-30.pth (two projects) and the 80x200
#: M2D's checkpoint-300.pth (one project, ≈ 1.68 GB)
CLAP_2025_SHA256 = "238521603c04862ab151cdd80980b591cb36ebe844d43203992fac9ef085c8a1"
M2D_16X4_SHA256 = "63578974bc004ef57a8e5456bac8c684f62c9285537a7b2ddef13b442386786f"
#: The official releases (nttcslab/m2d release archives v0.1.0–v0.5.0, nttcslab/byol-a repository files).
OFFICIAL_MODELS: tuple[ModelEntry, ...] = (
    _m2d("m2d-vit-base-mr6", "v0.1.0", "m2d_vit_base-80x608p16x16-221006-mr6", "m2d",
         "M2D ViT-B, mask ratio 0.6, full training file", approx_size=_FULL),
    _m2d("m2d-vit-base-mr7", "v0.1.0", "m2d_vit_base-80x608p16x16-221006-mr7", "m2d",
         "M2D ViT-B, mask ratio 0.7, full training file (the default M2D)", inner="checkpoint-300.pth",
         approx_size=_FULL),
    _m2d("m2d-vit-base-mr7-enconly", "v0.1.0", "m2d_vit_base-80x608p16x16-221006-mr7_enconly", "m2d",
         "M2D ViT-B, mask ratio 0.7, encoder only", layout="m2d-enconly", approx_size=_ENC),
    _m2d("m2d-vit-base-mr7-enconly-220930", "v0.1.0", "m2d_vit_base-80x608p16x16-220930-mr7_enconly", "m2d",
         "M2D ViT-B, earlier mask-0.7 run, encoder only", layout="m2d-enconly", approx_size=_ENC),
    _m2d("m2d-vit-base-16x4", "v0.1.0", "m2d_vit_base-80x200p16x4-230529", "m2d",
         "M2D ViT-B, 16x4 patches (40 ms), 2-s input", input_size=(80, 200), patch_size=(16, 4),
         inner="checkpoint-300.pth", inner_sha256=M2D_16X4_SHA256, approx_size="≈1.68 GB (full training file)"),
    _m2d("m2d-as", "v0.1.0", "m2d_as_vit_base-80x608p16x16-240213", "m2d-as",
         "M2D-AS (M2D-X with AudioSet labels)"),
    _m2d("m2d-as-32k-enconly", "v0.1.0", "m2d_as_vit_base-80x608p16x16p32k-240413_enconly", "m2d-as",
         "M2D-AS at 32 kHz, encoder only", sample_rate=32000, layout="m2d-enconly", approx_size=_ENC),
    _m2d("m2d-clap-2024", "v0.1.0", "m2d_clap_vit_base-80x608p16x16-240128", "m2d-clap",
         "M2D-CLAP 2024 (text side: GTE-base, not in the file)", layout="clap2024-full", head="clap",
         paper="M2D-CLAP"),
    _m2d("m2d-s-80x608", "v0.2.0", "m2d_s_vit_base-80x608p80x2-230220", "m2d-s",
         "M2D-S speech model, 80x2 patches, 6.08-s input", patch_size=(80, 2), inner="checkpoint-1000.pth"),
    _m2d("m2d-s-80x400", "v0.2.0", "m2d_s_vit_base-80x400p80x2-230201", "m2d-s",
         "M2D-S speech model, 80x2 patches, 4-s input", input_size=(80, 400), patch_size=(80, 2)),
    _m2d("m2d-s-80x512", "v0.2.0", "m2d_s_vit_base-80x512p80x2-230301", "m2d-s",
         "M2D-S speech model, 80x2 patches, 5.12-s input", input_size=(80, 512), patch_size=(80, 2)),
    _m2d("m2d-audioset-ft", "v0.3.0", "m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d", "m2d",
         "M2D/0.7 fine-tuned on AudioSet (527-class tagging head, AS2M mAP 0.479)", input_size=(80, 1001),
         layout="evar-ft", head="tagging"),
    _m2d("m2d-as-audioset-ft", "v0.3.0", "m2d_as_vit_base-80x1001p16x16-240213_AS-FT_enconly", "m2d-as",
         "M2D-AS fine-tuned on AudioSet (527-class tagging head, AS2M mAP 0.485)", input_size=(80, 1001),
         layout="evar-ft", head="tagging", inner="weights_ep69it3124-0.48494.pth"),
    _m2d("m2d-as-32k-audioset-ft", "v0.3.0", "m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly", "m2d-as",
         "M2D-AS 32 kHz fine-tuned on AudioSet (527-class tagging head, AS2M mAP 0.480)", sample_rate=32000,
         input_size=(80, 1001), layout="evar-ft", head="tagging"),
    _m2d("m2d-clap-2024-audioset-ft", "v0.3.0", "m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly",
         "m2d-clap", "M2D-CLAP 2024 fine-tuned on AudioSet (527-class tagging head, AS2M mAP 0.485)",
         input_size=(80, 1001), layout="evar-ft", head="tagging", paper="M2D-CLAP"),
    _m2d("m2d-clap-2025", "v0.5.0", "m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025", "m2d-clap",
         "M2D-CLAP 2025 = the M2D2 paper's model (fine-tuned BERT text encoder inside the file); NTT's recommended "
         "model (AS2M mAP 0.490 after fine-tuning)", input_size=(80, 1001), layout="clap2025", head="clap",
         paper="M2D2", inner="checkpoint-30.pth", inner_sha256=CLAP_2025_SHA256, recommended=True),
    # added to the official README at upstream commit 3d0c4de (2026-02-23)
    _m2d("m2d-x-icbhi", "v0.2.0", "m2d_x_icbhi", "m2d-x",
         "M2D-X further pre-trained for respiratory sounds (ICBHI 2017 / SPRSound; from the 80x200 16x4 M2D); a "
         "tar archive, inner file not documented", input_size=(80, 200), patch_size=(16, 4), kind="tgz"),
    _m2d("msm-mae-mr75", "v0.1.0", "msm_mae_vit_base-80x608p16x16-220924-mr75", "msm-mae",
         "MSM-MAE ViT-B, mask ratio 0.75 (the masked-autoencoder predecessor of M2D; its encoder keys are M2D's)"),
    _byola("byola-v1-d512", "pretrained_weights/AudioNTT2020-BYOLA-64x96d512.pth", "BYOL-A v1, d = 512", 512,
           "byola-v1", size_bytes=2_410_576,
           sha256="6cc64226318494f06ef41d7e5810be7d37abfd6490da45abdab48f188c5332e2"),
    _byola("byola-v1-d1024", "pretrained_weights/AudioNTT2020-BYOLA-64x96d1024.pth", "BYOL-A v1, d = 1024", 1024,
           "byola-v1"),
    _byola("byola-v1-d2048", "pretrained_weights/AudioNTT2020-BYOLA-64x96d2048.pth", "BYOL-A v1, d = 2048", 2048,
           "byola-v1"),
    _byola("byola-v2-d2048", "v2/AudioNTT2022-BYOLA-64x96d2048.pth", "BYOL-A v2 (3072-d output)", 3072,
           "byola-v2"),
)

#: The folder of the packaged models inside the installed package (``pyproject.toml`` package data).
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "weights"
#: The name of a packaged folder's checksum file (``sha256sum`` format: ``<hex>  model.safetensors``).
PACKAGED_SUMS = "SHA256SUMS"

#: kikimimi's own models, shipped inside the package (written by benchmarks/open_suite/ship_open_model.py; the
#: SHA-256 is read from the folder's ``SHA256SUMS`` when the folder is there).
PACKAGED_MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("open-m2d-tiny", str(PACKAGED_DIR / "open-m2d-tiny"), "folder", "m2d",
               "kikimimi's own M2D ViT-tiny (16 kHz, 2.08-s chunks), trained on openly licensed audio; packaged",
               16000, (80, 208), (16, 16), 5 * 192, None, "kikimimi", "M2D", "apache-2.0", packaged=True),
    ModelEntry("open-clap-tiny", str(PACKAGED_DIR / "open-clap-tiny"), "folder", "m2d-clap",
               "kikimimi's own M2D-CLAP ViT-tiny (text side: minilm), trained on openly licensed audio and "
               "metadata captions; packaged (benchmarks/open_suite/ship_open_clap.py)",
               16000, (80, 208), (16, 16), 5 * 192, "clap", "kikimimi", "M2D-CLAP", "apache-2.0", packaged=True),
    ModelEntry("open-captioner-tiny", str(PACKAGED_DIR / "open-captioner-tiny"), "folder", "captioner",
               "kikimimi's own audio captioner: the open-clap-tiny audio encoder → prefix mapper → a tiny word-level "
               "Llama, trained on openly licensed audio and metadata captions; packaged "
               "(benchmarks/open_suite/ship_open_captioner.py; kikimimi.load_captioner, `kikimimi caption`)",
               16000, (80, 208), (16, 16), 5 * 192, "captioner", "kikimimi", "M2D-CLAP", "apache-2.0", packaged=True),
)


#: The packaged model each kind of command uses when no ``-m`` is given (issue 27: used out of the box).
DEFAULT_PACKAGED: dict[str, str] = {"encoder": "open-m2d-tiny", "clap": "open-clap-tiny",
                                    "captioner": "open-captioner-tiny"}


def default_packaged_model(kind: str) -> str | None:
    """The packaged model for ``kind`` (``"encoder"``, ``"clap"`` or ``"captioner"``) when its weights are installed,
    else ``None``."""
    name = DEFAULT_PACKAGED[kind]
    folder = PACKAGED_DIR / name
    config = "captioner.json" if kind == "captioner" else "config.json"
    return name if (folder / "model.safetensors").is_file() and (folder / config).is_file() else None


def packaged_sums(folder: str | os.PathLike) -> dict[str, str]:
    """file (relative to ``folder``) → SHA-256, the well-formed lines of ``folder/SHA256SUMS`` (``{}`` when absent).

    A packaged encoder or CLAP lists its ``model.safetensors``; a packaged captioner also its language model,
    tokenizer and ``captioner.json``: every listed file is verified on load (:func:`kikimimi.checkpoints.hub.fetch`).
    """
    try:
        lines = (Path(folder) / PACKAGED_SUMS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    sums: dict[str, str] = {}
    for line in lines:
        digest, _, name = line.strip().partition("  ")
        if name and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            sums[name.lstrip("*")] = digest
    return sums


def packaged_sha256(folder: str | os.PathLike) -> str | None:
    """The SHA-256 of ``model.safetensors`` recorded in ``folder/SHA256SUMS``, or ``None`` (absent, malformed)."""
    return packaged_sums(folder).get("model.safetensors")


def _pinned(entry: ModelEntry) -> ModelEntry:
    """A packaged entry with the SHA-256 of its folder's ``SHA256SUMS`` (unchanged when there is none)."""
    digest = packaged_sha256(entry.url)
    return dataclasses.replace(entry, sha256=digest) if digest else entry


#: Short aliases → canonical names.
ALIASES: dict[str, str] = {
    "kikimimi-open-m2d-tiny": "open-m2d-tiny",
    "kikimimi-open-clap-tiny": "open-clap-tiny",
    "kikimimi-open-captioner-tiny": "open-captioner-tiny",
    "m2d": "m2d-vit-base-mr7",
    "m2d2": "m2d-clap-2025",
    "m2d-clap": "m2d-clap-2025",
    "byola": "byola-v2-d2048",
    "byola-v2": "byola-v2-d2048",
}

_registered: dict[str, ModelEntry] = {}


class UnknownModelError(CheckpointError, KeyError):
    """A model name that is neither registered nor an existing path; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return ValueError.__str__(self)


def user_registry_path() -> Path:
    """``registry.json`` in the kikimimi home (``$KIKIMIMI_HOME``, else the user cache folder)."""
    return cache_root() / "registry.json"


def _user_entries() -> dict[str, ModelEntry]:
    path = user_registry_path()
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return {row["name"]: ModelEntry.from_dict(row) for row in rows}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(path, f"unreadable model registry ({exc}); fix or delete the file") from exc


def _table() -> dict[str, ModelEntry]:
    table = {e.name: e for e in OFFICIAL_MODELS}
    table.update((e.name, _pinned(e)) for e in PACKAGED_MODELS)
    table.update(_user_entries())
    table.update(_registered)
    return table


def list_models() -> list[ModelEntry]:
    """Every known model: official releases, packaged models, then user-registered ones (later registrations
    win)."""
    return list(_table().values())


def find_entry(name: str) -> ModelEntry | None:
    """The entry for ``name`` (or an alias), or ``None``."""
    table = _table()
    key = name.strip()
    return table.get(ALIASES.get(key, key)) if key not in table else table[key]


def get_entry(name: str) -> ModelEntry:
    """The entry for ``name`` (or an alias).

    Raises:
        UnknownModelError: no such name; the message lists close matches.
    """
    entry = find_entry(name)
    if entry is None:
        names = [*_table(), *ALIASES]
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else "no close match"
        raise UnknownModelError(None, f"unknown model name {name!r} ({hint}); `kikimimi models list` shows all names")
    return entry


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or "/" in name or name.startswith("."):
        raise ValueError(f"model name must be letters, digits, '-', '_' or '.', got {name!r}")


def register_model(name: str, url: str | os.PathLike, *, kind: str | None = None, replace: bool = False,
                   persist: bool = False, **fields: Any) -> ModelEntry:
    """Add a model to the registry, or re-register an official one (``replace=True``, e.g. to pin ``sha256``).

    A kikimimi-trained model: ``url`` is a local folder written by ``save_kikimimi`` or an ``https://`` base
    URL under which ``config.json`` and ``model.safetensors`` lie; its facts (family, rate, sizes) are read
    from ``config.json`` when the folder is local, else given in ``fields`` (defaults: unknown/0).

    Args:
        name: the new name (letters, digits, ``-_.``).
        url: local folder, ``https://`` base URL (kind ``folder``) or an official-style zip/file URL.
        kind: ``zip``/``file``/``folder``; default from the URL (``.zip`` → zip, ``.pth``/``.pt`` → file).
        replace: allow replacing an existing name.
        persist: also store the entry in :func:`user_registry_path` (seen by later processes and the CLI).
        **fields: any other :class:`ModelEntry` field (``sha256``, ``licence``, ``description``…).

    Raises:
        ValueError: a bad name, an existing name without ``replace``, or a bad field.
    """
    _check_name(name)
    existing = find_entry(name)
    if existing is not None and not replace:
        raise ValueError(f"model {name!r} is already registered (pass replace=True to change it)")
    url = str(url)
    if existing is not None and existing.name == name and url == existing.url and kind is None:
        entry = dataclasses.replace(existing, **fields)
    else:
        if kind is None:
            kind = "zip" if url.endswith(".zip") else "file" if url.endswith((".pth", ".pt", ".ckpt")) else "folder"
        values: dict[str, Any] = dict(family="kikimimi", description="registered kikimimi model", sample_rate=0,
                                      input_size=(0, 0), patch_size=None, embedding_dim=0, head=None,
                                      layout="kikimimi" if kind == "folder" else "m2d-enconly", paper="",
                                      licence="unknown")
        if kind == "folder" and "://" not in url:
            values.update(_facts_from_local_folder(Path(url)))
        values.update(fields)
        entry = ModelEntry(name=name, url=url, kind=kind, **values)
    _registered[name] = entry
    if persist:
        rows = {**{k: v.to_dict() for k, v in _user_entries().items()}, name: entry.to_dict()}
        atomic_write_json(user_registry_path(), list(rows.values()))
    return entry


def unregister_model(name: str) -> None:
    """Remove a registered (non-official) name from this process and from the user registry file."""
    _registered.pop(name, None)
    rows = _user_entries()
    if rows.pop(name, None) is not None:
        atomic_write_json(user_registry_path(), [e.to_dict() for e in rows.values()])


def _facts_from_local_folder(folder: Path) -> dict[str, Any]:
    """Family, rate, sizes from a local kikimimi folder's ``config.json`` (what is there)."""
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(folder, f"not a kikimimi folder (config.json unreadable: {exc})") from exc
    config = meta.get("config", {})
    facts: dict[str, Any] = {"family": str(config.get("family", "kikimimi"))}
    frontend = meta.get("frontend", {})
    if isinstance(frontend, dict) and frontend.get("sample_rate"):
        facts["sample_rate"] = int(frontend["sample_rate"])
    vit = config.get("vit")
    if isinstance(vit, dict):
        facts["input_size"] = tuple(int(v) for v in vit.get("input_size", (0, 0)))
        facts["patch_size"] = tuple(int(v) for v in vit.get("patch_size", (0, 0)))
        facts["sample_rate"] = int(vit.get("sample_rate", facts.get("sample_rate", 0)))
        if vit.get("embed_dim") and facts["patch_size"][0]:
            facts["embedding_dim"] = facts["input_size"][0] // facts["patch_size"][0] * int(vit["embed_dim"])
    return facts
