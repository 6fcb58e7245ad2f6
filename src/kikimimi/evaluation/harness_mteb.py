"""MAEB / mteb (``pip install mteb``): any kikimimi model as an mteb model, audio side and, for CLAP, text side.

mteb's model protocol: ``encode(inputs: DataLoader[BatchedInput], *, task_metadata, hf_split, hf_subset,
prompt_type=None, **kwargs) -> Array [N, D]`` where a batch holds an ``"audio"`` list (each item a
``{"array", "sampling_rate"}`` mapping or a decoder with ``get_all_samples()``) and/or a ``"text"`` list, plus a
``ModelMeta`` (name, revision, embedding size, modalities, licence…) that mteb records with every result.

- :func:`mteb_model` wraps a model object or loads one (anything :func:`kikimimi.load` / :func:`kikimimi.load_clap`
  reads, ``hf://owner/name`` included) as an instance of mteb's ``AbsEncoder``: audio → clip embeddings
  (``AudioEncoder.embed``, or ``CLAPModel.encode_audio`` in the joint space), text → ``CLAPModel.encode_text``
  (CLAP only); a batch with both (audio–text pair tasks) gets their sum, as mteb's own CLAP wrapper does. Each
  clip is resampled from its own rate to the model's by kikimimi (soxr), not by mteb's collator (which needs
  torchaudio).
- :func:`mteb_model_meta` gives the ``ModelMeta`` whose ``loader`` builds that wrapper (mteb's way of naming a
  model it loads itself; ``ModelMeta.load_model`` first asks for mteb's ``audio`` extra, torchaudio).

``mteb.evaluate(mteb_model("hf://owner/name"), mteb.get_benchmark("MAEB(v1)"))`` runs MAEB on a kikimimi model.

mteb is imported only when used: ``pip install "kikimimi[mteb]"``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from kikimimi import __version__
from kikimimi.inference.clap import CLAPModel
from kikimimi.inference.encoder import AudioEncoder, load

__all__ = ["MTEB_EXTRA_HINT", "MtebAdapterError", "audio_items", "mteb_model", "mteb_model_meta"]

MTEB_EXTRA_HINT = 'pip install "kikimimi[mteb]"'


class MtebAdapterError(ValueError):
    """A model or input the mteb adapter cannot use (one line)."""


def _mteb() -> Any:
    try:
        import mteb
    except ImportError as exc:
        raise MtebAdapterError(f"the mteb adapter needs the package mteb ({exc}); {MTEB_EXTRA_HINT}") from exc
    return mteb


def audio_items(items: Iterable[Any]) -> list[tuple[np.ndarray, int]]:
    """mteb audio items → ``(mono float32 waveform [samples], rate)``.

    Accepts ``{"array", "sampling_rate"}`` mappings (channels first when 2-D) and audio decoders with
    ``get_all_samples()`` (``.data [channels, samples]``, ``.sample_rate``), what ``datasets`` yields.
    """
    out = []
    for item in items:
        if isinstance(item, Mapping) and "array" in item:
            wave, rate = np.asarray(item["array"], dtype=np.float32), int(item["sampling_rate"])
        elif hasattr(item, "get_all_samples"):
            samples = item.get_all_samples()
            wave, rate = np.asarray(samples.data, dtype=np.float32), int(samples.sample_rate)
        else:
            raise MtebAdapterError(f"an audio item of type {type(item).__name__} (expected an array and sampling_rate)")
        if wave.ndim == 2:
            wave = wave.mean(axis=0)
        if wave.ndim != 1:
            raise MtebAdapterError(f"an audio item of shape {wave.shape} (expected [samples] or [channels, samples])")
        out.append((np.ascontiguousarray(wave), rate))
    return out


def _embed_audio(model: AudioEncoder | CLAPModel, waves: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """``[N, D]`` clip embeddings, clips of one rate together (order kept)."""
    out: list[np.ndarray | None] = [None] * len(waves)
    for rate in sorted({r for _, r in waves}):
        index = [i for i, (_, r) in enumerate(waves) if r == rate]
        clips = [waves[i][0] for i in index]
        emb = model.encode_audio(clips, rate) if isinstance(model, CLAPModel) else model.embed(clips, rate)
        for i, e in zip(index, np.asarray(emb, dtype=np.float32).reshape(len(index), -1), strict=True):
            out[i] = e
    return np.stack(out)  # type: ignore[arg-type]


def _dimension(model: AudioEncoder | CLAPModel) -> int:
    return int(model.embedding_dim)


@functools.cache
def _wrapper_class() -> type:
    """mteb's ``AbsEncoder`` subclass, defined once mteb is importable."""
    _mteb()
    from mteb.models.abs_encoder import AbsEncoder

    class KikimimiMtebEncoder(AbsEncoder):
        """A kikimimi model under mteb's model protocol (see :mod:`kikimimi.evaluation.harness_mteb`)."""

        def __init__(self, model_name: str, revision: str | None = None, *, device: str | None = None,
                     model: AudioEncoder | CLAPModel | None = None, kind: str = "auto",
                     **load_kwargs: Any) -> None:
            self.model = model if model is not None else _load(model_name, revision, kind, device, load_kwargs)
            self.mteb_model_meta = _meta(model_name, revision, self.model, loader=None)

        def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str,
                   prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            features = getattr(getattr(inputs, "dataset", None), "column_names", None) or ()
            audio_parts: list[np.ndarray] = []
            text_parts: list[np.ndarray] = []
            for batch in inputs:
                if "audio" in batch and ("audio" in features or not features):
                    audio_parts.append(_embed_audio(self.model, audio_items(batch["audio"])))
                if "text" in batch and batch["text"] is not None:
                    if not isinstance(self.model, CLAPModel):
                        raise MtebAdapterError(f"task {task_metadata.name}: text inputs need a CLAP model; "
                                               "this model has an audio side only")
                    audio_or_text = np.asarray(self.model.encode_text(list(batch["text"])), dtype=np.float32)
                    text_parts.append(audio_or_text)
            audio = np.concatenate(audio_parts) if audio_parts else None
            text = np.concatenate(text_parts) if text_parts else None
            if audio is not None and text is not None:
                if len(audio) != len(text):
                    raise MtebAdapterError(f"task {task_metadata.name}: {len(audio)} clips but {len(text)} texts")
                return audio + text
            if audio is None and text is None:
                raise MtebAdapterError(f"task {task_metadata.name}: a batch with neither audio nor text")
            return audio if audio is not None else text  # type: ignore[return-value]

    return KikimimiMtebEncoder


