"""A Captions section in evaluation reports: one row per system (captioner, nearest neighbour) with the scores
of :mod:`kikimimi.evaluation.caption_metrics` — the same table `kikimimi eval-captions` prints — in report.md
and under ``captions`` in report.json; `kikimimi eval --captions PRED REF --nn-captions NN|CAPTIONER_DIR`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pycocoevalcap")

from caption_fakes import PRED, REFS  # noqa: E402

from kikimimi.audio.synthetic import make_dataset  # noqa: E402
from kikimimi.cli import main  # noqa: E402
from kikimimi.evaluation.baselines import LogMelStats  # noqa: E402
from kikimimi.evaluation.caption_metrics import (  # noqa: E402
    caption_scores,
    evaluate_caption_files,
    metrics_table,
    spice_status,
)
from kikimimi.evaluation.report import caption_report_rows  # noqa: E402
from kikimimi.evaluation.run import ModelSpec, run_evaluation  # noqa: E402
from kikimimi.evaluation.tasks import Task  # noqa: E402

NN = {"dog": "a small dog barks", "rain": "a car drives past", "car": "traffic noise", "bird": "heavy rain"}
SHOWN = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr-D")


def _task(tmp_path) -> Task:
    return Task.from_csv(make_dataset(tmp_path / "audio", n_per_class=3, duration_s=0.3, classes=("tone", "clicks")))


def _logmel_spec() -> ModelSpec:
    return ModelSpec("log-mel stats", lambda task: LogMelStats("m2d-16k"), 16000, None, "logmel-m2d-16k")


def _row(md: str, system: str) -> dict[str, str]:
    """The cells of a system's row of the Captions table, by metric name."""
    section = md[md.index("## Captions"):]
    header = next(line for line in section.splitlines() if line.startswith("| system |"))
    row = next(line for line in section.splitlines() if line.startswith(f"| {system} |"))
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    return dict(zip(names, [c.strip() for c in row.strip("|").split("|")][1:], strict=True))


def _check(md: str, report: dict, system: str, scores) -> None:
    cells = _row(md, system)
    for name, value in scores.scores.items():
        assert cells[name] == f"{value:.3f}", (system, name)
    assert report["captions"][system]["scores"] == pytest.approx(scores.scores, abs=1e-12)
    assert report["captions"][system]["n"] == scores.n == 4


def _write_csvs(tmp_path):
    pred, ref, nn = tmp_path / "pred.csv", tmp_path / "ref.csv", tmp_path / "nn.csv"
    pred.write_text("file_name,caption\n" + "".join(f"clips/{k}.wav,{v}\n" for k, v in PRED.items()))
    nn.write_text("file_name,caption\n" + "".join(f"clips/{k}.wav,{v}\n" for k, v in NN.items()))
    ref.write_text("file_name,caption\n" + "".join(f"{k}.wav,{c}\n" for k, v in REFS.items() for c in v))
    return pred, ref, nn


def test_report_captions_table_has_each_systems_own_scores(tmp_path):
    ours = caption_scores(PRED, REFS, tokenizer="simple", meteor=False)
    nn = caption_scores(NN, REFS, tokenizer="simple", meteor=False)
    rows = {"captioner": ours, "nearest neighbour": nn}
    run_evaluation([_logmel_spec()], [_task(tmp_path)], tmp_path / "r", seeds=(42,), plots=False,
                   probes=("logistic",), captions=rows)
    md = (tmp_path / "r" / "report.md").read_text()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    for system, scores in rows.items():
        _check(md, report, system, scores)
    assert metrics_table(rows) in md  # one table writer: the one eval-captions prints
    assert "\n".join(caption_report_rows(rows)) in md
    assert _row(md, "captioner")["BLEU_1"] != _row(md, "nearest neighbour")["BLEU_1"]
    assert report["captions"]["captioner"]["unavailable"]["METEOR"] == "left out (meteor=False)"
    ok, why = spice_status()
    if not ok:  # SPICE named unavailable (its jars are never downloaded), with the reason
        assert "SPICE" not in _row(md, "captioner") and f"SPICE, SPIDEr: not computed — {why}." in md
    # without captions= the report has no such section
    run_evaluation([_logmel_spec()], [_task(tmp_path)], tmp_path / "plain", seeds=(42,), plots=False,
                   probes=("logistic",))
    assert "## Captions" not in (tmp_path / "plain" / "report.md").read_text()
    assert "captions" not in json.loads((tmp_path / "plain" / "report.json").read_text())


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_report_captions_table_shows_meteor(tmp_path):
    ours = caption_scores(PRED, REFS)  # PTB tokenizer and METEOR 1.5 (Java)
    assert ours.tokenizer == "ptb" and 0 < ours.scores["METEOR"] < 1
    run_evaluation([_logmel_spec()], [_task(tmp_path)], tmp_path / "r", seeds=(42,), plots=False,
                   probes=("logistic",), captions={"captioner": ours})
    md = (tmp_path / "r" / "report.md").read_text()
    _check(md, json.loads((tmp_path / "r" / "report.json").read_text()), "captioner", ours)
    assert list(_row(md, "captioner"))[: len(SHOWN)] == list(SHOWN)
    assert "ptb tokenizer" in md


