"""Audio–language inference with M2D-CLAP (2024) and M2D2 / M2D-CLAP (2025) checkpoints.

``model = load_clap(path)`` gives a :class:`CLAPModel` whose audio and text embeddings live in one space
(768-d for the released ViT-Base files) and are compared by cosine similarity:

- audio, 2024 (``audio_proj`` = Linear-ReLU-Linear): waveform → log-mel → normalise → the official
  chunking with *flat* features (all patch tokens of all chunks ``[N, D]``) → mean over the N tokens →
  ``audio_proj`` (docs/reference.md §7.3 — not the mean of 3840-d frame vectors);
- audio, 2025 (``audio_proj`` = semantic projector): the same unpooled token sequence → the semantic
  token transformer (§5.2);
- text: the text encoder's sentence embedding (not normalised) → ``text_proj`` when the file has one.

Where the text encoder comes from (first match wins):

1. ``text_encoder=`` argument: a :class:`kikimimi.models.text.TextEncoder` or a spec for
   :func:`kikimimi.models.text_loading.load_text_encoder` (``"gte:/path/to/gte-base"``, ``"minilm"``, …);
2. ``text_encoder.`` tensors inside the file (2025 ``TI`` release: fine-tuned BERT) →
   :func:`kikimimi.models.text_loading.bert_from_state_dict`;
3. key ``text_encoder`` in ``config.json`` beside the checkpoint (or inside a kikimimi folder) —
   written by kikimimi's own M2D-CLAP training;
4. otherwise (the 2024 release, whose text side was frozen GTE-base embeddings) a
   :class:`CLAPError` asking for ``text_encoder="gte:/path/to/gte-base"``.

The text encoder is resolved on first use, so audio-only work (building a search index) needs none.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kikimimi.inference.encoder import AudioEncoder, AudioInput, is_single_input, load
from kikimimi.models import text_loading
from kikimimi.models.vit import AudioViT

__all__ = ["CLAPError", "CLAPModel", "cosine_similarity", "load_clap", "text_encoder_spec_from_config"]


class CLAPError(ValueError):
    """A checkpoint cannot be used as an audio–language model; the message names the file and the fix."""


def cosine_similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine similarity matrix ``[A, B]`` (float32) of ``a`` ``[A, D]`` and ``b`` ``[B, D]`` (1-D → one row)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cannot compare embeddings of size {a.shape[1]} and {b.shape[1]}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a @ b.T).astype(np.float32)


def map_by_length(waves: Sequence[np.ndarray], batch_size: int,
                  fn: Callable[[list[np.ndarray]], Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Apply ``fn`` to batches of equal-length waveforms (at most ``batch_size``) and return its per-clip
    outputs in input order. Clips are never padded to share a batch, so no result depends on the batch."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(waves):
        by_length[len(w)].append(i)
    out: list[torch.Tensor | None] = [None] * len(waves)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            for i, result in zip(chunk, fn([waves[i] for i in chunk]), strict=True):
                out[i] = result
    return out  # type: ignore[return-value]


def text_encoder_spec_from_config(path: str | os.PathLike) -> str | None:
    """The ``text_encoder`` spec recorded in ``config.json`` beside ``path`` (or inside the folder ``path``,
    then in its parent: ``kikimimi pretrain`` writes the run settings next to the ``kikimimi/`` export).

    Looks at the top-level key, ``method_config.text_encoder`` (``kikimimi pretrain`` run folders) and
    ``config.text_encoder`` (kikimimi folders written by ``save_kikimimi``).
    """
    path = Path(path)
    # a folder (ours: model.safetensors + config.json, or a run's kikimimi/ export beside the run's config.json)
    candidates = [path / "config.json", path.parent / "config.json"] if path.is_dir() else [path.parent / "config.json"]
    for cfg in candidates:
        if not cfg.is_file():
            continue
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CLAPError(f"'{cfg}': cannot read the configuration ({exc})") from exc
        if not isinstance(data, dict):
            continue
        nested = [data.get(k) for k in ("method_config", "config") if isinstance(data.get(k), dict)]
        for spec in [data.get("text_encoder")] + [d.get("text_encoder") for d in nested]:
            if isinstance(spec, dict):  # {"spec": "...", ...}
                spec = spec.get("spec")
            if isinstance(spec, str) and spec:
                return spec
    return None


class CLAPModel:
    """Audio and text encoders mapping into one embedding space (eval mode, no gradients).

    Attributes:
        audio: the underlying :class:`~kikimimi.inference.encoder.AudioEncoder` (its bundle holds ``audio_proj``).
        kind: ``"mlp"`` (2024 projector on mean-pooled tokens) or ``"semantic"`` (2025 projector).
        sample_rate: model rate in Hz; other rates are resampled.
        embedding_dim: size of the joint space (768 for the released files).
        logit_scale: the learnt temperature as stored (natural log), or ``None``; the softmax scale is
            ``exp(logit_scale)``.
        source: the checkpoint path (for messages).
    """

    def __init__(self, audio: AudioEncoder, *, text_encoder: Any = None, source: str | os.PathLike = "") -> None:
        bundle = audio.bundle
        self.source = str(source or bundle.config.get("source", ""))
        if not isinstance(audio.encoder, AudioViT) or bundle.audio_proj is None:
            raise CLAPError(
                f"'{self.source}': not an M2D-CLAP checkpoint (no audio_proj tensors); use kikimimi.load for "
                "audio embeddings, or an M2D-CLAP 2024/2025 file for audio–language use"
            )
        self.audio = audio
        self.device = audio.device
        self.sample_rate = audio.sample_rate
        self.audio_proj = bundle.audio_proj.to(self.device).eval()
        self.text_proj = None if bundle.text_proj is None else bundle.text_proj.to(self.device).eval()
        self.kind = (bundle.config.get("audio_proj") or {}).get("kind", "mlp")
        self.logit_scale = bundle.logit_scale
        self.embedding_dim = self._audio_out_dim()
        self._text_arg = text_encoder
        self._text_encoder: Any = None

    def __repr__(self) -> str:
        return (f"CLAPModel(kind={self.kind!r}, sample_rate={self.sample_rate}, embedding_dim={self.embedding_dim}, "
                f"text_encoder={self.text_encoder_description()!r}, source={self.source!r})")

    def _audio_out_dim(self) -> int:
        proj = self.audio_proj
        if hasattr(proj, "norm") and hasattr(proj.norm, "normalized_shape"):
            return int(proj.norm.normalized_shape[0])
        last = [m for m in proj.modules() if isinstance(m, torch.nn.Linear)][-1]
        return int(last.out_features)

    # ------------------------------------------------------------------ text side
    def text_encoder_description(self) -> str:
        """Where the text encoder comes (or will come) from, for messages."""
        if self._text_encoder is not None:
            return str(getattr(self._text_encoder, "name", type(self._text_encoder).__name__))
        if isinstance(self._text_arg, str):
            return self._text_arg
        if self._text_arg is not None:
            return str(getattr(self._text_arg, "name", type(self._text_arg).__name__))
        if self.audio.bundle.text_encoder_state:
            return "bundled (text_encoder. tensors)"
        return text_encoder_spec_from_config(self.source) or "none" if self.source else "none"

    @property
    def text_encoder(self) -> Any:
        """The text encoder (``.encode(texts) -> Tensor [N, D_text]``), resolved on first use."""
        if self._text_encoder is None:
            self._text_encoder = self._resolve_text_encoder()
        return self._text_encoder

    def _resolve_text_encoder(self) -> Any:
        arg = self._text_arg
        if arg is not None and not isinstance(arg, str):
            return arg
        if isinstance(arg, str):
            return text_loading.load_text_encoder(arg, device=self.device)
        state = self.audio.bundle.text_encoder_state
        spec = text_encoder_spec_from_config(self.source) if self.source else None
        if spec is None:
            spec = self.audio.bundle.config.get("text_encoder")
        if state and not (isinstance(spec, str) and spec and not spec.startswith("bert")):
            return text_loading.bert_from_state_dict(state, device=self.device)
        if isinstance(spec, str) and spec:
            encoder = text_loading.load_text_encoder(spec, device=self.device)
            if state:  # a text encoder fine-tuned by kikimimi (M2D2 stage 2): its weights are in the file
                try:
                    encoder.load_state_dict(state, strict=True)
                except RuntimeError as exc:
                    raise CLAPError(
                        f"'{self.source}': the text-encoder tensors in the file do not fit {spec!r}: {exc}"
                    ) from exc
            return encoder
        raise CLAPError(
            f"'{self.source}': this checkpoint has no text encoder inside it (the M2D-CLAP 2024 release was "
            "trained on frozen GTE-base sentence embeddings). Download thenlper/gte-base once and pass "
            "text_encoder='gte:/path/to/gte-base' (CLI: --text-encoder gte:/path/to/gte-base)"
        )

    def _text_proj_in(self) -> int | None:
        if self.text_proj is None:
            return None
        first = next((m for m in self.text_proj.modules() if isinstance(m, torch.nn.Linear)), None)
        return None if first is None else int(first.in_features)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str] | str, batch_size: int = 64) -> np.ndarray:
        """Text embeddings ``[N, embedding_dim]`` float32 (not normalised): text encoder → ``text_proj``."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        encoder = self.text_encoder
        parts = []
        for start in range(0, len(texts), batch_size):
            emb = encoder.encode(texts[start:start + batch_size])
            emb = torch.as_tensor(emb, dtype=torch.float32)
            expected = self._text_proj_in()
            if expected is not None and emb.shape[-1] != expected:
                raise CLAPError(
                    f"'{self.source}': the text encoder ({self.text_encoder_description()}) gives {emb.shape[-1]}-d "
                    f"embeddings but the file's text_proj expects {expected}-d; use the text encoder the model was "
                    "trained with"
                )
            if self.text_proj is not None:
                emb = self.text_proj(emb.to(self.device)).float()
            parts.append(emb.cpu())
        out = torch.cat(parts).numpy()
        if out.shape[1] != self.embedding_dim:
            raise CLAPError(
                f"'{self.source}': the text encoder ({self.text_encoder_description()}) gives {out.shape[1]}-d "
                f"embeddings but the audio side is {self.embedding_dim}-d and the file has no matching text_proj; "
                "use the text encoder the model was trained with"
            )
        return out

    # ------------------------------------------------------------------ audio side
    @torch.inference_mode()
    def audio_tokens(self, audio: AudioInput, sample_rate: int | None = None,
                     batch_size: int = 8) -> list[torch.Tensor]:
        """Flat patch tokens of all chunks per clip: list of ``[N_i, D]`` (CPU float32).

        Uses the official chunking (training-length chunks, zero padding in the normalised domain);
        clips of equal length are batched together, so a clip's result never depends on the batch.
        """
        enc = self.audio
        waves = enc.waveforms(audio, sample_rate)

        def tokens_same_length(batch: list[np.ndarray]) -> torch.Tensor:
            x = torch.from_numpy(np.stack(batch)).to(self.device)
            return enc.encoder.encode_lms(enc.norm_stats.normalize(enc.frontend(x)), flat=True)

        return map_by_length(waves, batch_size, tokens_same_length)

    @torch.inference_mode()
    def project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """One clip's tokens ``[N, D]`` → its joint-space embedding ``[embedding_dim]``."""
        tokens = tokens.to(self.device)
        if self.kind == "semantic":
            return self.audio_proj(tokens.unsqueeze(0))[0].float()
        return self.audio_proj(tokens.mean(dim=0, keepdim=True))[0].float()

    def encode_audio(self, audio: AudioInput, sample_rate: int | None = None, batch_size: int = 8) -> np.ndarray:
        """Audio embeddings float32 (not normalised), one input in, one output out: a path or a 1-D waveform →
        ``[embedding_dim]``; a list of paths / waveforms (any lengths) or ``[B, samples]`` → ``[B, embedding_dim]``.

        Waveforms are at ``sample_rate`` (default: the model rate). Each clip is encoded whole.
        """
        tokens = self.audio_tokens(audio, sample_rate, batch_size)
        if not tokens:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        out = torch.stack([self.project_tokens(t).cpu() for t in tokens]).numpy()
        return out[0] if is_single_input(audio) else out

    def __call__(self, waves: list[np.ndarray], sample_rate: int) -> np.ndarray:
        """Embedding-function form (``waves``, rate) → ``[B, embedding_dim]`` joint-space audio embeddings."""
        return self.encode_audio(list(waves), sample_rate)

    # ------------------------------------------------------------------ scores
    @staticmethod
    def similarity(audio_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """Cosine similarity ``[A, T]`` between audio ``[A, D]`` and text ``[T, D]`` embeddings."""
        return cosine_similarity(audio_emb, text_emb)

    @property
    def temperature_scale(self) -> float:
        """``exp(logit_scale)`` (the CLAP softmax scale), or 1.0 when the file stores none."""
        return 1.0 if self.logit_scale is None else float(math.exp(self.logit_scale))


def load_clap(path: str | os.PathLike, *, text_encoder: Any = None, device: str | torch.device | None = None,
              trust_pickle: bool = False, accept_licence: bool = False, **overrides: Any) -> CLAPModel:
    """Load an M2D-CLAP checkpoint (official 2024/2025 file or a kikimimi folder) as a :class:`CLAPModel`.

    Args:
        path: the weight file (or kikimimi folder), or a registered name such as ``"m2d-clap-2025"``.
        text_encoder: ``None`` (bundled / recorded in ``config.json``), a spec string for
            :func:`~kikimimi.models.text_loading.load_text_encoder` (e.g. ``"gte:/models/gte-base"``) or an encoder.
        device: ``"cpu"``, ``"cuda"`` … or ``None``/``"auto"``.
        trust_pickle, accept_licence, overrides: as :func:`kikimimi.inference.encoder.load`.

    Raises:
        CLAPError: the file has no CLAP audio projector.
        kikimimi.checkpoints.CheckpointError: unreadable or unknown file.
    """
    audio = load(path, device=device, trust_pickle=trust_pickle, accept_licence=accept_licence, **overrides)
    return CLAPModel(audio, text_encoder=text_encoder, source=path)