def _load(source: str, revision: str | None, kind: str, device: str | None,
          load_kwargs: dict[str, Any]) -> AudioEncoder | CLAPModel:
    """``source`` (``@revision`` added to an ``hf://`` source) as a CLAP model when ``kind`` is ``clap`` (or
    ``auto`` and the weights have an audio projector), else as an audio encoder."""
    if revision and str(source).startswith("hf://") and "@" not in str(source):
        source = f"{source}@{revision}"
    text_encoder = load_kwargs.pop("text_encoder", None)
    encoder = load(source, device, **load_kwargs)
    if kind == "clap" or (kind == "auto" and encoder.bundle.audio_proj is not None):
        return CLAPModel(encoder, text_encoder=text_encoder, source=source)  # what load_clap builds
    return encoder


def _meta(name: str, revision: str | None, model: AudioEncoder | CLAPModel | None, *, loader: Any,
          **fields: Any) -> Any:
    from mteb.models import ModelMeta

    clap = isinstance(model, CLAPModel)
    audio = model.audio if clap else model
    n_params = None if audio is None else int(sum(p.numel() for p in audio.encoder.parameters()))
    values: dict[str, Any] = dict(
        loader=loader, name=name, revision=revision or "main", release_date=None,
        languages=["eng-Latn"] if clap else None, n_parameters=n_params, memory_usage_mb=None,
        max_tokens=float("inf"), embed_dim=None if model is None else _dimension(model), license=None,
        open_weights=True, public_training_code="https://pypi.org/project/kikimimi/",
        public_training_data=None, framework=["PyTorch"], similarity_fn_name="cosine", use_instructions=False,
        training_datasets=None, modalities=["audio", "text"] if clap else ["audio"],
        extra_requirements_groups=[],  # not mteb's "audio" extra (torchaudio): kikimimi decodes and resamples
    )
    values.update(fields)
    return ModelMeta(**values)


def mteb_model(model: AudioEncoder | CLAPModel | str | os.PathLike, *, name: str | None = None,
               revision: str | None = None, kind: str = "auto", device: str | None = None,
               **load_kwargs: Any) -> Any:
    """An mteb model (an ``AbsEncoder``) for ``model``: a loaded :class:`AudioEncoder` / :class:`CLAPModel`, or a
    source to load (``kind`` ``"auto"``: CLAP when the weights carry an audio projector; ``"clap"``;
    ``"encoder"``).

    Args:
        name: the name mteb records with the results (``owner/name`` is the mteb convention; default: the source
            for a path or ``hf://`` source, else ``kikimimi/<family>``).

    Raises:
        MtebAdapterError: mteb not installed (the message names ``pip install "kikimimi[mteb]"``).
    """
    cls = _wrapper_class()
    if isinstance(model, AudioEncoder | CLAPModel):
        family = (model.audio if isinstance(model, CLAPModel) else model).family
        return cls(name or f"kikimimi/{family}", revision, model=model)
    source = os.fspath(model)
    label = name or (source.removeprefix("hf://").split("@")[0] if source.startswith("hf://") else
                     f"kikimimi/{os.path.basename(source.rstrip('/')) or 'model'}")
    loaded = _load(source, revision, kind, device, load_kwargs)
    return cls(label, revision, model=loaded)


def mteb_model_meta(source: str | os.PathLike, *, name: str | None = None, revision: str | None = None,
                    kind: str = "auto", clap: bool | None = None, **fields: Any) -> Any:
    """mteb ``ModelMeta`` whose ``loader`` loads ``source`` through :func:`mteb_model` when mteb runs it.

    ``clap`` (default: ``kind == "clap"``) sets the modalities (audio, or audio and text) without loading the
    model; ``fields`` override any other ``ModelMeta`` field (``license``, ``release_date``, ``reference``…).
    """
    _mteb()
    source = os.fspath(source)
    label = name or (source.removeprefix("hf://").split("@")[0] if source.startswith("hf://") else
                     f"kikimimi/{os.path.basename(source.rstrip('/')) or 'model'}")
    is_clap = (kind == "clap") if clap is None else clap

    def loader(model_name: str, revision: str | None = None, device: str | None = None, **kwargs: Any) -> Any:
        return mteb_model(source, name=model_name, revision=revision, kind=kind, device=device, **kwargs)

    defaults: dict[str, Any] = dict(modalities=["audio", "text"] if is_clap else ["audio"],
                                    languages=["eng-Latn"] if is_clap else None,
                                    reference=None, citation=f"kikimimi {__version__}")
    defaults.update(fields)
    return _meta(label, revision, None, loader=loader, **defaults)