def test_eval_command_captions_options(tmp_path, capsys):
    pred, ref, nn = _write_csvs(tmp_path)
    labels = make_dataset(tmp_path / "audio", n_per_class=3, duration_s=0.3, classes=("tone", "clicks"))
    out = tmp_path / "report"
    assert main(["eval", "logmel", "--task", str(labels), "-o", str(out), "--seeds", "1", "--no-plots", "--probe",
                 "logistic", "--captions", str(pred), str(ref), "--nn-captions", str(nn), "--no-meteor"]) == 0
    md, report = (out / "report.md").read_text(), json.loads((out / "report.json").read_text())
    direct = {"captioner": evaluate_caption_files(pred, ref, meteor=False),
              "nearest neighbour": evaluate_caption_files(nn, ref, meteor=False)}
    for system, scores in direct.items():
        _check(md, report, system, scores)
    capsys.readouterr()
    assert main(["eval-captions", str(pred), str(ref), "--baseline", str(nn), "--no-meteor"]) == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    section = md[md.index("## Captions"):].splitlines()
    assert [line.replace("| baseline |", "| nearest neighbour |").replace("| predictions |", "| captioner |")
            for line in table] == [line for line in section if line.startswith("| ")]
    # bad input: a one-line error before any model runs, no report
    assert main(["eval", "logmel", "--task", str(labels), "-o", str(tmp_path / "bad"), "--captions",
                 str(tmp_path / "none.csv"), str(ref)]) == 2
    assert "--captions" in capsys.readouterr().err and not (tmp_path / "bad" / "report.md").exists()
    assert main(["eval", "logmel", "--task", str(labels), "-o", str(tmp_path / "bad"), "--nn-captions",
                 str(nn)]) == 2


def test_nn_captions_from_a_captioner_folder(tmp_path):
    pytest.importorskip("safetensors")
    import numpy as np
    import torch
    from caption_fakes import write_tiny_encoder

    from kikimimi.inference.captioner import load_audio_model, nearest_neighbour_baseline, save_captioner
    from kikimimi.models.prefix_mapper import MapperConfig, PrefixMapper

    labels = make_dataset(tmp_path / "clips", n_per_class=1, duration_s=0.5, classes=("tone", "clicks", "chirp"))
    base = labels.parent
    names = sorted(str(p.relative_to(base)) for p in base.rglob("*.wav"))
    caps = {n: f"the sound of a {Path(n).stem.split('_')[0]}" for n in names}
    encoder_path = write_tiny_encoder(tmp_path / "enc")
    encoder = load_audio_model(encoder_path)
    frames, _ = encoder.embed_frames([str(base / n) for n in names], stack=False)
    bank = torch.stack([encoder.encoder.pool(torch.as_tensor(np.asarray(f))) for f in frames]).numpy()
    mapper = PrefixMapper(MapperConfig(in_dim=encoder.embedding_dim, lm_dim=8, width=16, depth=1, heads=2))
    folder = save_captioner(tmp_path / "captioner", mapper=mapper, lm=torch.nn.Identity(), tokenizer=None,
                            lm_trained=False, lm_spec="unused", audio_model=encoder_path,
                            audio_embedding_dim=encoder.embedding_dim, nn_bank=(bank, names, [caps[n] for n in names]))
    # each training clip's nearest neighbour is itself; no language model is loaded for this
    assert nearest_neighbour_baseline(folder, [str(base / n) for n in names]) == [caps[n] for n in names]
    pred = base / "pred.csv"  # names relative to the CSV's folder
    pred.write_text("file_name,caption\n" + "".join(f"{n},a sound\n" for n in names))
    own = tmp_path / "own.csv"
    own.write_text("file_name,caption\n" + "".join(f"{n},{caps[n]}\n" for n in names))
    ref = tmp_path / "ref.csv"
    ref.write_text("file_name,caption\n" + "".join(f"{n},{caps[n]}\n{n},a recording of it\n" for n in names))
    out = tmp_path / "report"
    assert main(["eval", "logmel", "--task", str(labels), "-o", str(out), "--seeds", "1", "--no-plots", "--probe",
                 "logistic", "--captions", str(pred), str(ref), "--nn-captions", str(folder), "--no-meteor"]) == 0
    got = json.loads((out / "report.json").read_text())["captions"]
    assert got["nearest neighbour"]["scores"] == pytest.approx(
        evaluate_caption_files(own, ref, meteor=False).scores, abs=1e-12)
    assert got["nearest neighbour"]["scores"]["CIDEr-D"] > got["captioner"]["scores"]["CIDEr-D"]
