"""A trained captioner: its folder format, :func:`load_captioner` and :class:`Captioner` (``caption`` / ``ask``).

The captioner folder (written by :func:`save_captioner`)::

    DIR/captioner.json       {"format": "kikimimi-captioner", "format_version": 1, "audio_model": path,
                              "audio_embedding_dim", "lm": {"spec", "folder"}, "mapper": MapperConfig,
                              "caption_question", "generation": {"beam_size", "max_new_tokens"},
                              "window_s", "training": {...}, "lora": null | {"rank", "alpha", "targets",
                              "weights": "lora.safetensors"}}
    DIR/model.safetensors    mapper.* (the trained mapper)
    DIR/lora.safetensors     only with LoRA: the adapter tensors of the frozen language model, by parameter name
                             (``…q_proj.lora_A.default.weight``); the base model is the one named by lm.spec
    DIR/lm/                  only when the language model was trained (save_pretrained: config, weights,
                             tokenizer); otherwise the language model is the one named by lm.spec
    DIR/nn_bank.safetensors  "embeddings" [N, D]: pooled clip embeddings of the training clips, and
    DIR/nn_bank.json         their keys and captions (the nearest-neighbour baseline)

The audio encoder is not copied: ``audio_model`` names it (anything :func:`kikimimi.inference.encoder.load`
reads); :func:`load_captioner` takes ``audio_model=`` to point elsewhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kikimimi.audio.decode import AudioDecodeError, load_audio, resample
from kikimimi.checkpoints import resolve_model_source
from kikimimi.checkpoints.registry import find_entry
from kikimimi.checkpoints.runs import resolve_run_checkpoint
from kikimimi.fileio import atomic_write_bytes, atomic_write_json, collect_audio_files
from kikimimi.inference.encoder import AudioEncoder, AudioInput, load
from kikimimi.inference.windows import window_bounds
from kikimimi.models.caption_decoding import generate
from kikimimi.models.caption_prompts import CAPTION_QUESTION, clean_decoded, prompt_ids
from kikimimi.models.causal_lm import CAPTION_EXTRA_HINT, load_causal_lm
from kikimimi.models.lora import LoraSettings, add_lora, load_lora_state_dict, lora_state_dict
from kikimimi.models.prefix_mapper import MapperConfig, PrefixMapper
from kikimimi.models.text import TextEncoderError
from kikimimi.models.text_loading import _quiet_hf

__all__ = [
    "CAPTIONER_FORMAT",
    "CaptionedFile",
    "Captioner",
    "CaptionerError",
    "caption_files",
    "captioner_folder",
    "is_captioner_folder",
    "load_audio_model",
    "load_captioner",
    "nearest_neighbour_baseline",
    "save_captioner",
]

CAPTIONER_FORMAT = "kikimimi-captioner"
CONFIG_NAME = "captioner.json"
WEIGHTS_NAME = "model.safetensors"
LORA_WEIGHTS_NAME = "lora.safetensors"


class CaptionerError(ValueError):
    """A captioner folder that cannot be read or used; the message names the folder and the problem."""


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError as exc:
        raise CaptionerError(f"captioner folders need the package 'safetensors' ({exc}); {CAPTION_EXTRA_HINT}") from exc
    return st


def load_audio_model(path: str | os.PathLike, device: str | torch.device | None = "cpu") -> AudioEncoder:
    """:func:`kikimimi.inference.encoder.load`, also for a pre-training run folder (its newest checkpoint)."""
    p = Path(path)
    if p.is_dir() and not (p / "model.safetensors").is_file():
        if (p / "kikimimi" / "model.safetensors").is_file():
            p = p / "kikimimi"  # a pre-training run folder with its kikimimi-format export
        else:
            p = resolve_run_checkpoint(p)
    return load(p, device=device)


def is_captioner_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def save_captioner(out_dir: str | os.PathLike, *, mapper: PrefixMapper, lm: nn.Module, tokenizer: Any,
                   lm_trained: bool, lm_spec: str, audio_model: str | os.PathLike, audio_embedding_dim: int,
                   window_s: float = 10.0, generation: dict[str, Any] | None = None,
                   training: dict[str, Any] | None = None, nn_bank: tuple[np.ndarray, list[str], list[str]] | None
                   = None, lora: LoraSettings | None = None) -> Path:
    """Write a captioner folder (see the module docstring); returns it. ``nn_bank`` = (embeddings [N, D], keys,
    captions) of the training clips. ``lora``: the settings of the adapters inside ``lm`` (their tensors go to
    ``lora.safetensors``; the frozen base model is not written)."""
    if lora is not None and lm_trained:
        raise ValueError("save_captioner: a trained language model has no LoRA adapters to store apart")
    st = _safetensors()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"mapper.{k}": v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()}
    atomic_write_bytes(out / WEIGHTS_NAME, st.save(state))
    lm_folder = None
    lora_cfg = None
    if lora is not None:
        adapters = lora_state_dict(lm)
        if not adapters:
            raise ValueError("save_captioner: lora= given but the language model has no LoRA adapters")
        atomic_write_bytes(out / LORA_WEIGHTS_NAME, st.save(adapters))
        lora_cfg = {**lora.to_dict(), "weights": LORA_WEIGHTS_NAME}
    if lm_trained:
        lm_folder = "lm"
        with _quiet_hf():
            lm.save_pretrained(out / lm_folder)
            tokenizer.save_pretrained(out / lm_folder)
    if nn_bank is not None:
        emb, keys, caps = nn_bank
        atomic_write_bytes(out / "nn_bank.safetensors",
                           st.save({"embeddings": torch.as_tensor(np.asarray(emb, dtype=np.float32))}))
        atomic_write_json(out / "nn_bank.json", {"keys": list(keys), "captions": list(caps)})
    config = {
        "format": CAPTIONER_FORMAT, "format_version": 1,
        "audio_model": str(Path(audio_model).resolve()) if Path(audio_model).exists() else str(audio_model),
        "audio_embedding_dim": int(audio_embedding_dim),
        "lm": {"spec": str(lm_spec), "folder": lm_folder},
        "mapper": mapper.config.to_dict(),
        "caption_question": CAPTION_QUESTION,
        "generation": {"beam_size": 3, "max_new_tokens": 30, "length_penalty": 0.0, **(generation or {})},
        "window_s": float(window_s),
        "training": training or {},
        "lora": lora_cfg,
    }  # fmt: skip
    atomic_write_json(out / CONFIG_NAME, config)
    return out


@dataclass
class CaptionedFile:
    """Captions of one file: the whole-file caption (first window) and one entry per window."""

    file: str
    caption: str
    segments: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "caption": self.caption, "segments": self.segments}


class Captioner:
    """Frozen audio encoder → mapper → language model; ``caption(audio)`` and ``ask(audio, question)``.

    Attributes: encoder (:class:`~kikimimi.inference.encoder.AudioEncoder`), mapper, lm, tokenizer, config
    (the folder's ``captioner.json``), nn_bank (``(embeddings [N, D], captions)`` or ``None``).
    """

    def __init__(self, encoder: AudioEncoder, mapper: PrefixMapper, lm: nn.Module, tokenizer: Any,
                 config: dict[str, Any], nn_bank: tuple[torch.Tensor, list[str]] | None = None) -> None:
        self.encoder = encoder
        self.device = encoder.device
        self.mapper = mapper.to(self.device).eval()
        self.lm = lm.to(self.device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.nn_bank = nn_bank
        gen = config.get("generation") or {}
        self.beam_size = int(gen.get("beam_size", 3))
        self.max_new_tokens = int(gen.get("max_new_tokens", 30))
        self.length_penalty = float(gen.get("length_penalty", 0.0))
        self.window_s = float(config.get("window_s") or 10.0)
        self._banned = [i for i in {tokenizer.pad_token_id, getattr(tokenizer, "unk_token_id", None),
                                    getattr(tokenizer, "bos_token_id", None)} if i is not None]
        self._prompts: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return (f"Captioner(audio={self.encoder.family}, lm={self.config['lm']['spec']!r}, "
                f"prefix={self.mapper.config.prefix_len}, window_s={self.window_s:g})")

    # ------------------------------------------------------------------ core
    def frames(self, audio: AudioInput, sample_rate: int | None = None) -> list[torch.Tensor]:
        """Frame features ``[T_i, D]`` of each input (files decoded; see ``AudioEncoder.waveforms``)."""
        feats, _ = self.encoder.embed_frames(audio, sample_rate, stack=False)
        return [torch.as_tensor(np.asarray(f), dtype=torch.float32) for f in feats]

    def answer_frames(self, frames: torch.Tensor, question: str, *, beam_size: int | None = None,
                      max_new_tokens: int | None = None) -> tuple[str, float]:
        """One answer for one clip's frame features ``[T, D]``: ``(text, total log-probability)``."""
        prompt = self._prompts.setdefault(question, prompt_ids(self.tokenizer, question))
        frames = frames[: self.mapper.config.max_frames].to(self.device)
        tokens, score = generate(
            self.mapper, self.lm, frames, prompt, eos_id=int(self.tokenizer.eos_token_id),
            beam_size=int(beam_size or self.beam_size), max_new_tokens=int(max_new_tokens or self.max_new_tokens),
            length_penalty=self.length_penalty, banned_ids=self._banned,
        )  # fmt: skip
        return clean_decoded(self.tokenizer.decode(tokens, skip_special_tokens=True)), score

    def _answer(self, audio: AudioInput, question: str, sample_rate: int | None, beam_size: int | None,
                max_new_tokens: int | None) -> str | list[str]:
        single = isinstance(audio, (str, os.PathLike)) or (isinstance(audio, (np.ndarray, torch.Tensor))
                                                           and audio.ndim == 1)
        out = [self.answer_frames(f, question, beam_size=beam_size, max_new_tokens=max_new_tokens)[0]
               for f in self.frames(audio, sample_rate)]
        return out[0] if single else out

    # ------------------------------------------------------------------ public
    def caption(self, audio: AudioInput, *, sample_rate: int | None = None, beam_size: int | None = None,
                max_new_tokens: int | None = None) -> str | list[str]:
        """A caption per clip: a path or 1-D waveform gives one string, a list gives a list (input order).

        Clips are captioned whole (up to the mapper's ``max_frames``); for long files use
        :meth:`caption_windows`.
        """
        return self._answer(audio, str(self.config.get("caption_question") or CAPTION_QUESTION), sample_rate,
                            beam_size, max_new_tokens)

    def ask(self, audio: AudioInput, question: str, *, sample_rate: int | None = None,
            beam_size: int | None = None, max_new_tokens: int | None = None) -> str | list[str]:
        """The language model's answer to ``question`` about each clip (audio prefix + question in its
        chat format)."""
        if not str(question).strip():
            raise ValueError("ask: the question is empty")
        return self._answer(audio, str(question), sample_rate, beam_size, max_new_tokens)

    def caption_windows(self, path: str | os.PathLike, *, window_s: float | None = None, question: str | None = None,
                        beam_size: int | None = None, max_new_tokens: int | None = None) -> CaptionedFile:
        """Caption a file per window of ``window_s`` seconds (default: the training clip length, in the
        config), cut by :func:`kikimimi.inference.windows.window_bounds` with ``tail="merge"``: non-overlapping
        windows, a file shorter than 1.5 windows is one window, a last remainder up to a quarter window joins the
        window before it. Each segment: ``start_s``, ``end_s``, ``caption``, ``logprob``.

        Raises:
            kikimimi.audio.decode.AudioDecodeError: an unreadable file.
        """
        window_s = float(window_s or self.window_s)
        wave, rate = load_audio(path)
        if rate != self.encoder.sample_rate:
            wave = resample(wave, rate, self.encoder.sample_rate)
        sr = self.encoder.sample_rate
        bounds = window_bounds(wave.size, sr, window_s, tail="merge")
        pieces = [wave[a:b] for a, b in bounds]
        q = question or str(self.config.get("caption_question") or CAPTION_QUESTION)
        segments = []
        for (a, b), frames in zip(bounds, self.frames(pieces, sr), strict=True):
            text, score = self.answer_frames(frames, q, beam_size=beam_size, max_new_tokens=max_new_tokens)
            segments.append({"start_s": round(a / sr, 3), "end_s": round(b / sr, 3), "caption": text,
                             "logprob": round(float(score), 4)})
        return CaptionedFile(str(path), segments[0]["caption"], segments)

    def nearest_neighbour_caption(self, audio: AudioInput, sample_rate: int | None = None) -> list[str]:
        """The nearest-neighbour baseline: the caption of the training clip whose pooled embedding is closest
        (cosine) to each input's."""
        return _nn_captions(self.encoder, self.nn_bank, audio, sample_rate)


def _read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise CaptionerError(f"'{folder}': not a captioner folder (no {CONFIG_NAME}); train one with "
                             "kikimimi train-captioner")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CaptionerError(f"'{cfg_path}': unreadable ({exc})") from exc
    if config.get("format") != CAPTIONER_FORMAT:
        raise CaptionerError(f"'{cfg_path}': format {config.get('format')!r}, expected {CAPTIONER_FORMAT!r}")
    return config


def _load_encoder(folder: Path, config: dict[str, Any], audio_model: str | os.PathLike | None,
                  device: str | torch.device | None) -> AudioEncoder:
    source = audio_model or config["audio_model"]
    if not Path(source).exists() and find_entry(str(source)) is None:  # a path, or a registered name
        raise CaptionerError(f"'{folder}': its audio model '{source}' is not there; pass audio_model= "
                             "(--audio-model) with the encoder it was trained on")
    encoder = load_audio_model(source, device=device)
    if encoder.embedding_dim != int(config["audio_embedding_dim"]):
        raise CaptionerError(f"'{folder}': trained on {config['audio_embedding_dim']}-d audio frames, but "
                             f"'{source}' gives {encoder.embedding_dim}-d frames")
    return encoder


def _load_bank(folder: Path, st: Any) -> tuple[torch.Tensor, list[str]] | None:
    if (folder / "nn_bank.safetensors").is_file() and (folder / "nn_bank.json").is_file():
        emb = st.load_file(str(folder / "nn_bank.safetensors"))["embeddings"]
        return emb, list(json.loads((folder / "nn_bank.json").read_text())["captions"])
    return None


def _nn_captions(encoder: AudioEncoder, bank: tuple[torch.Tensor, list[str]] | None, audio: AudioInput,
                 sample_rate: int | None) -> list[str]:
    """The caption of the bank clip whose pooled embedding is closest (cosine) to each input's."""
    if bank is None:
        raise CaptionerError("this captioner folder has no nn_bank (train it with kikimimi train-captioner)")
    emb_bank, caps = bank
    feats, _ = encoder.embed_frames(audio, sample_rate, stack=False)
    emb = torch.stack([encoder.encoder.pool(torch.as_tensor(np.asarray(f), dtype=torch.float32)) for f in feats])
    sims = nn.functional.normalize(emb, dim=-1) @ nn.functional.normalize(emb_bank, dim=-1).T
    return [caps[int(i)] for i in sims.argmax(dim=1)]


def captioner_folder(path: str | os.PathLike) -> Path:
    """The folder of a captioner given as a path or a registered name (``open-captioner-tiny``, packaged: verified
    against its ``SHA256SUMS``, no network); an unknown name comes back as a path (then "not a captioner folder").

    Raises:
        kikimimi.checkpoints.CheckpointError: a registered captioner that cannot be fetched or fails its SHA-256.
    """
    folder = Path(path)
    if folder.exists() or find_entry(os.fspath(path)) is None:
        return folder
    return resolve_model_source(path)


def load_captioner(path: str | os.PathLike, *, audio_model: str | os.PathLike | None = None,
                   device: str | torch.device | None = "cpu") -> Captioner:
    """Load a captioner folder written by ``kikimimi train-captioner`` (:func:`save_captioner`), or a registered
    captioner by name (``"open-captioner-tiny"``, shipped with kikimimi: :func:`captioner_folder`).

    Args:
        audio_model: the audio encoder to use instead of the one the folder names (same embedding size).

    Raises:
        CaptionerError: not a captioner folder, missing weights or audio model, mismatched sizes; LoRA
            adapters without ``peft`` (the message names ``pip install "kikimimi[lora]"``).
        kikimimi.checkpoints.CheckpointError: a packaged captioner whose files fail their SHA-256.
    """
    folder = captioner_folder(path)
    config = _read_config(folder)
    st = _safetensors()
    weights = folder / WEIGHTS_NAME
    try:
        state = st.load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for missing/corrupt files
        raise CaptionerError(f"'{weights}': cannot read the mapper weights ({exc})") from exc
    encoder = _load_encoder(folder, config, audio_model, device)
    lm_cfg = config["lm"]
    lm, tokenizer = load_causal_lm(str(folder / lm_cfg["folder"]) if lm_cfg.get("folder") else lm_cfg["spec"])
    if config.get("lora"):
        _apply_saved_lora(folder, config["lora"], lm, st)
    mapper = PrefixMapper(MapperConfig.from_dict(config["mapper"]))
    mapper_state = {k.removeprefix("mapper."): v for k, v in state.items() if k.startswith("mapper.")}
    try:
        mapper.load_state_dict(mapper_state, strict=True)
    except RuntimeError as exc:
        raise CaptionerError(f"'{weights}': mapper weights do not fit its config ({exc})") from exc
    return Captioner(encoder, mapper, lm, tokenizer, config, _load_bank(folder, st))


def nearest_neighbour_baseline(path: str | os.PathLike, audio: AudioInput, *, sample_rate: int | None = None,
                               audio_model: str | os.PathLike | None = None,
                               device: str | torch.device | None = "cpu") -> list[str]:
    """The nearest-neighbour baseline of a captioner folder for ``audio`` (files or waveforms, input order):
    the caption of the training clip whose pooled embedding is closest (cosine) — what
    :meth:`Captioner.nearest_neighbour_caption` gives, without loading the language model.

    Raises:
        CaptionerError: not a captioner folder, no nn_bank, missing or mismatched audio model.
        kikimimi.audio.decode.AudioDecodeError: an unreadable file.
    """
    folder = captioner_folder(path)
    config = _read_config(folder)
    bank = _load_bank(folder, _safetensors())
    if bank is None:
        raise CaptionerError(f"'{folder}': no nn_bank (train it with kikimimi train-captioner)")
    return _nn_captions(_load_encoder(folder, config, audio_model, device), bank, audio, sample_rate)


def _apply_saved_lora(folder: Path, cfg: dict[str, Any], lm: nn.Module, st: Any) -> None:
    """Re-inject the folder's LoRA adapters into the freshly loaded base model and load their tensors."""
    path = folder / str(cfg.get("weights") or LORA_WEIGHTS_NAME)
    try:
        settings = LoraSettings.from_dict(cfg)
        add_lora(lm, settings)
    except TextEncoderError as exc:  # peft missing
        raise CaptionerError(f"'{folder}': its language model has LoRA adapters: {exc}") from exc
    except (KeyError, ValueError) as exc:
        raise CaptionerError(f"'{folder}': its LoRA settings do not fit the language model ({exc})") from exc
    try:
        state = st.load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for missing/corrupt files
        raise CaptionerError(f"'{path}': cannot read the LoRA adapter weights ({exc})") from exc
    try:
        load_lora_state_dict(lm, state)
    except ValueError as exc:
        raise CaptionerError(f"'{path}': {exc}") from exc
    lm.eval()


def caption_files(captioner: Captioner, inputs: Sequence[str | os.PathLike], *, question: str | None = None,
                  window_s: float | None = None, beam_size: int | None = None, max_new_tokens: int | None = None,
                  progress: bool = False) -> tuple[list[CaptionedFile], list[dict[str, str]]]:
    """Caption (or ask about) every audio file of ``inputs`` (files, folders, CSV lists), per window.

    A file that cannot be read is reported in the errors (``{"file", "error"}``) and the rest are captioned.
    Returns ``(results in input order, errors)``.
    """
    files = collect_audio_files(list(inputs))
    results: list[CaptionedFile] = []
    errors: list[dict[str, str]] = []
    iterator: Any = tqdm(files, desc="caption", unit="file", dynamic_ncols=True) if progress else files
    for f in iterator:
        try:
            results.append(captioner.caption_windows(f, window_s=window_s, question=question, beam_size=beam_size,
                                                     max_new_tokens=max_new_tokens))
        except (AudioDecodeError, ValueError, OSError) as exc:
            errors.append({"file": str(f), "error": f"{type(exc).__name__}: {exc}"})
    return results, errors
