"""The captioner: a tiny random Llama + tiny M2D encoder trained on generated clips with templated captions,
decoding (beam search on a hand-made distribution, cache = full recompute), the frozen-LM rule, resume, the
folder format and the caption / ask / train-captioner commands."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
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
from kikimimi.cli import main  # noqa: E402
from kikimimi.evaluation.caption_metrics import named_class  # noqa: E402
from kikimimi.inference.captioner import load_captioner  # noqa: E402
from kikimimi.methods.captioner import CaptionerMethod  # noqa: E402
from kikimimi.models.caption_decoding import beam_search, generate  # noqa: E402
from kikimimi.models.caption_prompts import prompt_ids  # noqa: E402
from kikimimi.models.causal_lm import load_causal_lm  # noqa: E402
from kikimimi.models.prefix_mapper import MapperConfig, PrefixMapper  # noqa: E402
from kikimimi.training.captioner_run import train_captioner  # noqa: E402

STEPS, SAVE_EVERY = 160, 150
SETTINGS = {"train_lm": True, "steps": STEPS, "batch_size": 32, "lr": 3e-3, "seed": 0, "device": "cpu",
            "progress": False, "save_every": SAVE_EVERY, "keep_checkpoints": 2,
            "mapper": {"prefix_len": 4, "width": 64, "depth": 2, "heads": 4}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioner")
    labels = make_dataset(root / "audio", n_per_class=8, duration_s=1.0, seed=0)
    cap, qa = write_captions(labels)
    texts = [TEMPLATE.format(w=words(c)) for c in SOUND_CLASSES] + [f"A {words(c)}." for c in SOUND_CLASSES]
    lm = write_tiny_llama(root / "lm", texts + [QUESTION])
    return {"root": root, "labels": labels, "captions": cap, "qa": qa, "lm": lm,
            "encoder": write_tiny_encoder(root / "enc")}


@pytest.fixture(scope="module")
def trained(data):
    result = train_captioner(data["encoder"], data["captions"], data["root"] / "run", qa=data["qa"],
                             settings={**SETTINGS, "lm": str(data["lm"])})
    return result


def _held_out(labels: Path) -> list[dict[str, str]]:
    return [r for r in csv.DictReader(open(labels, newline="")) if r["split"] != "train"]


def test_held_out_clips_are_captioned_and_answered_with_their_class_word(data, trained):
    captioner = load_captioner(trained.model_dir)
    rows = _held_out(data["labels"])
    files = [str(data["labels"].parent / r["file_name"]) for r in rows]
    chance = 1 / len(SOUND_CLASSES)
    captions = captioner.caption(files, beam_size=1)
    phrases = {c: words(c) for c in SOUND_CLASSES}
    hits = np.mean([named_class(c, phrases) == r["label"] for r, c in zip(rows, captions, strict=True)])
    assert hits >= 3 * chance, list(zip([r["label"] for r in rows], captions, strict=True))
    assert all(c.startswith("the sound of a") for c in captions)  # the training template, learnt
    answers = captioner.ask(files, QUESTION, beam_size=1)
    ans_hits = np.mean([named_class(a, phrases) == r["label"] for r, a in zip(rows, answers, strict=True)])
    assert ans_hits >= 3 * chance, answers
    assert isinstance(captioner.caption(files[0]), str)  # one path in, one string out


def test_captioner_folder_records_audio_model_lm_and_mapper(data, trained):
    cfg = json.loads((trained.model_dir / "captioner.json").read_text())
    assert cfg["format"] == "kikimimi-captioner"
    assert Path(cfg["audio_model"]) == data["encoder"].resolve()
    assert cfg["lm"] == {"spec": str(data["lm"]), "folder": "lm"}  # trained LM saved beside the mapper
    assert cfg["mapper"]["prefix_len"] == 4 and cfg["audio_embedding_dim"] == 320
    from safetensors.torch import load_file

    keys = load_file(str(trained.model_dir / "model.safetensors"))
    assert keys and all(k.startswith("mapper.") for k in keys)
    assert (trained.model_dir / "lm" / "config.json").is_file()
    bank = json.loads((trained.model_dir / "nn_bank.json").read_text())
    assert len(bank["captions"]) == trained.n_clips == 40
    log = [json.loads(line) for line in (trained.run_dir / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == STEPS and log[-1]["samples_per_s"] > 0


def test_resume_gives_the_same_next_losses(data, trained, tmp_path):
    resume_from_earlier_checkpoint(trained, data, tmp_path, STEPS, SAVE_EVERY)


def test_a_frozen_language_model_is_neither_trained_nor_saved(data):
    lm, _ = load_causal_lm(str(data["lm"]))
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    method = CaptionerMethod(MapperConfig(in_dim=8, lm_dim=64, prefix_len=2, width=16, depth=1, heads=2), lm)
    assert all(k.startswith("mapper.") for k in method.state_dict())
    assert set(method.export_official_state_dict()) == set(method.state_dict())
    opt = torch.optim.AdamW([p for g in method.param_groups(0.0) for p in g["params"]], lr=1e-2)
    mapper_before = {k: v.clone() for k, v in method.mapper.state_dict().items()}
    train_steps(method, opt)
    assert not lm.training
    assert all(torch.equal(v, before[k]) for k, v in lm.state_dict().items())
    assert any(not torch.equal(v, mapper_before[k]) for k, v in method.mapper.state_dict().items())


def test_beam_search_returns_the_top_scoring_sequence():
    eos, a, b = 0, 1, 2
    # greedy takes "a" (0.6) and never recovers; the best sequence is "b <eos>" (0.4 × 0.9 = 0.36)
    table = {(): [0.0, 0.6, 0.4], (a,): [0.33, 0.34, 0.33], (b,): [0.9, 0.05, 0.05]}

    def dist(seq):
        return table.get(tuple(seq), [0.5, 0.25, 0.25])

    def next_logprobs(seqs, state):
        return torch.log(torch.tensor([dist(s) for s in seqs])), state

    def total(seq):  # log-probability of seq followed by eos
        steps = [dist(seq[:i])[t] for i, t in enumerate(seq)] + [dist(seq)[eos]]
        return sum(math.log(p) if p > 0 else -math.inf for p in steps)

    every = [list(s) for n in range(4) for s in itertools.product((a, b), repeat=n)]
    best = max(every, key=total)
    tokens, score = beam_search(next_logprobs, None, eos_id=eos, beam_size=2, max_new_tokens=4)
    assert tokens == best == [b] and score == pytest.approx(total(best))
    greedy, greedy_score = beam_search(next_logprobs, None, eos_id=eos, beam_size=1, max_new_tokens=4)
    assert greedy[0] == a and greedy_score < score
    assert greedy_score == pytest.approx(total(greedy)) if len(greedy) < 4 else True


def test_cached_generation_equals_greedy_recomputation(data):
    lm, tok = load_causal_lm(str(data["lm"]))
    torch.manual_seed(1)
    mapper = PrefixMapper(MapperConfig(in_dim=8, lm_dim=64, prefix_len=3, width=16, depth=1, heads=2)).eval()
    frames = torch.randn(6, 8)
    prompt = prompt_ids(tok, QUESTION)
    tokens, _ = generate(mapper, lm, frames, prompt, eos_id=tok.eos_token_id, beam_size=1, max_new_tokens=8)
    seq: list[int] = []
    with torch.no_grad():
        for _ in range(8):
            ids = torch.tensor([prompt + seq])
            x = torch.cat([mapper(frames[None]), lm.get_input_embeddings()(ids)], dim=1)
            nxt = int(lm(inputs_embeds=x).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            seq.append(nxt)
    assert tokens == seq and len(seq) > 0


def test_caption_and_ask_commands_window_long_files(data, trained, tmp_path, capsys):
    rows = _held_out(data["labels"])
    clip = data["labels"].parent / rows[0]["file_name"]
    wave, rate = sf.read(clip)
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([wave, wave, wave]), rate)  # 3 s from three 1-s clips
    out_csv = tmp_path / "pred.csv"
    assert main(["caption", str(trained.model_dir), str(clip), str(long), "--json", "--window-s", "1",
                 "--beam", "2", "--csv", str(out_csv)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["errors"] == [] and [Path(r["file"]).name for r in got["results"]] == [clip.name, "long.wav"]
    segs = got["results"][1]["segments"]
    assert [s["start_s"] for s in segs] == [0.0, 1.0, 2.0] and segs[-1]["end_s"] == pytest.approx(3.0)
    assert all(s["caption"] == got["results"][0]["caption"] for s in segs)  # same audio in every window
    assert list(csv.DictReader(open(out_csv)))[0]["caption"] == got["results"][0]["caption"]
    assert main(["ask", str(trained.model_dir), str(clip), QUESTION]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(clip)) and line.split("\t")[1].lower().startswith("a ")


def test_train_captioner_command_with_a_tiny_lm(data, tmp_path, capsys):
    assert main(["train-captioner", "--audio-model", str(data["encoder"]), "--captions", str(data["captions"]),
                 "--qa", str(data["qa"]), "--llm", "tiny", "--steps", "3", "--batch-size", "8", "--out",
                 str(tmp_path), "--run-name", "r", "--mapper-width", "32", "--prefix-len", "2", "--no-progress",
                 "--device", "cpu"]) == 0
    model = tmp_path / "r" / "captioner"
    assert json.loads((model / "captioner.json").read_text())["lm"]["folder"] == "lm"
    assert main(["train-captioner", "--audio-model", str(data["encoder"]), "--captions", str(data["captions"]),
                 "--llm", "tiny", "--steps", "3", "--out", str(tmp_path), "--run-name", "r"]) == 2  # no overwrite
    assert "--resume" in capsys.readouterr().err


def test_the_first_runs_caption_stage_trains_captions_and_answers(data, tmp_path):
    """The first run's captioning stage (apps/first_run/caption_stage.py), imported like any module, on a few steps."""
    from kikimimi.apps.first_run.caption_stage import run_caption_stage

    result = run_caption_stage(tmp_path / "caption", data["encoder"], data["labels"], steps=3, max_test_clips=4,
                               log=None)
    assert result["n_test"] == 4 and len(result["examples"]) == 4
    assert all(isinstance(e["caption"], str) for e in result["examples"]) and isinstance(result["answer"], str)
    assert (tmp_path / "caption" / "run" / "captioner" / "captioner.json").is_file()
    assert "## Captioning (audio → words)" in (tmp_path / "caption" / "caption_stage.md").read_text()


