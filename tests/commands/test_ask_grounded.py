"""Issue 30 on the command line: `kikimimi evidence` writes the evidence of a generated recording whose content is
known, and `kikimimi ask` answers from it (rules, multiple choice, a tiny language model), citing the times."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP

from kikimimi.cli import main

SR = 16000
LABELS = "a 440 Hz tone,a 1000 Hz tone,a 2500 Hz tone,a 6000 Hz tone"


class NamedFrequencyCLAP(FrequencyCLAP):
    def text_encoder_description(self) -> str:
        return "frequency numbers"


def tone(freq_hz: float, seconds: float) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.fixture
def recording(tmp_path, monkeypatch):
    """0–3 s 440 Hz, 3–5 s silence, 5–8 s 2500 Hz, 8–10 s 440 Hz; the CLAP model is FrequencyCLAP."""
    import kikimimi.inference.clap as clap

    loaded = []
    monkeypatch.setattr(clap, "load_clap", lambda path, **kw: loaded.append(path) or NamedFrequencyCLAP())
    path = tmp_path / "known.wav"
    sf.write(path, np.concatenate([tone(440, 3), np.zeros(2 * SR, np.float32), tone(2500, 3), tone(440, 2)]), SR)
    return path


EVIDENCE_FLAGS = ["--clap", "fake-clap", "--labels", LABELS, "--segment-s", "1", "--top-k", "2"]


def test_evidence_command_writes_the_known_content(recording, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evidence", str(recording), "-o", str(out), *EVIDENCE_FLAGS]) == 0
    data = json.loads((out / "known.evidence.json").read_text())
    assert data["duration_s"] == 10.0 and len(data["segments"]) == 10
    assert [s["silent"] for s in data["segments"]] == [False] * 3 + [True] * 2 + [False] * 5
    tags = {t["label"]: t for t in data["tags"]}
    assert tags["a 2500 Hz tone"]["top_spans"] == [[5.0, 8.0]]
    assert tags["a 440 Hz tone"]["first_s"] == 0.0 and tags["a 440 Hz tone"]["last_s"] == 10.0
    assert data["models"] == {"clap": "fake-clap", "text_encoder": "frequency numbers", "captioner": None}
    printed = capsys.readouterr().out
    assert str(out / "known.evidence.json") in printed and "0:05–0:08 a 2500 Hz tone" in printed
    # one .json for several files is refused before anything is loaded
    other = tmp_path / "other.wav"
    other.write_bytes(recording.read_bytes())
    assert main(["evidence", str(recording), str(other), "-o", str(tmp_path / "x.json"), *EVIDENCE_FLAGS]) == 2
    assert not (tmp_path / "x.json").exists()


def test_ask_answers_from_saved_evidence_citing_times(recording, tmp_path, capsys):
    saved = tmp_path / "known.json"
    assert main(["evidence", str(recording), "-o", str(saved), "--quiet", *EVIDENCE_FLAGS]) == 0
    capsys.readouterr()
    assert main(["ask", str(saved), "When does the 2500 Hz tone happen?"]) == 0
    out = capsys.readouterr().out
    assert "A: A 2500 Hz tone: 0:05–0:08." in out and "cites: 0:05–0:08 (a 2500 Hz tone)" in out
    assert "[answered by rules]" in out

    assert main(["ask", str(saved), "how many times does the 440 Hz tone occur?", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)["results"][0]["answer"]
    assert answer["known"] and "2 times" in answer["text"]
    assert [(c["start_s"], c["end_s"]) for c in answer["citations"]] == [(0.0, 3.0), (8.0, 10.0)]


def test_ask_about_audio_builds_the_evidence_and_shows_it(recording, tmp_path, capsys):
    saved = tmp_path / "e.json"
    code = main(["ask", str(recording), "Is it silent at 4 s?", *EVIDENCE_FLAGS, "--evidence", "--save-evidence",
                 str(saved)])
    assert code == 0
    out = capsys.readouterr().out
    assert "A: Yes, it is silent at 0:04: 0:04–0:05 is silent" in out
    assert "evidence:" in out and "Timeline:" in out and "0:03–0:05 silent" in out
    assert json.loads(saved.read_text())["format"] == "kikimimi-evidence"


def test_ask_says_it_cannot_tell_and_needs_a_clap_model_for_audio(recording, capsys, monkeypatch):
    from kikimimi.checkpoints import registry

    assert main(["ask", str(recording), "When does the cymbal crash?", *EVIDENCE_FLAGS, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)["results"][0]["answer"]
    assert not answer["known"] and answer["text"].startswith("I cannot tell from the evidence")
    assert answer["citations"] == []
    monkeypatch.setattr(registry, "default_packaged_model", lambda kind: None)  # no packaged CLAP to fall back on
    assert main(["ask", str(recording), "What is it?"]) == 2
    assert "--clap MODEL" in capsys.readouterr().err


def test_ask_multiple_choice(recording, capsys):
    code = main(["ask", str(recording), "How many times does the 440 Hz tone occur?", "--choices", "1,2,3",
                 *EVIDENCE_FLAGS, "--json"])
    assert code == 0
    answer = json.loads(capsys.readouterr().out)["results"][0]["answer"]
    assert answer["choice"] == "2" and set(answer["choice_scores"]) == {"1", "2", "3"}


def test_ask_with_a_local_language_model(recording, tmp_path, capsys):
    from caption_fakes import write_tiny_llama

    folder = write_tiny_llama(tmp_path / "lm", ["the 2500 hz tone is at 0:05"])
    cfg = json.loads((folder / "config.json").read_text())
    cfg["max_position_embeddings"] = 4096
    (folder / "config.json").write_text(json.dumps(cfg))
    code = main(["ask", str(recording), "When does the 2500 Hz tone happen?", *EVIDENCE_FLAGS, "--lm", str(folder),
                 "--max-tokens", "5", "--json", "--evidence"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["answer"]["answered_by"] == f"lm:{folder}" and result["answer"]["citations"]
    assert "0:05–0:08 a 2500 Hz tone" in result["answer"]["grounding"]
    assert result["evidence"]["format"] == "kikimimi-evidence"
    assert main(["ask", str(recording), "q?", *EVIDENCE_FLAGS, "--lm", str(tmp_path / "nope")]) == 2


def test_a_captioner_folder_first_keeps_the_end_to_end_mode(tmp_path, recording):
    from kikimimi.inference.captioner import CaptionerError

    folder = tmp_path / "cap"
    folder.mkdir()
    (folder / "captioner.json").write_text('{"format": "something else"}')
    with pytest.raises(CaptionerError, match="captioner.json"):  # read as a captioner, not as evidence input
        main(["ask", str(folder), str(recording), "What is this?"])


def test_evidence_with_a_tiny_real_clap_model(tmp_path, monkeypatch, capsys):
    from clap_fakes import HashTextEncoder, patch_text_encoder, write_tiny_clap2025

    patch_text_encoder(monkeypatch, HashTextEncoder(32))
    ckpt = write_tiny_clap2025(tmp_path)
    audio = tmp_path / "clip.wav"
    sf.write(audio, np.concatenate([tone(440, 2.2), tone(3000, 2.2)]), SR)
    out = tmp_path / "clip.json"
    assert main(["evidence", str(audio), "--clap", str(ckpt), "-o", str(out), "--segment-s", "2", "--quiet",
                 "--device", "cpu"]) == 0
    data = json.loads(out.read_text())
    assert [(s["start_s"], s["end_s"]) for s in data["segments"]] == [(0.0, 2.0), (2.0, 4.4)]  # the merge tail
    from kikimimi.apps.serve import default_labels

    assert data["labels"] == default_labels() and "speech" in data["labels"]  # the packaged vocabulary
    assert all(len(s["tags"]) == 3 for s in data["segments"])


def test_chat_through_its_stdin_loop(recording, tmp_path, monkeypatch, capsys):
    import io

    saved = tmp_path / "known.json"
    assert main(["evidence", str(recording), "-o", str(saved), "--quiet", *EVIDENCE_FLAGS]) == 0
    capsys.readouterr()
    lines = ["When does the 2500 Hz tone happen?", "", "and when is it last heard?", "/evidence",
             "/choices 1,2,3 how many times does the 440 Hz tone occur?", "Is there a cymbal?", "/quit",
             "never read"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", str(saved), "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(answers) == 4
    assert [(c["start_s"], c["end_s"]) for c in answers[0]["citations"]] == [(5.0, 8.0)]
    assert answers[1]["labels"] == ["a 2500 Hz tone"] and "last occurs at 0:05–0:08" in answers[1]["text"]
    assert answers[2]["choice"] == "2"
    assert not answers[3]["known"] and answers[3]["text"].startswith("I cannot tell")

    monkeypatch.setattr("sys.stdin", io.StringIO("what happens at 0:06?\n"))  # audio in, text out, end of input
    assert main(["chat", str(recording), *EVIDENCE_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "0:10, 10 segments; answers by rules" in out and "A: At 0:06: 0:06–0:07: a 2500 Hz tone" in out


def test_describe_command(recording, tmp_path, capsys):
    assert main(["describe", str(recording), *EVIDENCE_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "0:05–0:08  a 2500 Hz tone" in out and "0:03–0:05  silence" in out and "lasts 0:10" in out
    saved = tmp_path / "k.json"
    assert main(["evidence", str(recording), "-o", str(saved), "--quiet", *EVIDENCE_FLAGS]) == 0
    capsys.readouterr()
    assert main(["describe", str(saved), "--json", "--parts", "2"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert len(result["parts"]) == 2 and result["paragraph"].startswith("'known.wav' lasts 0:10.")


def test_bad_choices_are_refused_before_any_model_is_loaded(recording, monkeypatch, capsys):
    import kikimimi.inference.clap as clap

    monkeypatch.setattr(clap, "load_clap", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["ask", str(recording), "which?", "--choices", "a, a", *EVIDENCE_FLAGS]) == 2
    assert "at least two different options" in capsys.readouterr().err
