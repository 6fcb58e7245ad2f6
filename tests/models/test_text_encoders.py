"""Text encoders: pooling rules, spec strings, offline loading (MiniLM, SmolLM2) and BERT from a state dict."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers

from kikimimi.models.text import HFTextEncoder, TextEncoder, TextEncoderError, cls_pool, last_token_pool, mean_pool
from kikimimi.models.text_loading import (
    bert_from_state_dict,
    bert_tokenizer_from_vocab,
    find_minilm_folder,
    load_text_encoder,
)

transformers.utils.logging.set_verbosity_error()

SHORT = "a dog barks"
LONG = "a large dog barks loudly at the mail carrier while rain falls on the roof"


# ------------------------------------------------------------------ tiny models and tokenizers


class WordTokenizer:
    """Whitespace tokenizer with a fixed vocabulary: ``eos`` = 1, ``pad`` = 0, words from 3 up (no special tokens)."""

    eos_token_id = 1
    pad_token_id = 0

    def __init__(self, vocab_size: int = 64) -> None:
        self.vocab_size = vocab_size

    def _id(self, word: str) -> int:
        return 3 + sum(ord(c) * (i + 1) for i, c in enumerate(word)) % (self.vocab_size - 3)

    def __call__(self, texts, add_special_tokens=True, truncation=True, max_length=None, padding=False):
        ids = [[self._id(w) for w in t.split()] for t in texts]
        if truncation and max_length is not None:
            ids = [x[:max_length] for x in ids]
        return {"input_ids": ids}


@pytest.fixture(scope="module")
def bert_tok():
    return bert_tokenizer_from_vocab()


def tiny_bert(vocab_size: int, seed: int = 0, max_positions: int = 64) -> transformers.BertModel:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=vocab_size, max_position_embeddings=max_positions)
    return transformers.BertModel(cfg).eval()


def tiny_llama(vocab_size: int = 64, seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                   pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return transformers.LlamaForCausalLM(cfg).eval()


# ------------------------------------------------------------------ pooling rules on tensors


def test_pool_functions_follow_the_mask():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    hidden_padded = hidden.clone()
    hidden_padded[0, 2:] = 1e6  # garbage under padding must not leak in
    assert torch.allclose(mean_pool(hidden_padded, mask)[0], hidden[0, :2].mean(0))
    assert torch.allclose(mean_pool(hidden, mask)[1], hidden[1].mean(0))
    assert torch.equal(cls_pool(hidden_padded, mask), hidden_padded[:, 0])
    assert torch.equal(last_token_pool(hidden_padded, mask), torch.stack([hidden[0, 1], hidden[1, 3]]))
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(last_token_pool(hidden, left)[0], hidden[0, 3])


# ------------------------------------------------------------------ BERT-style encoders


def test_bert_vocab_tokenizer_matches_minilm_tokenizer(bert_tok):
    ref = transformers.AutoTokenizer.from_pretrained(str(find_minilm_folder()), local_files_only=True)
    text = "Hello World, it's a DOG-barking test!"
    assert len(bert_tok) == 30522
    assert bert_tok(text)["input_ids"] == ref(text)["input_ids"]
    assert bert_tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]


def test_mean_pooling_ignores_padding(bert_tok):
    enc = HFTextEncoder(tiny_bert(len(bert_tok)), bert_tok, pooling="mean", name="t")
    alone = enc.encode([SHORT])
    batched = enc.encode([SHORT, LONG], batch_size=8)  # one batch: SHORT is padded to LONG's length
    assert batched.shape == (2, 32) and batched.dtype == torch.float32
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    # The same mean taken over the padded positions as well differs, so the check above can fail.
    ids, mask = enc.tokenize([SHORT, LONG])
    assert mask[0].sum() < mask.shape[1]
    with torch.no_grad():
        hidden = enc.hidden_states(ids, mask)
    assert not torch.allclose(hidden[0].mean(0), batched[0], atol=1e-3)


def test_cls_pooling_takes_position_zero(bert_tok):
    model = tiny_bert(len(bert_tok), seed=1)
    enc = HFTextEncoder(model, bert_tok, pooling="cls", name="t")
    ids, mask = enc.tokenize([SHORT, LONG])
    assert (ids[:, 0] == bert_tok.cls_token_id).all()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    out = enc.encode([SHORT, LONG])
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(enc.encode([SHORT])[0], out[0], atol=1e-5)
    assert not torch.allclose(out[0], enc.hidden_states(ids, mask)[0, 1].detach(), atol=1e-3)


def test_forward_keeps_autograd_and_encode_does_not(bert_tok):
    enc = HFTextEncoder(tiny_bert(len(bert_tok)), bert_tok, pooling="cls", name="t")
    enc.train()
    out = enc([SHORT, LONG])
    assert out.requires_grad and out.shape == (2, 32)
    out.pow(2).sum().backward()
    grad = enc.model.embeddings.word_embeddings.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    emb = enc.encode([SHORT])
    assert not emb.requires_grad
    assert enc.training and enc.model.training  # encode() restores the mode it found
    enc.eval()
    assert torch.allclose(enc.encode([SHORT]), emb, atol=1e-6)  # encode ran in eval mode (no dropout)


def test_encode_order_batch_size_and_input_checks(bert_tok):
    enc = HFTextEncoder(tiny_bert(len(bert_tok)), bert_tok, pooling="mean", name="t")
    texts = [LONG, SHORT, "rain", "a cat meows twice"]
    one_by_one = torch.cat([enc.encode([t]) for t in texts])
    assert torch.allclose(enc.encode(texts, batch_size=3), one_by_one, atol=1e-5)
    assert torch.allclose(enc.encode(SHORT), one_by_one[1:2], atol=1e-5)
    assert enc.encode([]).shape == (0, 32)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc.encode(["ok", 3])
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(["ok"], batch_size=0)
    with pytest.raises(TextEncoderError, match="pooling"):
        HFTextEncoder(enc.model, bert_tok, pooling="max")


# ------------------------------------------------------------------ causal LM encoders


def test_last_token_pooling_appends_eos_and_ignores_right_padding():
    tok = WordTokenizer()
    model = tiny_llama()
    enc = HFTextEncoder(model, tok, pooling="last", append_eos=True, max_length=16, name="llm")
    ids, mask = enc.tokenize([SHORT, LONG])
    n_short = len(SHORT.split()) + 1
    assert mask[0].sum() == n_short and ids[0, n_short - 1] == tok.eos_token_id
    assert (ids[0, n_short:] == tok.pad_token_id).all() and mask[0, n_short:].sum() == 0
    assert mask[1].sum() == 16 and ids[1, 15] == tok.eos_token_id  # truncated to max_length, EOS kept
    out = enc.encode([SHORT, LONG], batch_size=8)
    with torch.no_grad():  # reference: the unpadded text alone, final entry of output_hidden_states
        ref = model(input_ids=ids[:1, :n_short], output_hidden_states=True).hidden_states[-1][0, -1]
    assert torch.allclose(out[0], ref, atol=1e-5)
    assert not torch.allclose(out[0], enc.hidden_states(ids, mask)[0, -1].detach(), atol=1e-3)


def test_llm_mean_pooling_ignores_right_padding():
    enc = HFTextEncoder(tiny_llama(seed=3), WordTokenizer(), pooling="mean", name="llm")
    assert enc.encode([SHORT]).shape == (1, 32)
    assert torch.allclose(enc.encode([SHORT])[0], enc.encode([SHORT, LONG])[0], atol=1e-5)


# ------------------------------------------------------------------ spec strings and folders


def test_spec_errors_say_how_to_provide_a_model(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(TextEncoderError, match="does not exist") as info:
        load_text_encoder(f"bert:{missing}")
    assert str(missing) in str(info.value) and "save_pretrained" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TextEncoderError, match="local path"):
        load_text_encoder("st:")
    with pytest.raises(TextEncoderError, match="unknown text encoder spec"):
        load_text_encoder("clip:whatever")
    with pytest.raises(TextEncoderError, match="#max"):
        load_text_encoder(f"llm:{tmp_path}#max")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match="cannot load a Hugging Face model offline"):
        load_text_encoder(f"gte:{tmp_path / 'empty'}")


def test_local_folders_load_with_their_pooling(tmp_path, bert_tok):
    bert = tiny_bert(len(bert_tok), seed=2)
    bert.save_pretrained(tmp_path / "bert")
    bert_tok.save_pretrained(tmp_path / "bert")
    cls_enc = load_text_encoder(f"bert:{tmp_path / 'bert'}")
    gte_enc = load_text_encoder(f"gte:{tmp_path / 'bert'}")
    assert cls_enc.pooling == "cls" and gte_enc.pooling == "mean" and cls_enc.max_length == 512
    assert cls_enc.name == f"bert:{(tmp_path / 'bert').resolve()}" and cls_enc.dim == 32
    ref_cls = HFTextEncoder(bert, bert_tok, pooling="cls").encode([SHORT, LONG])
    ref_mean = HFTextEncoder(bert, bert_tok, pooling="mean").encode([SHORT, LONG])
    assert torch.allclose(cls_enc.encode([SHORT, LONG]), ref_cls, atol=1e-5)
    assert torch.allclose(gte_enc.encode([SHORT, LONG]), ref_mean, atol=1e-5)

    llama = tiny_llama(vocab_size=len(bert_tok), seed=4)
    llama.save_pretrained(tmp_path / "llm")
    bert_tok.save_pretrained(tmp_path / "llm")
    llm = load_text_encoder(f"llm:{tmp_path / 'llm'}#mean")
    assert isinstance(llm.model, transformers.LlamaForCausalLM) and llm.pooling == "mean"
    assert llm.name.endswith("#mean")
    ref = HFTextEncoder(llama, bert_tok, pooling="mean").encode([SHORT])
    assert torch.allclose(llm.encode([SHORT]), ref, atol=1e-5)
    with pytest.raises(TextEncoderError, match="no EOS token"):  # the BERT vocabulary has no EOS
        load_text_encoder(f"llm:{tmp_path / 'llm'}")


# ------------------------------------------------------------------ BERT from an M2D-CLAP 2025 state dict


@pytest.mark.parametrize("prefix", ["text_encoder.", "text_encoder.model.", "text_encoder.bert.", ""])
def test_bert_from_state_dict_round_trip(bert_tok, prefix):
    model = tiny_bert(len(bert_tok), seed=5)
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    state[f"{prefix}embeddings.position_ids"] = torch.arange(64)[None]  # older transformers stored it
    if prefix.startswith("text_encoder."):
        state["backbone.cls_token"] = torch.zeros(1, 1, 8)  # the rest of an M2D-CLAP file is ignored
    enc = bert_from_state_dict(state, num_heads=2)
    assert isinstance(enc, TextEncoder) and enc.dim == 32 and enc.pooling == "cls"
    assert enc.model.config.num_hidden_layers == 2 and enc.model.config.vocab_size == 30522
    assert enc.model.config.max_position_embeddings == 64 and enc.max_length == 64
    ref = HFTextEncoder(model, bert_tok, pooling="cls").encode([SHORT, LONG])
    assert torch.allclose(enc.encode([SHORT, LONG]), ref, atol=1e-5)


def test_bert_from_state_dict_reports_missing_tensors(bert_tok):
    state = tiny_bert(len(bert_tok)).state_dict()
    state.pop("encoder.layer.1.output.dense.weight")
    with pytest.raises(TextEncoderError, match="missing.*encoder.layer.1.output.dense.weight"):
        bert_from_state_dict(state, num_heads=2)
    with pytest.raises(TextEncoderError, match="word_embeddings"):
        bert_from_state_dict({"foo.weight": torch.zeros(2)})


# ------------------------------------------------------------------ packaged models (offline)


def test_minilm_offline_384d_deterministic_and_semantic():
    enc = load_text_encoder("minilm")
    assert enc.name == "minilm" and enc.dim == 384 and not enc.training
    texts = ["a dog barks", "a dog is barking", "the stock market fell sharply today"]
    a = enc.encode(texts)
    assert a.shape == (3, 384) and a.dtype == torch.float32
    assert torch.equal(a, enc.encode(texts))
    cos = torch.nn.functional.cosine_similarity
    assert cos(a[0], a[1], dim=0) > cos(a[0], a[2], dim=0) + 0.3
    assert torch.allclose(enc([texts[0]]).detach(), a[:1], atol=1e-5)


@pytest.fixture(scope="module")
def smollm2():
    return load_text_encoder("smollm2")


def test_smollm2_offline_gives_its_hidden_size(smollm2):
    assert smollm2.name == "smollm2#eos" and smollm2.pooling == "last" and smollm2.append_eos
    assert smollm2.dim == smollm2.model.config.hidden_size == 576
    out = smollm2.encode([SHORT, "a dog is barking loudly in the yard"])
    assert out.shape == (2, 576) and torch.isfinite(out).all()
    assert torch.allclose(smollm2.encode([SHORT])[0], out[0], atol=1e-3)
    ids, mask = smollm2.tokenize([SHORT])
    assert ids[0, int(mask[0].sum()) - 1] == smollm2.tokenizer.eos_token_id
