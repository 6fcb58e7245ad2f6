"""The first run uses kikimimi's packaged models (issue 27): the packaged ``open-m2d-tiny`` continued by a short
further pre-training on the pool (it starts from the shipped tensors, not from a random init), and the packaged
``open-clap-tiny`` run as shipped beside the from-scratch CLAP, in the report and in ``summary.json``'s figures.

Uses the packaged weights of this checkout (skipped where an installation has none), tiny generated sounds and a
bag-of-words text encoder: the tests check what the stages start from and write, not their accuracy."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import torch
from clap_fakes import DEMO_CLASSES, HashTextEncoder, tiny_demo_set
from safetensors.torch import load_file

from kikimimi.apps.first_run import clap_stage, further_stage
from kikimimi.apps.first_run.figures import run_figures
from kikimimi.apps.first_run.report_html import write_report_html
from kikimimi.checkpoints import load_encoder
from kikimimi.checkpoints.registry import default_packaged_model
from kikimimi.models.vit import AudioViT

CLASSES = DEMO_CLASSES


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(demo folder, labels.csv, m2d-16k cache)``: 5 one-second clips per class (3 train / 1 valid / 1 test)."""
    return tiny_demo_set(tmp_path_factory.mktemp("demo"))


def _packaged(kind: str) -> str:
    name = default_packaged_model(kind)
    if name is None:
        pytest.skip(f"this installation has no packaged {kind} model")
    return name


def test_further_pretraining_starts_from_the_shipped_encoder(tiny_set) -> None:
    name = _packaged("encoder")
    out, _labels, cache = tiny_set
    lines: list[str] = []
    run = further_stage.further_pretrain(out, cache, 1, extra={"batch_size": 4, "min_epoch_size": 8},
                                         log=lines.append)
    assert run == out / "pretrain" / further_stage.FURTHER_RUN_NAME
    config = json.loads((run / "config.json").read_text())
    shipped = load_encoder(name)
    assert config["recipe"] == further_stage.FURTHER_RECIPE and config["steps"] == 1
    assert config["init_from"].endswith(f"{name}-init.pth") and config["decisions"]["init_from_ignored_keys"] == 0
    assert config["norm_stats"] == pytest.approx(shipped.norm_stats.to_list())  # the shipped statistics, kept
    assert config["decisions"]["ema_taus_rule"].startswith("auto: --init-from")
    assert not (out / "pretrain" / f"{name}-init.pth").exists()  # removed once the encoder is exported
    assert any("as online network and target, a fresh predictor" in line for line in lines)
    # one step of a small lr away from the shipped tensors; a random init is far away
    ours = load_encoder(run / "kikimimi").encoder.state_dict()
    ref = shipped.encoder.state_dict()
    torch.manual_seed(0)
    fresh = AudioViT(shipped.encoder.config).state_dict()  # the same network at a random initialisation
    step = max((ours[k] - ref[k]).abs().max().item() for k in ref)
    assert 0 < step < 0.01
    key = "blocks.0.attn.qkv.weight"
    assert (fresh[key] - ref[key]).abs().mean() > 20 * (ours[key] - ref[key]).abs().mean()
    # the exported folder is a kikimimi folder like any other (readable without the recipe)
    assert set(load_file(run / "kikimimi" / "model.safetensors")) >= {f"encoder.{key}"}
    # a second call reuses the finished run
    again: list[str] = []
    assert further_stage.further_pretrain(out, cache, 1, log=again.append) == run
    assert any("already trained" in line for line in again)


def test_shipped_clap_rows_beside_the_from_scratch_clap(tiny_set) -> None:
    name = _packaged("clap")
    out, labels_csv, _cache = tiny_set
    report = out / "report" / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("# Demo report\n")
    queries = (("a noise burst", "noise_burst"), ("clicks", "clicks"))
    res = clap_stage.shipped_clap(out, labels_csv, duration_s=1.0, queries=queries, report_md=report,
                                  text_encoder=HashTextEncoder(384), log=lambda _line: None)
    own = out / "clap" / clap_stage.SHIPPED_DIR
    zs = json.loads((own / "zeroshot.json").read_text())
    assert zs["model"] == name and zs["shipped"] is True and zs["n_test"] == len(CLASSES)
    assert zs["prompt"] == clap_stage.CLAP_PROMPT and zs["classes"] == sorted(CLASSES)
    search = json.loads((own / "search.json").read_text())["results"]
    assert [r["query"] for r in search] == [q for q, _ in queries] and all(len(r["hits"]) == 3 for r in search)
    matches = [h["match"] for r in search for h in r["hits"]]
    assert res["search_precision"] == pytest.approx(sum(matches) / len(matches))
    assert clap_stage.search_precision([]) is None
    text = report.read_text()
    assert text.count(f"## Audio–language: {name} as shipped") == 1 and "no training here" in text
    # the from-scratch CLAP's files (as audio_language writes them) next to them: the page shows both, labelled
    scratch = dict(zs, model="pretrain/m2d_clap/kikimimi", shipped=False, accuracy=0.25, steps=100, train_clips=9,
                   caption_templates=list(clap_stage.CLAP_TEMPLATES), text_encoder="minilm")
    (out / "clap" / "zeroshot.json").write_text(json.dumps(scratch))
    (out / "clap" / "search.json").write_text(json.dumps({"results": search}))
    summary = {"data": {"kind": "generated", "tasks": []}, "clap_csv_dir": str(labels_csv.parent),
               "clap": {"zeroshot_accuracy": 0.25, "chance": 1 / 3, "search_precision": 0.5},
               "shipped_clap": {"zeroshot_accuracy": zs["accuracy"], "search_precision": res["search_precision"]}}
    page = write_report_html(out / "report" / "report.html", out, summary).read_text()
    assert "trained from scratch vs shipped" in page
    assert "tiny M2D-CLAP trained from scratch here (minutes-long)" in page
    assert html.escape(f"{name}, kikimimi's packaged CLAP, as shipped") in page
    assert f"Audio–language: {name} as shipped" in page
    assert f"<td class=num>{100 * zs['accuracy']:.1f}</td>" in page and "<td class=num>25.0</td>" in page
    figures = run_figures(out, summary)
    assert figures["shipped_zeroshot_accuracy"] == zs["accuracy"] and figures["search_precision"] == 0.5
    assert figures["shipped_search_precision"] == res["search_precision"]