def test_the_first_runs_caption_stage_also_captions_with_the_shipped_captioner(data, tmp_path, offline_packaged):
    """The first run scores kikimimi's packaged captioner on the same held-out clips, by the same rule."""
    from kikimimi.apps.first_run.caption_stage import run_caption_stage
    from kikimimi.checkpoints.registry import default_packaged_model

    name = default_packaged_model("captioner")
    assert name == "open-captioner-tiny"
    result = run_caption_stage(tmp_path / "caption", data["encoder"], data["labels"], steps=2, max_test_clips=3,
                               shipped_captioner=name, log=None)
    shipped = result["shipped_examples"]
    assert [e["file"] for e in shipped] == [e["file"] for e in result["examples"]]
    assert all(isinstance(e["caption"], str) and e["caption"] for e in shipped)
    assert result["shipped_captioner"] == name and 0.0 <= result["shipped_class_word_accuracy"] <= 1.0
    assert f"shipped captioner `{name}`" in (tmp_path / "caption" / "caption_stage.md").read_text()
    # without it, nothing is claimed
    plain = run_caption_stage(tmp_path / "plain", data["encoder"], data["labels"], steps=2, max_test_clips=3, log=None)
    assert plain["shipped_class_word_accuracy"] is None and plain["shipped_examples"] == []
