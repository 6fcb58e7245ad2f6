"""``kikimimi.evaluation.model_card``: the numbers a card reads from a report (probe, zero-shot, fine-tune rows), the
reproduce commands and the facts file's checks."""

from __future__ import annotations

import json

import pytest

from kikimimi.evaluation.model_card import CardError, CardFacts, read_report_scores, reproduce_command


def _report(tmp_path, **extra):
    """A report.json with the structure `kikimimi eval` writes (evaluation/report.py), two tasks, a CLAP model."""
    probe = {"probe": "linear", "metric": "mAP", "mean": 0.4321, "std": 0.012, "seed_scores": [0.44, 0.42]}
    report = {
        "kikimimi_version": "0.1.0", "seeds": [42, 43], "hidden": [], "probes": ["linear"],
        "models": {"log-mel stats": {"fingerprint": "logmel-m2d-16k", "family": "baseline", "lr": None},
                   "my-clap": {"fingerprint": "ab" * 32, "family": "m2d-clap", "lr": 0.001},
                   "my-clap (random init)": {"fingerprint": "random:" + "ab" * 32, "family": "m2d-clap", "lr": None}},
        "tasks": {"tags": {"results": {"my-clap": {**probe, "probes": {"linear": probe}},
                                       "log-mel stats": {**probe, "mean": 0.1, "probes": {"linear": {**probe,
                                                                                                    "mean": 0.1}}}}}},
        "zero_shot": {"tags": {"my-clap": {"metric": "mAP", "score": 0.2468, "n_test": 9}}},
        "finetune": [{"model": "my-clap", "task": "tags", "metric": "mAP", "mean": 0.5, "std": 0.0, "source": "ft"}],
        **extra,
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return path


def test_every_kind_of_number_of_the_trained_model_is_read(tmp_path):
    scores = read_report_scores(_report(tmp_path))
    assert [(s.probe, s.value) for s in scores] == [("linear", 0.4321), ("zero-shot", 0.2468), ("fine-tune", 0.5)]
    assert {s.model for s in scores} == {"my-clap"} and scores[0].std == 0.012 and scores[1].std is None
    command = reproduce_command(scores[0], "hf://kiki/clap", CardFacts(eval_tasks={"tags": "t.csv"}))
    assert command == ("kikimimi eval hf://kiki/clap --task t.csv -o eval-tags --probe linear --seeds 2 --lr 0.001 "
                       "--metric mAP")


def test_a_report_with_two_trained_models_needs_a_choice(tmp_path):
    path = _report(tmp_path)
    report = json.loads(path.read_text())
    report["models"]["other"] = {"fingerprint": "cd" * 32, "family": "m2d", "lr": None}
    path.write_text(json.dumps(report))
    with pytest.raises(CardError, match="2 trained models in the report .*--report-model"):
        read_report_scores(path)
    assert read_report_scores(path, "my-clap")[0].value == 0.4321


def test_facts_are_checked(tmp_path):
    with pytest.raises(CardError, match="'f.json': compute must be a dict"):
        CardFacts.from_dict({"compute": "1 GPU"}, "f.json")
    with pytest.raises(CardError, match=r"datasets\[0\] has unknown key\(s\) size"):
        CardFacts.from_dict({"datasets": [{"name": "a", "size": 3}]}, "f.json")
    facts = CardFacts.from_dict({"datasets": ["plain name"], "tags": ["x"]})
    assert facts.datasets[0].name == "plain name" and facts.tags == ["x"]
