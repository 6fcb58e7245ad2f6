"""benchmarks/open_suite/ship_open_model.py: the facts it records (compute from a resumed run's log, data from the
corpus manifest and the training view) and the card it writes from an evaluation report."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "open_suite"
sys.path.insert(0, str(SUITE))

import ship_open_model as ship  # noqa: E402


def _log(run: Path, rows: list[tuple[int, float, float]]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "log.jsonl").write_text("".join(
        json.dumps({"step": s, "epoch": s / 100, "loss": loss, "lr": 1e-4, "elapsed_s": e}) + "\n"
        for s, loss, e in rows))


def test_compute_facts_sum_the_sessions_of_a_resumed_run_up_to_the_step(tmp_path):
    # session 1 logged to step 300 (its last checkpoint: 250), session 2 resumed at 250 (elapsed restarts at 0)
    _log(tmp_path, [(100, 0.9, 60.0), (200, 0.5, 120.0), (300, 0.4, 180.0),
                    (350, 0.3, 20.0), (400, 0.2, 50.0), (450, 0.1, 80.0)])
    facts = ship.compute_facts(tmp_path, {"batch_size": 8, "steps": 1000}, 400)
    assert facts["train_wall_s"] == 180.0 + 50.0 and facts["sessions"] == 2
    assert facts["step"] == 400 and facts["samples_seen"] == 3200 and facts["planned_steps"] == 1000
    assert facts["loss_at_step"] == 0.2 and facts["loss_curve"][-1] == [400, 0.2]
    early = ship.compute_facts(tmp_path, {"batch_size": 8}, 200)  # an earlier checkpoint: session 2 not counted
    assert early["train_wall_s"] == 120.0 and early["sessions"] == 1


def test_data_facts_count_hours_per_source_and_licence_and_what_the_run_trained_on(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    recs = [("a.wav", "pkg-speech", "CC0-1.0", 3600.0), ("b.wav", "pkg-speech", "CC0-1.0", 1800.0),
            ("c.wav", "pkg-music", "GPL-2+", 7200.0)]
    with open(corpus / "manifest.jsonl", "w") as fh:
        for name, pkg, lic, dur in recs:
            fh.write(json.dumps({"file_name": f"audio/{name}", "package": pkg, "licence": lic, "duration_s": dur,
                                 "licence_family": "copyleft" if "GPL" in lic else "permissive"}) + "\n")
    view = tmp_path / "view"
    view.mkdir()
    (view / "manifest.csv").write_text("file_name,source\nx.npy," + str(corpus / "audio" / "a.wav") + "\n"
                                       + "y.npy," + str(corpus / "audio" / "c.wav") + "\n")
    facts = ship.data_facts({"data": [str(view)]}, corpus)
    assert facts["corpus_hours"] == 3.5 and facts["corpus_segments"] == 3
    assert facts["train_items"] == 2 and facts["train_hours"] == 3.0
    assert facts["licences_train_hours"] == {"GPL-2+": 2.0, "CC0-1.0": 1.0}
    speech = next(s for s in facts["sources"] if s["package"] == "pkg-speech")
    assert speech["hours"] == 1.5 and speech["train_items"] == 1 and speech["family"] == "permissive"
    (view / "manifest.csv").write_text("file_name,source\nz.npy," + str(tmp_path / "elsewhere.wav") + "\n")
    with pytest.raises(SystemExit, match="not in the corpus manifest"):
        ship.data_facts({"data": [str(view)]}, corpus)


def _report() -> dict:
    tasks = {}
    for t, (m, lm, r) in {"language_id": (0.95, 0.93, 0.9), "drum_type": (0.7, 0.62, 0.66)}.items():
        res = {}
        for name, v in (("open-m2d-tiny", m), ("log-mel stats", lm), ("open-m2d-tiny (random init)", r)):
            probes = {p: {"mean": v + d, "std": 0.012} for p, d in (("linear", 0.0), ("logistic", 0.01))}
            res[name] = {**probes["linear"], "probes": probes}
        tasks[t] = {"results": res}
    return {"seeds": [42], "probes": ["linear", "logistic"], "tasks": tasks}


def _evidence() -> dict:
    return {
        "name": "open-m2d-tiny", "description": "d.", "licence": "Apache-2.0", "recipe": "open-m2d-tiny",
        "model": {"architecture": "M2D ViT-tiny", "input": "80 mels", "embedding_dim": 960},
        "weights": {"sha256": "ab" * 32, "size_bytes": 123, "dtype": "float32"},
        "data": {"train_items": 2, "train_hours": 3.0, "corpus_hours": 3.5, "corpus_segments": 3,
                 "licences_train_hours": {"GPL-2+": 2.0}, "leak_check": "ok",
                 "sources": [{"package": "p", "licence": "GPL-2+", "version": "1.0", "hours": 2.0, "segments": 4,
                              "train_items": 1, "train_hours": 2.0}]},
        "compute": {"step": 10, "batch_size": 8, "samples_seen": 80, "epochs": 0.1, "planned_steps": 20,
                    "loss_at_step": 0.5, "train_wall_s": 7200, "sessions": 1, "s_per_step": 1.0, "device": "cpu",
                    "cpu": "x", "threads": "1", "note": "n"},
        "commands": {"train": "kikimimi pretrain --recipe open-m2d-tiny", "ship": "python ship_open_model.py"},
        "limits": ["small"],
    }


def test_margins_and_the_baseline_table_come_from_the_report():
    report = _report()
    table = ship.summary(report, "open-m2d-tiny")
    assert ship.margins(table, "open-m2d-tiny") == {"language_id": {"linear": 2.0, "logistic": 2.0},
                                                     "drum_type": {"linear": 4.0, "logistic": 4.0}}
    text = "\n".join(ship.baseline_lines(_evidence(), report))
    rows = [line for line in text.splitlines() if line.startswith(("| language_id |", "| drum_type |"))]
    assert len(rows) == 4
    assert rows[0] == "| language_id | linear | 95.0 ± 1.2 | 93.0 ± 1.2 | 90.0 ± 1.2 |"
    assert set(re.findall(r"\d+\.\d", rows[-1])) == {"71.0", "63.0", "67.0", "1.2"}
    assert "python ship_open_model.py" in text and "- small" in text
    fallback = "\n".join(ship.fallback_card(_evidence(), report))
    assert fallback.startswith("---\nlibrary_name: kikimimi\nlicense: apache-2.0") and "ab" * 32 in fallback
    assert "| p | GPL-2+ | 2.00 | 1 | 2.00 |" in fallback


def test_training_json_reads_as_card_facts_and_the_card_carries_both_tables(tmp_path):
    import official_layouts as ol
    import torch

    from kikimimi.checkpoints import load_encoder, save_kikimimi

    card = pytest.importorskip("kikimimi.evaluation.model_card", reason="kikimimi card is not in this checkout")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "tasks.json").write_text(json.dumps({t: {"csv": f"{t}.csv"} for t in ship.TASKS}))
    facts = ship.card_facts(_evidence(), suite)
    parsed = card.CardFacts.from_dict(facts, "training.json")  # no unknown key, every type right
    assert parsed.license == "apache-2.0" and parsed.datasets[0].licence == "GPL-2+"
    assert parsed.command == "kikimimi pretrain --recipe open-m2d-tiny\npython ship_open_model.py"
    assert parsed.eval_tasks["drum_type"] == str(suite / "drum_type.csv")
    src = tmp_path / "m2d_vit_base-80x208p16x16" / "weights_enconly.pth"
    src.parent.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=32, depth=1, input_size=(80, 208)), src)
    folder = save_kikimimi(load_encoder(src), tmp_path / "open-m2d-tiny")
    (folder / "evaluation").mkdir()
    report = _report()
    report["models"] = {"open-m2d-tiny": {"family": "m2d", "fingerprint": "f" * 64, "lr": None},
                        "log-mel stats": {"family": "baseline", "fingerprint": "logmel"},
                        "open-m2d-tiny (random init)": {"family": "m2d", "fingerprint": "random:" + "f" * 64}}
    for entry in report["tasks"].values():
        for res in entry["results"].values():
            for r in res["probes"].values():
                r["metric"] = "acc"
    (folder / "evaluation" / "report.json").write_text(json.dumps(report))
    assert ship.write_card(folder, _evidence(), facts, report) == "kikimimi card"
    text = (folder / "README.md").read_text()
    assert "## Compared with baselines" in text and "| language_id | linear | 95.0 ± 1.2 | 93.0 ± 1.2 |" in text
    assert "95.00 ± 1.20" in text  # kikimimi card's own results table, from the same report
