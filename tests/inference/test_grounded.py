"""Issue 30, grounded answers: :mod:`kikimimi.inference.grounded` answers from the evidence alone, citing the
segment times, and says "I cannot tell" instead of inventing; a language model reads the evidence as text."""

from __future__ import annotations

import json

import pytest

from kikimimi.inference.evidence import Evidence, Segment, TagScore, summarise_tags
from kikimimi.inference.grounded import (
    CANNOT_TELL,
    choice_logprobs,
    choose,
    evidence_text,
    format_time,
    label_facts,
    lm_answer,
    match_labels,
    parse_times,
    rule_answer,
    stated_count,
)

LABELS = ["a dog barking", "a man speaking", "a woman speaking", "rain", "church bells", "silence"]


def make_evidence(plan: list[str | None], segment_s: float = 10.0) -> Evidence:
    """Evidence with one segment of ``segment_s`` per entry: the label on top (second: "rain"), None = silent."""
    segs = []
    for i, top in enumerate(plan):
        tags = [] if top is None else [TagScore(top, 0.7, 0.3), TagScore("rain" if top != "rain" else "silence",
                                                                           0.2, 0.1)]
        segs.append(Segment(i, i * segment_s, (i + 1) * segment_s, -100.0 if top is None else -20.0 - i,
                            -90.0 if top is None else -6.0, top is None, tags))
    return Evidence("walk.wav", len(plan) * segment_s, 16000, LABELS, {"segment_s": segment_s,
                                                                       "silence_dbfs": -60.0},
                    {"clap": "fake"}, segs, summarise_tags(segs), 10.0 * plan.count(None), -21.0)


@pytest.fixture
def walk() -> Evidence:
    # 0:00–0:20 a man speaking, 0:20–0:30 silent, 0:30–0:50 a dog barking, 0:50–1:00 man, 1:00–1:10 dog
    return make_evidence(["a man speaking", "a man speaking", None, "a dog barking", "a dog barking",
                          "a man speaking", "a dog barking"])


def test_times_are_written_and_read_back():
    assert [format_time(t) for t in (0, 7, 75.5, 3725)] == ["0:00", "0:07", "1:15.5", "1:02:05"]
    assert parse_times("what is at 1:30, at 12 s and after 2 minutes? and 1:02:05") == [90.0, 12.0, 120.0, 3725.0]
    assert parse_times("a 440 Hz tone") == []


def test_a_question_is_matched_to_the_labels_it_names():
    assert match_labels("When does the dog bark?", LABELS) == ["a dog barking"]
    assert match_labels("is there a man speaking", LABELS) == ["a man speaking"]
    assert match_labels("is anyone speaking?", LABELS) == ["a man speaking", "a woman speaking"]
    assert match_labels("when does the cymbal crash?", LABELS) == []


def test_when_first_last_and_how_many_times_cite_the_segments(walk):
    a = rule_answer(walk, "When does the dog bark?")
    assert a.known and a.labels == ["a dog barking"]
    assert [(c.start_s, c.end_s) for c in a.citations] == [(30.0, 50.0), (60.0, 70.0)]
    assert "0:30–0:50" in a.text and "1:00–1:10" in a.text
    first = rule_answer(walk, "When is the first dog barking?")
    assert [(c.start_s, c.end_s) for c in first.citations] == [(30.0, 50.0)] and "first" in first.text
    last = rule_answer(walk, "when does the man speak for the last time")
    assert [(c.start_s, c.end_s) for c in last.citations] == [(50.0, 60.0)]
    count = rule_answer(walk, "How many times does a dog bark?")
    assert "2 times" in count.text
    assert rule_answer(walk, "Is there a dog?").text.startswith("Yes")


def test_what_happens_at_a_time_and_silence(walk):
    at = rule_answer(walk, "What happens at 0:35?")
    assert "a dog barking" in at.text and [(c.start_s, c.end_s) for c in at.citations] == [(30.0, 40.0)]
    silent = rule_answer(walk, "Is it silent at 25 s?")
    assert silent.text.startswith("Yes, it is silent") and silent.citations[0].start_s == 20.0
    assert rule_answer(walk, "is it silent at 0:05").text.startswith("No")
    quiet = rule_answer(walk, "Where is it silent?")
    assert [(c.start_s, c.end_s) for c in quiet.citations] == [(20.0, 30.0)]
    assert rule_answer(walk, "is the dog barking at 0:05?").text.startswith("No")
    past = rule_answer(walk, "what happens at 5:00?")
    assert not past.known and past.text.startswith(CANNOT_TELL)
    assert "loudest" in rule_answer(walk, "Which part is the loudest?").text


