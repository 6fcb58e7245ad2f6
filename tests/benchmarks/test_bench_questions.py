"""benchmarks/bench_questions.py at a tiny size on a generated suite: the report's structure, chance lines that match
the number of choices, and — with a stand-in CLAP that tags every generated clip right — a rule baseline and
grounded rules that answer every question type right, so the question generators and the answer reading agree."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "open_suite"))

import bench_questions as bq  # noqa: E402
import questions as qs  # noqa: E402
from captions import DRUM_WORD, FAMILY_WORD, LANGUAGE_WORD  # noqa: E402

VOCAB = qs.vocabulary()
FREQS = np.geomspace(150, 6000, len(VOCAB.labels))  # one tone per label


class ToneCLAP:
    """A CLAP stand-in: a clip → one-hot of the label whose tone is nearest its spectral peak; a caption → one-hot
    of the (longest) label it contains."""

    sample_rate = 16000
    temperature_scale = 10.0

    def encode_audio(self, waves, sample_rate=None, batch_size=8):
        out = np.zeros((len(waves), len(FREQS)), np.float32)
        for i, w in enumerate(waves):
            spec = np.abs(np.fft.rfft(np.asarray(w, np.float64)))
            peak = np.fft.rfftfreq(len(w), 1 / self.sample_rate)[int(spec.argmax())]
            out[i, int(np.abs(np.log(FREQS) - np.log(max(peak, 1.0))).argmin())] = 1.0
        return out

    def encode_text(self, texts):
        out = np.zeros((len(texts), len(FREQS)), np.float32)
        for i, t in enumerate(texts):
            hits = [label for label in VOCAB.labels if label in t]
            out[i, VOCAB.labels.index(max(hits, key=len))] = 1.0
        return out


def write_suite(root: Path) -> Path:
    """Three task CSVs with held-out rows (two clips a class) and their tones (1 s)."""
    sr = 16000
    t = np.arange(sr) / sr
    for task, words, fmt in (("language_id", LANGUAGE_WORD, "{} speech"), ("drum_type", DRUM_WORD, "{}"),
                             ("instrument_family", FAMILY_WORD, "{}")):
        rows = []
        for label, word in words.items():
            freq = FREQS[VOCAB.labels.index(fmt.format(word))]
            for k in range(2):
                name = f"audio/{task}/{label}-{k}.wav"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / name, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
                rows.append({"file_name": name, "label": label, "split": "test"})
            rows.append({"file_name": f"audio/{task}/{label}-0.wav", "label": label, "split": "train"})
        with (root / f"{task}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, ["file_name", "label", "split"])
            w.writeheader()
            w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = write_suite(tmp_path_factory.mktemp("suite"))
    out = root / "report.json"
    code = bq.main(["--suite", str(root), "--n-per-type", "2", "--long-minutes", "0.2", "--lm", "none",
                    "--json", str(out), "--threads", "1"], clap=ToneCLAP(), captioner_note="no captioner here")
    assert code == 0
    return json.loads(out.read_text())


def test_the_report_has_every_row_type_and_chance_line(report):
    assert list(report["n_questions"]) == list(qs.QTYPES) and set(report["n_questions"].values()) == {2}
    n_choices = {"language": 5, "instrument": 14, "drum": 6, "speech": 2, "count": 5, "first_time": 4}
    for q in report["questions"]:
        assert len(q["choices"]) == n_choices[q["qtype"]] and q["answer"] in q["choices"]
    for qtype, n in n_choices.items():
        assert report["chance"][qtype] == pytest.approx(1 / n, abs=1e-4)
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == list(bq.ROWS)
    assert not rows["grounded LM, free answer"]["available"] and "--lm none" in rows["grounded LM, free answer"]["note"]
    assert not rows["captioner ask"]["available"] and rows["captioner ask"]["note"] == "no captioner here"
    assert report["cpu"] and report["vector_flags"] and report["threads"] == 1
    assert report["models"] == {"clap": "ToneCLAP", "lm": None, "captioner": "no captioner here"}
    assert {"clip_10s", "long"} <= set(report["timing"])
    assert report["timing"]["clip_10s"]["duration_s"] == 10.0 and report["timing"]["long"]["duration_s"] == 12.0
    assert report["timing"]["long"]["peak_rss_mb_after"] >= report["timing"]["long"]["peak_rss_mb_before"] > 0


def test_answers_are_read_back_right_when_the_tags_are_right(report):
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["rule baseline (top tag)"]["accuracy"] == {t: 1.0 for t in qs.QTYPES}
    for name in ("grounded rules, free answer", "grounded rules, --choices"):
        acc = rows[name]["accuracy"]
        # "is there speech?" about a drum: the grounded rules say yes when a speech label is merely among the top
        # tags (here a tie at probability ~0), so only the "yes" half is sure
        assert {t: a for t, a in acc.items() if t != "speech"} == {t: 1.0 for t in qs.QTYPES if t != "speech"}, name
        assert acc["speech"] >= 0.5


def test_free_answers_are_read_into_choices():
    q = qs.Question("count", "x.wav", "How many times is the cymbal hit?", ["1", "2", "3", "4", "5"], "3")
    assert qs.read_answer(q, "Cymbal: 3 times (as the top tag): 0:03–0:06, 0:09–0:12, 1:00–1:03.", 3.0) == ("3", True)
    assert qs.read_answer(q, "It is hit twice, at 0:03 and 0:09 (-20 dBFS).", 3.0) == ("2", False)
    t = qs.Question("first_time", "x.wav", "When is the cymbal first heard?", ["0:03", "0:09", "0:15", "0:21"],
                    "0:09", truth_s=9.0)
    assert qs.read_answer(t, "The cymbal is first heard at 0:11.", 3.0) == ("0:09", True)  # within one segment
    assert qs.read_answer(t, "I cannot tell from the evidence.", 3.0) == (None, False)
    f = qs.Question("instrument", "x.wav", "?", list(FAMILY_WORD.values()), "string ensemble")
    assert qs.read_answer(f, "A string ensemble, then a piano.", 3.0) == ("string ensemble", True)


def test_the_language_model_rows_run_with_a_tiny_model(tmp_path):
    from caption_fakes import write_tiny_llama

    from kikimimi.models.causal_lm import load_causal_lm

    folder = write_tiny_llama(tmp_path / "lm", ["yes no 1 2 3 4 5 0:03 English piano cymbal"])
    cfg = json.loads((folder / "config.json").read_text())
    cfg["max_position_embeddings"] = 4096
    (folder / "config.json").write_text(json.dumps(cfg))
    lm, tok = load_causal_lm(str(folder))
    root = write_suite(tmp_path / "suite")
    out = tmp_path / "r.json"
    assert bq.main(["--suite", str(root), "--n-per-type", "1", "--long-minutes", "0", "--lm", "tiny",
                    "--types", "speech", "count", "--max-new-tokens", "4", "--json", str(out), "--threads", "1"],
                   clap=ToneCLAP(), lm=lm, tokenizer=tok) == 0
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    for name in ("grounded LM, free answer", "grounded LM, --choices"):
        assert rows[name]["available"] and set(rows[name]["accuracy"]) == {"speech", "count"}
        assert all(0.0 <= a <= 1.0 for a in rows[name]["accuracy"].values())
    for q in report["questions"]:
        free = q["answers"]["grounded LM, free answer"]
        assert free["answered_by"].startswith(("lm:tiny", "rules")) and "reply" in free
        assert q["answers"]["grounded LM, --choices"]["said"] in q["choices"]
    assert report["models"]["lm"] == "tiny" and report["timing"] == {}
