"""Caption metrics equal the reference implementation (pycocoevalcap) on a hand-made example; the
nearest-neighbour baseline; `kikimimi eval-captions`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("pycocoevalcap")

from caption_fakes import PRED, REFS  # noqa: E402
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

from kikimimi.cli import main  # noqa: E402
from kikimimi.evaluation.caption_metrics import (  # noqa: E402
    caption_scores,
    metrics_table,
    named_class,
    nearest_neighbour_captions,
    spice_status,
)


def _reference(gts, res) -> dict[str, float]:
    """Direct calls of the pycocoevalcap scorers on already tokenised captions."""
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU_{i + 1}": b for i, b in enumerate(bleu)}
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr-D"] = Cider().compute_score(gts, res)[0]
    return out


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs Java")
def test_scores_equal_pycocoevalcap_with_the_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": c}] for k, c in PRED.items()})
    ours = caption_scores(PRED, REFS, tokenizer="ptb", meteor=False)
    ref = _reference(gts, res)
    assert ours.tokenizer == "ptb" and ours.n == 4
    assert set(ref) <= set(ours.scores)
    for name, value in ref.items():
        assert ours.scores[name] == pytest.approx(value, abs=1e-12), name
    assert 0 < ours.scores["BLEU_1"] < 1 and ours.scores["CIDEr-D"] > 0
    assert "METEOR" in ours.unavailable and "METEOR" not in ours.scores


def test_simple_tokenizer_scores_equal_pycocoevalcap_on_the_same_tokens():
    ours = caption_scores(PRED, REFS, tokenizer="simple", meteor=False)
    gts = {"dog": ["a dog is barking", "the dog barks loudly at night", "a small dog barks"],
           "rain": ["rain is falling on a tin roof", "heavy rain on the roof"],
           "car": ["a car drives past", "a vehicle passes by on a road", "traffic noise"],
           "bird": ["birds are singing in the trees", "birds chirp and sing"]}
    res = {"dog": ["a dog barks loudly"], "rain": ["rain falls on a roof"], "car": ["a car passes by"],
           "bird": ["birds sing"]}
    for name, value in _reference(gts, res).items():
        assert ours.scores[name] == pytest.approx(value, abs=1e-12), name
    perfect = caption_scores({k: v[0] for k, v in REFS.items()}, REFS, tokenizer="simple", meteor=False)
    assert perfect.scores["BLEU_1"] > ours.scores["BLEU_1"] and perfect.scores["CIDEr-D"] > ours.scores["CIDEr-D"]


def test_spice_is_reported_unavailable_without_its_offline_jars():
    ok, why = spice_status()
    s = caption_scores(PRED, REFS, tokenizer="simple", meteor=False)
    if ok:
        assert "SPICE" in s.scores
        assert s.scores["SPIDEr"] == pytest.approx((s.scores["CIDEr-D"] + s.scores["SPICE"]) / 2)
    else:
        assert s.unavailable["SPICE"] == s.unavailable["SPIDEr"] == why and "SPICE" not in s.scores
    table = metrics_table({"model": s})
    assert table.splitlines()[0].startswith("| system | BLEU_1") and "| model |" in table
    with pytest.raises(ValueError, match="no reference"):
        caption_scores({"other": "x"}, REFS, tokenizer="simple", meteor=False)


def test_named_class_takes_the_longest_whole_word_class_name():
    phrases = {"tone": "tone", "am_tone": "am tone", "hihat": "hi-hat", "string": "string", "ens": "string ensemble"}
    assert named_class("An AM tone.", phrases) == "am_tone"
    assert named_class("someone recorded a tone", phrases) == "tone"
    assert named_class("a hi-hat sound", phrases) == "hihat" and named_class("a string ensemble", phrases) == "ens"
    assert named_class("monotone hum", phrases) is None  # whole words only


def test_nearest_neighbour_baseline_takes_the_closest_training_caption():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])
    caps = ["east", "north", "west"]
    query = np.array([[10.0, 1.0], [0.1, 3.0], [-2.0, 0.0]])  # cosine, not distance: scale does not matter
    assert nearest_neighbour_captions(train, caps, query) == ["east", "north", "west"]
    with pytest.raises(ValueError):
        nearest_neighbour_captions(train, caps[:2], query)


def test_eval_captions_command(tmp_path, capsys):
    pred, ref, base = tmp_path / "pred.csv", tmp_path / "ref.csv", tmp_path / "base.csv"
    pred.write_text("file_name,caption\n" + "".join(f"{k}.wav,{v}\n" for k, v in PRED.items()))
    ref.write_text("file_name,caption\n" + "".join(f"sub/{k}.wav,{c}\n" for k, v in REFS.items() for c in v))
    base.write_text("file_name,caption\n" + "".join(f"{k}.wav,a sound\n" for k in PRED))
    assert main(["eval-captions", str(pred), str(ref), "--baseline", str(base), "--no-meteor", "--tokenizer",
                 "simple", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    direct = caption_scores({f"sub/{k}.wav": v for k, v in PRED.items()},
                            {f"sub/{k}.wav": v for k, v in REFS.items()}, tokenizer="simple", meteor=False)
    assert got["predictions"]["scores"] == pytest.approx(direct.scores)
    assert got["baseline"]["scores"]["CIDEr-D"] < got["predictions"]["scores"]["CIDEr-D"]


def test_distinctive_phrases_drop_the_words_classes_share():
    from kikimimi.evaluation.caption_metrics import distinctive_phrases

    phrases = {"English_speech": "English speech", "French_speech": "French speech", "kick_drum": "kick drum",
               "tom_drum": "tom drum", "hi-hat": "hi-hat", "hand_percussion": "hand percussion", "drum": "drum"}
    own = distinctive_phrases(phrases)
    assert own == {"English_speech": "english", "French_speech": "french", "kick_drum": "kick", "tom_drum": "tom",
                   "hi-hat": "hi-hat", "hand_percussion": "hand percussion", "drum": "drum"}
    assert named_class("an automated telephone prompt in french", phrases) is None
    assert named_class("an automated telephone prompt in french", own) == "French_speech"