def test_what_sounds_are_in_it(walk):
    a = rule_answer(walk, "What sounds are in it?")
    assert a.known and a.labels[:2] == ["a man speaking", "a dog barking"]
    assert "silent for 0:10" in a.text


def test_cannot_tell_when_the_evidence_lacks_the_asked_for_thing(walk):
    for q in ("When does the cymbal crash?", "Is there a trumpet?", "What time does the cymbal hit?",
              "Which language is spoken?"):
        a = rule_answer(walk, q)
        assert not a.known and a.text.startswith(CANNOT_TELL) and a.citations == [], q
    # in the vocabulary but never heard: a real answer ("no"), not a guess
    no = rule_answer(walk, "Are there church bells?")
    assert no.known and no.text.startswith("No")


def test_multiple_choice_by_the_rules(walk):
    a = choose(walk, "How many times does a dog bark?", ["1", "2", "3"])
    assert a.choice == "2" and a.choice_scores["2"] > a.choice_scores["1"]
    b = choose(walk, "Which sound is heard most?", ["church bells", "a man speaking"])
    assert b.choice == "a man speaking"
    with pytest.raises(ValueError, match="two"):
        choose(walk, "?", ["a", " a "])


def test_the_evidence_text_is_compact_and_bounded():
    long = make_evidence(["a man speaking" if i % 2 else "rain" for i in range(400)])
    text = evidence_text(long, max_lines=20)
    assert "1:06:40 long" in text and "400 segments" in text
    assert "... and 380 more parts until 1:06:40" in text and len(text.splitlines()) < 40


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from caption_fakes import write_tiny_llama

    from kikimimi.models.causal_lm import load_causal_lm

    folder = write_tiny_llama(tmp_path_factory.mktemp("lm"), ["a dog barking at 0:30", "yes no 1 2 3"])
    cfg = json.loads((folder / "config.json").read_text())
    cfg["max_position_embeddings"] = 4096
    (folder / "config.json").write_text(json.dumps(cfg))
    return load_causal_lm(str(folder))


def test_a_language_model_reads_the_evidence_and_cites(walk, tiny_lm):
    lm, tok = tiny_lm
    a = lm_answer(walk, "When does the dog bark?", lm, tok, spec="tiny", max_new_tokens=6)
    assert a.answered_by == "lm:tiny" and a.text
    assert "Timeline:" in a.grounding and "0:30–0:50 a dog barking" in a.grounding  # the evidence it read
    assert "Findings for this question:" in a.grounding
    assert a.citations  # times named in the answer, else the findings' (0:30–0:50, 1:00–1:10)
    unknown = lm_answer(walk, "When does the cymbal crash?", lm, tok, max_new_tokens=6)
    assert unknown.answered_by == "rules" and unknown.text.startswith(CANNOT_TELL)  # the model was not asked


def test_multiple_choice_by_the_language_models_likelihood(walk, tiny_lm):
    lm, tok = tiny_lm
    a = choose(walk, "How many times does a dog bark?", ["1", "2", "3"], lm=lm, tokenizer=tok, spec="tiny")
    assert set(a.choice_scores) == {"1", "2", "3"} and a.answered_by == "lm:tiny"
    assert a.choice == max(a.choice_scores, key=a.choice_scores.get)


