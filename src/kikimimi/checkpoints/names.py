"""Official NTT weight names, parsed and formatted (docs/reference.md §6).

M2D grammar: ``<model_cls>-<params>-<anything>``; ``params`` split on the letter ``p`` gives
``[input FxT, patch fxt, optional sample rate 16k|32k, extras...]``, e.g.
``m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025`` → input 80x1001, patch 16x16, 16 kHz, extras (B, TI).
The official loaders read the *parent folder* name of the weight file; the file stem is the fallback.

BYOL-A: ``AudioNTT2020-BYOLA-64x96d512`` (v1, d from ``d\\d+``) and ``AudioNTT2022-BYOLA-64x96d2048``
(v2; the 2048 is the MLP width, the frame feature is 3072-d).

:func:`format_m2d_name` and :func:`format_byola_name` write names in the same grammar; parsing what they
write gives back the facts they were given (``tests/checkpoints/test_official_names.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.models.vit import VIT_SIZES, ViTConfig

__all__ = [
    "BYOLA_V2_FEATURE_D",
    "MASK_STRATEGY_TAGS",
    "TEXT_ENCODER_CODES",
    "OfficialName",
    "format_byola_name",
    "format_m2d_name",
    "format_run_tags",
    "path_tag",
    "tag_value",
    "parse_official_name",
    "text_encoder_code",
    "try_parse_official_name",
    "vit_size_name",
]

#: Frame feature size of the released BYOL-A v2 encoder (1024 conv + 2048 MLP), docs/reference.md §4.2.
BYOLA_V2_FEATURE_D = 3072

_M2D_RE = re.compile(r"^(?P<cls>[A-Za-z0-9_]+)-(?P<params>\d+x\d+p\d+x\d+(?:p[A-Za-z0-9]+)*)(?:-.*)?$")
_BYOLA_RE = re.compile(r"^(?P<cls>AudioNTT20(?:20|22)\w*)-(?:.*?)(?P<f>\d+)x(?P<t>\d+)d(?P<d>\d+)")
_SR_RE = re.compile(r"^(\d+)k$")
#: name-extras code of the text encoder (docs/reference.md §6): A = GTE-base, B = BERT, N = LLM embedder
TEXT_ENCODER_CODES: dict[str, str] = {"gte": "A", "bert": "B", "llm": "N", "smollm2": "N", "nvembed": "N"}
#: BYOL-A ``model_cls`` per version
_BYOLA_CLS = {1: "AudioNTT2020", 2: "AudioNTT2022"}


@dataclass(frozen=True)
class OfficialName:
    """Facts encoded in an official weight name.

    Attributes:
        model_cls: factory name, e.g. ``m2d_vit_base`` / ``m2d_s_vit_base`` / ``AudioNTT2020``.
        input_size: training input ``(n_mels, frames)``, e.g. ``(80, 608)``.
        patch_size: ``(freq, time)`` patch in bins/frames (M2D only, else ``None``).
        sample_rate: model sample rate in Hz (16000 unless the name says ``32k``).
        extras: remaining ``p``-separated tokens, e.g. ``("B", "TI")``.
        family: ``"m2d"`` or ``"byola"``.
        feature_d: BYOL-A frame feature size (v1: d from the name; v2: 3072), ``None`` for M2D.
        name: the string that was parsed (folder name or file stem).
    """

    model_cls: str
    input_size: tuple[int, int] | None
    patch_size: tuple[int, int] | None
    sample_rate: int
    extras: tuple[str, ...] = ()
    family: str = "m2d"
    feature_d: int | None = None
    name: str = ""

    @property
    def is_m2d_s(self) -> bool:
        """True for M2D-S (speech) names, whose stored ``norm_stats`` are not their training stats."""
        return self.family == "m2d" and self.model_cls.startswith("m2d_s_")

    @property
    def byola_version(self) -> int | None:
        """1 for ``AudioNTT2020*``, 2 for ``AudioNTT2022*``, ``None`` for M2D."""
        if self.family != "byola":
            return None
        return 2 if self.model_cls.startswith("AudioNTT2022") else 1


def _pair(text: str) -> tuple[int, int]:
    a, b = text.split("x")
    return int(a), int(b)


def _parse_string(name: str) -> OfficialName | None:
    m = _M2D_RE.match(name)
    if m:
        parts = m.group("params").split("p")
        input_size, patch_size = _pair(parts[0]), _pair(parts[1])
        rest = parts[2:]
        sample_rate = 16000
        if rest and _SR_RE.match(rest[0]):
            sample_rate = int(_SR_RE.match(rest[0]).group(1)) * 1000
            rest = rest[1:]
        return OfficialName(
            m.group("cls"), input_size, patch_size, sample_rate, tuple(rest), "m2d", None, name
        )
    m = _BYOLA_RE.match(name)
    if m:
        cls = m.group("cls")
        d = int(m.group("d"))
        feature_d = BYOLA_V2_FEATURE_D if cls.startswith("AudioNTT2022") else d
        return OfficialName(
            cls, (int(m.group("f")), int(m.group("t"))), None, 16000, (), "byola", feature_d, name
        )
    return None


def try_parse_official_name(path: str | Path) -> OfficialName | None:
    """Like :func:`parse_official_name` but returns ``None`` when no candidate name parses."""
    path = Path(path)
    candidates = [path.parent.name, path.stem, path.name]
    for candidate in candidates:
        if candidate:
            parsed = _parse_string(candidate)
            if parsed is not None:
                return parsed
    return None


def parse_official_name(path: str | Path) -> OfficialName:
    """Read model facts from the parent folder name of ``path``, falling back to the file name/stem.

    Args:
        path: a weight file (``.../m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth``), a folder,
            or a bare name string.

    Raises:
        CheckpointError: neither the parent folder nor the file name follows an official naming scheme.
    """
    parsed = try_parse_official_name(path)
    if parsed is None:
        raise CheckpointError(
            path,
            "cannot read the model size from the name: neither the parent folder nor the file name looks "
            "like '<model_cls>-<F>x<T>p<f>x<t>[p16k|p32k][p<extra>...]-<anything>' (M2D) or "
            "'AudioNTT2020-BYOLA-64x96d512' (BYOL-A). Keep the official folder name or pass the sizes "
            "explicitly (input_size=..., patch_size=...).",
        )
    return parsed


# ---------------------------------------------------------------------------------------------- formatting
def format_m2d_name(
    model_cls: str,
    input_size: tuple[int, int] | list[int],
    patch_size: tuple[int, int] | list[int],
    sample_rate: int = 16000,
    extras: tuple[str, ...] | list[str] = (),
    suffix: str | None = None,
) -> str:
    """``<model_cls>-<F>x<T>p<f>x<t>[p<sr>k][p<extra>...][-<suffix>]``, the name :func:`parse_official_name` reads.

    The sample-rate token is written when it is not 16 kHz or when extras follow (the released names put it
    before the extras: ``m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025``).

    Args:
        model_cls: factory name, e.g. ``m2d_vit_base``, ``m2d_clap_vit_tiny``.
        input_size: training input ``(n_mels, frames)``; patch_size: ``(freq bins, frames)`` per patch.
        sample_rate: in Hz, a multiple of 1000.
        extras: further ``p``-separated tokens, e.g. ``("B", "TI")``.
        suffix: text after the last ``-`` (a date, ``kikimimi``…); ``None`` = none.
    """
    params = f"{input_size[0]}x{input_size[1]}p{patch_size[0]}x{patch_size[1]}"
    if extras or int(sample_rate) != 16000:
        params += f"p{int(sample_rate) // 1000}k" + "".join(f"p{e}" for e in extras)
    return f"{model_cls}-{params}" + (f"-{suffix}" if suffix else "")


def format_byola_name(
    version: int, input_size: tuple[int, int] | list[int], d: int, suffix: str | None = None
) -> str:
    """``AudioNTT2020-BYOLA-<F>x<T>d<d>[-<suffix>]`` (v1) or ``AudioNTT2022-…`` (v2).

    ``d`` is the number after ``d``: the frame feature size for v1, the MLP width of the released v2
    file (2048; its frame feature is :data:`BYOLA_V2_FEATURE_D` whatever the name says).
    """
    name = f"{_BYOLA_CLS[int(version)]}-BYOLA-{input_size[0]}x{input_size[1]}d{int(d)}"
    return name + (f"-{suffix}" if suffix else "")


#: run-name tag of each M2D masking strategy (the official flags --weighted_mask, --var_weighted_mask, --block_mask,
#: --obj_cent_mask; fact-sheet-m2d2-2026.md §5); ``random`` is the default and has none
MASK_STRATEGY_TAGS: dict[str, str] = {"dwm": "Wm", "var": "Vm", "ibm": "Bm", "sgim": "Om"}


def tag_value(value: object) -> str:
    """A flag value as the run-name tags write it: ``True`` → ``""``, ``7`` → ``"7"``, ``0.0`` → ``"0"``,
    ``2.0`` → ``"2"``, ``0.25`` → ``"0.25"``, ``3e-06`` → ``"3e-06"``; a path → :func:`path_tag`."""
    if value is True:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    return path_tag(str(value))


def path_tag(path: str) -> str:
    """The initials of a path as the official run names abbreviate file flags: the first character of every part
    split on ``/`` and ``_``, the suffix dropped (``data/files_A_S_V_S_W_C_X.csv`` → ``dfASVSWCX``)."""
    text = str(path).replace("\\", "/")
    stem = text.rsplit(".", 1)[0] if "." in text.rsplit("/", 1)[-1] else text
    return "".join(part[0] for chunk in stem.split("/") for part in chunk.split("_") if part)


def format_run_tags(tags: list[tuple[str, object]] | tuple[tuple[str, object], ...]) -> str:
    """``[("M", "data/files_w_c.csv"), ("mr", 0.0), ("FT", True)]`` → ``"Mdfwcmr0FT"`` (code + :func:`tag_value`)."""
    return "".join(code + tag_value(value) for code, value in tags)


def text_encoder_code(spec: str | None) -> str:
    """One-letter name extra of a text encoder: ``gte:…`` → ``A``, ``bert:…`` → ``B``, LLM specs → ``N``, else ``X``."""
    if not spec:
        return "X"
    kind = str(spec).split(":", 1)[0].split("#", 1)[0].lower()
    return TEXT_ENCODER_CODES.get(kind, "X")


def vit_size_name(cfg: ViTConfig) -> str:
    """The size word of ``m2d_vit_<size>`` (``tiny``/``small``/``base``/``large``), else ``d<embed_dim>``."""
    for name, (dim, depth, heads) in VIT_SIZES.items():
        if (dim, depth, heads) == (cfg.embed_dim, cfg.depth, cfg.num_heads):
            return name
    return f"d{cfg.embed_dim}"
