"""LoRA adapters on the captioner's frozen language model (peft, the ``lora`` extra): only the mapper and the
adapters train, the captioner folder stores the adapters beside the mapper (never the base model) and
``load_captioner`` re-applies them exactly, resume restores them, and a missing peft names ``kikimimi[lora]``."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from caption_fakes import (  # noqa: E402
    QUESTION,
    TEMPLATE,
    resume_from_earlier_checkpoint,
    train_steps,
    words,
    write_captions,
    write_tiny_encoder,
    write_tiny_llama,
)

from kikimimi.audio.synthetic import SOUND_CLASSES, make_dataset  # noqa: E402
from kikimimi.cli import console_main, main  # noqa: E402
from kikimimi.data.caption_qa import caption_examples  # noqa: E402
from kikimimi.data.captions import CaptionTable  # noqa: E402
from kikimimi.inference.captioner import (  # noqa: E402
    Captioner,
    CaptionerError,
    load_audio_model,
    load_captioner,
    save_captioner,
)
from kikimimi.methods.captioner import CaptionerMethod  # noqa: E402
from kikimimi.models.caption_prompts import prompt_ids  # noqa: E402
from kikimimi.models.causal_lm import load_causal_lm  # noqa: E402
from kikimimi.models.lora import LoraSettings, add_lora, is_lora_parameter  # noqa: E402
from kikimimi.models.prefix_mapper import MapperConfig  # noqa: E402
from kikimimi.models.text import TextEncoderError  # noqa: E402
from kikimimi.training.captioner import fit_captioner  # noqa: E402
from kikimimi.training.captioner_run import clip_features, train_captioner  # noqa: E402

STEPS, SAVE_EVERY = 12, 8
LORA = {"rank": 4, "alpha": 8.0, "targets": ["q_proj", "v_proj"]}
SETTINGS = {"train_lm": False, "lora": LORA, "steps": STEPS, "batch_size": 12, "lr": 1e-2, "seed": 0,
            "device": "cpu", "progress": False, "save_every": SAVE_EVERY, "keep_checkpoints": 2,
            "mapper": {"prefix_len": 2, "width": 32, "depth": 1, "heads": 2}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("captioner_lora")
    labels = make_dataset(root / "audio", n_per_class=5, duration_s=1.0, seed=0)
    cap, qa = write_captions(labels)
    texts = [TEMPLATE.format(w=words(c)) for c in SOUND_CLASSES] + [f"A {words(c)}." for c in SOUND_CLASSES]
    return {"root": root, "labels": labels, "captions": cap, "qa": qa,
            "lm": write_tiny_llama(root / "lm", texts + [QUESTION]), "encoder": write_tiny_encoder(root / "enc")}


@pytest.fixture(scope="module")
def trained(data):
    return train_captioner(data["encoder"], data["captions"], data["root"] / "run", qa=data["qa"],
                           settings={**SETTINGS, "lm": str(data["lm"])})


def _held_out_files(data) -> list[str]:
    rows = [r for r in csv.DictReader(open(data["labels"], newline="")) if r["split"] != "train"]
    return [str(data["labels"].parent / r["file_name"]) for r in rows]


def _logits(mapper, lm, frames: torch.Tensor, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        x = torch.cat([mapper(frames[None]), lm.get_input_embeddings()(torch.tensor([prompt]))], dim=1)
        return lm(inputs_embeds=x).logits[0]


def test_only_the_mapper_and_the_adapters_train(data):
    lm, _ = load_causal_lm(str(data["lm"]))
    base = {k: v.clone() for k, v in lm.state_dict().items()}
    method = CaptionerMethod(MapperConfig(in_dim=8, lm_dim=64, prefix_len=2, width=16, depth=1, heads=2), lm,
                             lora=LoraSettings(**LORA))
    lm = method.language_model
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all(is_lora_parameter(n) for n in trainable)
    assert {n for n, p in lm.named_parameters() if is_lora_parameter(n)} == trainable
    assert all(".q_proj." in n or ".v_proj." in n for n in trainable)
    # the checkpoint holds the mapper and the adapters, not the base model
    keys = set(method.state_dict())
    assert keys == set(method.export_official_state_dict())
    assert all(k.startswith(("mapper.", "lora.")) for k in keys) and sum(k.startswith("lora.") for k in keys) == 8
    opt_params = [p for g in method.param_groups(0.0) for p in g["params"]]
    assert {id(p) for p in opt_params} == {id(p) for p in method.parameters()}  # = mapper + adapters
    assert {id(p) for p in method.lora.parameters()} == {id(p) for n, p in lm.named_parameters() if n in trainable}
    adapters_before = {n: p.detach().clone() for n, p in lm.named_parameters() if n in trainable}
    opt = torch.optim.AdamW(opt_params, lr=1e-2, weight_decay=0.0)
    train_steps(method, opt)
    assert not lm.training
    after = dict(lm.named_parameters())
    for name, value in adapters_before.items():  # every adapter tensor moved (B from 0, A from step 2)
        assert not torch.equal(after[name].detach(), value), name
    for name, value in lm.state_dict().items():  # the base model did not
        if not is_lora_parameter(name):
            assert torch.equal(value, base[name.replace(".base_layer.", ".")]), name


def test_reloaded_captioner_equals_the_trained_one(data, tmp_path):
    table = CaptionTable.load(data["captions"])
    encoder = load_audio_model(data["encoder"])
    feats, _ = clip_features(encoder, {k: table.path(k) for k in table.keys})
    examples = caption_examples({k: table.captions(k) for k in feats}, {})
    fit = fit_captioner(feats, examples, {**SETTINGS, "lm": str(data["lm"]), "save_every": None}, tmp_path / "run")
    lm = fit.method.language_model
    assert any(p.abs().sum() > 0 for n, p in lm.named_parameters() if ".lora_B." in n)  # adapters took effect
    folder = save_captioner(tmp_path / "captioner", mapper=fit.method.mapper, lm=lm, tokenizer=fit.tokenizer,
                            lm_trained=False, lm_spec=str(data["lm"]), audio_model=data["encoder"],
                            audio_embedding_dim=encoder.embedding_dim, lora=fit.method.lora_settings)
    cfg = json.loads((folder / "captioner.json").read_text())
    assert cfg["lm"] == {"spec": str(data["lm"]), "folder": None}  # the base model stays out
    assert cfg["lora"] == {**LORA, "weights": "lora.safetensors"} and not (folder / "lm").exists()
    from safetensors.torch import load_file

    assert all(k.startswith("mapper.") for k in load_file(str(folder / "model.safetensors")))
    assert set(load_file(str(folder / "lora.safetensors"))) == {n for n, _ in lm.named_parameters()
                                                               if is_lora_parameter(n)}
    before = Captioner(encoder, fit.method.mapper, lm, fit.tokenizer, cfg)
    after = load_captioner(folder)
    files = _held_out_files(data)
    assert after.caption(files, beam_size=1) == before.caption(files, beam_size=1)
    assert after.ask(files[:3], QUESTION, beam_size=1) == before.ask(files[:3], QUESTION, beam_size=1)
    prompt = prompt_ids(fit.tokenizer, QUESTION)
    base_lm, _ = load_causal_lm(str(data["lm"]))
    for frames in after.frames(files[:4]):
        ref = _logits(before.mapper, before.lm, frames, prompt)
        torch.testing.assert_close(_logits(after.mapper, after.lm, frames, prompt), ref, atol=1e-6, rtol=0)
        assert (_logits(after.mapper, base_lm, frames, prompt) - ref).abs().max() > 1e-4  # adapters matter


def test_resume_restores_the_adapters(data, trained, tmp_path):
    cfg = json.loads((trained.model_dir / "captioner.json").read_text())
    assert cfg["lora"]["rank"] == 4 and (trained.model_dir / "lora.safetensors").is_file()
    resumed = resume_from_earlier_checkpoint(trained, data, tmp_path, STEPS, SAVE_EVERY)
    from safetensors.torch import load_file

    a = load_file(str(trained.model_dir / "lora.safetensors"))
    b = load_file(str(resumed.model_dir / "lora.safetensors"))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)


def test_train_captioner_command_lora_options(data, tmp_path):
    assert main(["train-captioner", "--audio-model", str(data["encoder"]), "--captions", str(data["captions"]),
                 "--llm", str(data["lm"]), "--lora-rank", "2", "--lora-alpha", "4", "--lora-targets",
                 "q_proj,k_proj,v_proj", "--steps", "2", "--batch-size", "8", "--out", str(tmp_path), "--run-name",
                 "r", "--mapper-width", "32", "--prefix-len", "2", "--no-progress", "--device", "cpu"]) == 0
    model = tmp_path / "r" / "captioner"
    assert json.loads((model / "captioner.json").read_text())["lora"] == {
        "rank": 2, "alpha": 4.0, "targets": ["q_proj", "k_proj", "v_proj"], "weights": "lora.safetensors"}
    assert isinstance(load_captioner(model).caption(_held_out_files(data)[0], beam_size=1), str)
    assert main(["train-captioner", "--audio-model", str(data["encoder"]), "--captions", str(data["captions"]),
                 "--llm", "tiny", "--lora-rank", "2", "--out", str(tmp_path), "--run-name", "t"]) == 2
    with pytest.raises(ValueError, match="do not fit"):
        add_lora(load_causal_lm(str(data["lm"]))[0], LoraSettings(2, targets=("no_such_layer",)))


def test_missing_peft_names_the_lora_extra(data, trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(TextEncoderError, match=r"kikimimi\[lora\]"):
        add_lora(load_causal_lm(str(data["lm"]))[0], LoraSettings(2))
    with pytest.raises(CaptionerError, match=r"kikimimi\[lora\]"):
        load_captioner(trained.model_dir)
    rc = console_main(["train-captioner", "--audio-model", str(data["encoder"]), "--captions",
                       str(data["captions"]), "--llm", str(data["lm"]), "--lora-rank", "4", "--out",
                       str(tmp_path), "--run-name", "x", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and 'pip install "kikimimi[lora]"' in err and "Traceback" not in err
    assert not (tmp_path / "x" / "config.json").exists()  # refused before any clip was embedded