def test_choice_likelihoods_reuse_the_prompt_cache_and_equal_a_full_pass(tiny_lm):
    import torch

    lm, tok = tiny_lm
    prompt = tok("a dog barking at 0:30 yes", add_special_tokens=False)["input_ids"]
    got = choice_logprobs(lm, tok, prompt, ["no", "1 2 3", "a dog barking"])
    for choice, value in got.items():
        ids = tok(" " + choice if not getattr(tok, "chat_template", None) else choice,
                  add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(lm(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1], -1)
        full = float(logp[torch.arange(len(ids)), torch.tensor(ids)].mean())  # per token: length-normalised
        assert value == pytest.approx(full, abs=1e-4) and value < 0, choice


def scored_evidence() -> Evidence:
    """12 segments of 3 s over a 10-label vocabulary: "a dog barking" is never the top tag ("rain" always is) but
    scores high in segments 2, 3 and 7 (heard twice: 0:06–0:12 and 0:21–0:24)."""
    segs = []
    for i in range(12):
        dog = 0.45 if i in (2, 3, 7) else 0.1
        scores = [dog, 0.05, 0.05, 0.6, 0.0, 0.0] + [0.0] * 4
        segs.append(Segment(i, 3.0 * i, 3.0 * i + 3, -20.0, -6.0, False, [TagScore("rain", 0.8, 0.6)], None, scores))
    labels = [*LABELS, "l6", "l7", "l8", "l9"]
    return Evidence("hits.wav", 36.0, 16000, labels, {"segment_s": 3.0, "silence_dbfs": -60.0}, {}, segs,
                    summarise_tags(segs), 0.0, -20.0)


def test_counts_and_first_times_come_from_the_per_label_scores():
    ev = scored_evidence()
    a = rule_answer(ev, "How many times does the dog bark?")
    assert a.text == "A dog barking: 2 times: 0:06–0:12, 0:21–0:24."
    assert [(c.start_s, c.end_s) for c in a.citations] == [(6.0, 12.0), (21.0, 24.0)]
    assert rule_answer(ev, "When is the dog first heard?").text == "A dog barking first occurs at 0:06–0:12."
    assert choose(ev, "How many times does the dog bark?", ["1", "2", "3"]).choice == "2"
    assert label_facts(ev, ["a dog barking", "church bells"]) == [
        "a dog barking: heard 2 times, at 0:06–0:12, 0:21–0:24; first at 0:06, last until 0:24",
        "church bells: not heard"]
    assert stated_count("A 440 Hz tone: 3 times at 0:05 (-20 dBFS)", ignore=["a 440 Hz tone"]) == 3
    assert stated_count("it is hit twice") == 2 and stated_count("at 0:03 and 0:09") is None


def test_the_prompt_puts_the_facts_next_to_the_question_and_checks_the_reply(tiny_lm, monkeypatch):
    from kikimimi.inference import grounded

    lm, tok = tiny_lm
    ev = scored_evidence()
    q = "How many times does the dog bark?"
    monkeypatch.setattr(grounded, "clean_decoded", lambda text: "The dog barks 3 times.")
    wrong = lm_answer(ev, q, lm, tok, spec="tiny", max_new_tokens=2)
    prompt = wrong.grounding
    assert prompt.index("Timeline:") < prompt.index("Facts (computed") < prompt.index("Question: " + q)
    assert "- a dog barking: heard 2 times, at 0:06–0:12, 0:21–0:24" in prompt
    assert wrong.answered_by == "rules (lm:tiny stated another count)" and wrong.text.startswith("A dog barking: 2 ")
    monkeypatch.setattr(grounded, "clean_decoded", lambda text: "The dog barks twice.")
    right = lm_answer(ev, q, lm, tok, spec="tiny", max_new_tokens=2)
    assert right.answered_by == "lm:tiny" and right.text == "The dog barks twice. (0:06–0:12, 0:21–0:24)"
    monkeypatch.setattr(grounded, "clean_decoded", lambda text: "First heard at 0:06–0:12.")
    span = lm_answer(ev, "When is the dog first heard?", lm, tok, spec="tiny", max_new_tokens=2)
    assert [(c.start_s, c.end_s) for c in span.citations] == [(6.0, 9.0), (9.0, 12.0)]  # not the one from 0:12
    monkeypatch.setattr(grounded, "clean_decoded", lambda text: "First at 1:02:05.")
    late = lm_answer(ev, "When is the dog first heard?", lm, tok, spec="tiny", max_new_tokens=2)
    assert late.answered_by == "rules (lm:tiny cited times the evidence does not support)"  # past the end
    monkeypatch.setattr(grounded, "clean_decoded", lambda text: "The sound of the sound of the sound.")
    which = lm_answer(ev, "Which is heard: a dog barking or church bells?", lm, tok, spec="tiny", max_new_tokens=2)
    assert which.answered_by == "rules (lm:tiny named none of the sounds asked about)"
    assert which.text.startswith("Yes, a dog barking")


def test_a_follow_up_question_refers_back_to_the_previous_sounds(walk):
    first = rule_answer(walk, "When does the dog bark?")
    follow = rule_answer(walk, "and when does it stop for the last time?", context=first.labels)
    assert follow.labels == ["a dog barking"] and [(c.start_s, c.end_s) for c in follow.citations] == [(60.0, 70.0)]
    assert not rule_answer(walk, "and when does it stop for the last time?").known  # no context: cannot tell
    silent = rule_answer(walk, "Is it silent at 0:25?", context=first.labels)  # "it" is the recording here
    assert silent.text.startswith("Yes, it is silent at 0:25") and silent.labels == []


def test_a_reply_that_contradicts_the_findings_is_replaced(walk, tiny_lm, monkeypatch):
    import torch

    lm, tok = tiny_lm
    no = tok("no", add_special_tokens=False)["input_ids"]

    def says_no(input_ids, **kw):
        return torch.cat([input_ids, torch.tensor([no], dtype=input_ids.dtype)], dim=1)

    monkeypatch.setattr(lm, "generate", says_no)
    a = lm_answer(walk, "Is it silent at 25 s?", lm, tok, spec="tiny")
    assert a.text.startswith("Yes, it is silent") and a.answered_by == "rules (lm:tiny contradicted the evidence)"
    agrees = lm_answer(walk, "Is it silent at 0:05?", lm, tok, spec="tiny")
    assert agrees.answered_by == "lm:tiny"
    assert agrees.text == "no (0:00–0:10)"  # a reply naming no time gets the findings' times


def test_describe_gives_a_bounded_timeline_and_a_paragraph(walk):
    from kikimimi.inference.grounded import describe

    d = describe(walk)
    assert [(p.start_s, p.end_s, p.sounds) for p in d.parts] == [
        (0.0, 20.0, ["a man speaking"]), (20.0, 30.0, ["silence"]), (30.0, 50.0, ["a dog barking"]),
        (50.0, 60.0, ["a man speaking"]), (60.0, 70.0, ["a dog barking"])]
    assert d.paragraph.startswith("'walk.wav' lasts 1:10. Mostly a man speaking (43% of the time as the top tag), "
                                  "also a dog barking (43%).")
    assert "It begins with a man speaking (0:00–0:20) and ends with a dog barking (1:00–1:10)." in d.paragraph
    assert "Silent for 0:10 in all." in d.paragraph and "0:00–0:20  a man speaking" in d.text()
    long = make_evidence(["rain"] * 30 + ["a man speaking"] * 3 + ["rain"] * 2 + ["church bells"] * 20)
    parts = describe(long, max_parts=3).parts
    assert len(parts) == 3 and parts[0].sounds[0] == "rain" and parts[-1].sounds == ["church bells"]
    assert parts[0].start_s == 0.0 and parts[-1].end_s == 550.0


def test_a_reply_citing_unsupported_times_is_replaced(walk, tiny_lm, monkeypatch):
    import kikimimi.inference.grounded as grounded

    lm, tok = tiny_lm
    monkeypatch.setattr(grounded, "clean_decoded", lambda text: "The dog barks at 0:05.")  # 0:00–0:10 is speech
    a = lm_answer(walk, "When does the dog bark?", lm, tok, spec="tiny", max_new_tokens=2)
    assert a.answered_by == "rules (lm:tiny cited times the evidence does not support)"
    assert a.model_reply == "The dog barks at 0:05."
    assert [(c.start_s, c.end_s) for c in a.citations] == [(30.0, 50.0), (60.0, 70.0)]
    monkeypatch.setattr(grounded, "clean_decoded", lambda text: "It barks from 0:35 on.")
    b = lm_answer(walk, "When does the dog bark?", lm, tok, spec="tiny", max_new_tokens=2)
    assert b.answered_by == "lm:tiny" and [(c.start_s, c.end_s) for c in b.citations] == [(30.0, 40.0)]


def test_a_which_question_leads_with_the_strongest_label_and_yes_no_choices_follow_the_findings():
    # "rain" is among the top tags of every segment, "church bells" the top tag: the top tag leads, though "rain"
    # comes first in the vocabulary
    ev = make_evidence(["church bells", "church bells", "a dog barking"])
    q = "Which is heard: rain or church bells?"
    a = rule_answer(ev, q)
    assert a.labels == ["rain", "church bells"]
    assert a.text.index("church bells") < a.text.index("rain")
    assert choose(ev, q, ["rain", "church bells"]).choice == "church bells"
    no = choose(ev, "Is there a woman speaking?", ["yes", "no"])
    assert no.choice == "no" and no.choice_scores == {"yes": 0.0, "no": 2.0}
    assert choose(ev, "Is there a dog barking?", ["no", "yes"]).choice == "yes"


def test_a_time_choice_is_the_one_nearest_the_cited_start(walk):
    a = choose(walk, "When does the dog first bark?", ["0:10", "0:31", "1:00"])
    assert a.choice == "0:31" and a.known  # the first dog segment starts at 0:30
    assert a.choice_scores["0:31"] > a.choice_scores["1:00"] > 1.0
