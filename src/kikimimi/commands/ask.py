"""`kikimimi ask`: a question about recordings, two ways.

- Grounded (issue 30): ``kikimimi ask FILE… "question" --clap MODEL`` (or FILE = the ``.json`` written by
  `kikimimi evidence`): the evidence of the audio models (per-segment CLAP tags, loudness, silence, captions;
  :mod:`kikimimi.inference.evidence`) answers, citing the segment times it rests on — by rules without a language
  model, or by a local causal LM with ``--lm smollm2`` / ``--lm FOLDER`` (:mod:`kikimimi.inference.grounded`).
  ``--choices a,b,c`` picks one option (the LM's likelihood); ``--evidence`` prints what the answer rests on.
- End-to-end captioner: ``kikimimi ask CAPTIONER AUDIO… "question"`` (a folder written by `kikimimi
  train-captioner` first, no ``--clap``): its language model answers from the audio prefix, per window.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kikimimi.commands._evidence import add_evidence_arguments

NAME = "ask"
HELP = ("Ask about recordings: answers grounded in the audio models' evidence, citing times (--clap, or evidence "
        "JSON), or from a trained captioner.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="FILE… QUESTION (FILE: audio, or evidence JSON of kikimimi evidence), or "
                             "CAPTIONER AUDIO… QUESTION (the end-to-end captioner)")
    parser.add_argument("--lm", metavar="SPEC",
                        help="grounded mode: the language model that answers from the evidence: 'smollm2' "
                             "(SmolLM2-135M-Instruct, installed with the text extra) or a local Hugging Face "
                             "causal-LM folder; default: the rule answerer (no model)")
    parser.add_argument("--choices", metavar="A,B,C", help="multiple choice: pick one of these comma-separated "
                                                           "options (by the LM's likelihood, or by the rules)")
    parser.add_argument("--evidence", action="store_true", help="also print what the answer was grounded on")
    parser.add_argument("--save-evidence", metavar="OUT",
                        help="grounded mode, audio input: also write the evidence (a .json for one file, else a "
                             "folder)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--max-tokens", type=int, help="most new tokens per answer (default: LM 64, captioner 30)")
    parser.add_argument("--device", default="cpu")
    cap = parser.add_argument_group("end-to-end captioner (CAPTIONER AUDIO… QUESTION)")
    cap.add_argument("--beam", type=int, help="beam size (1 = greedy; default: the model's, 3)")
    cap.add_argument("--window-s", type=float, help="window for long files (default: the training clip length)")
    cap.add_argument("--audio-model", help="audio encoder to use instead of the one the captioner names")
    add_evidence_arguments(parser, clap_required=False, device=False)


def _is_captioner(path: str) -> bool:
    """A captioner folder, or the name of a registered captioner (``open-captioner-tiny``)."""
    from kikimimi.commands._options import names_captioner

    return names_captioner(path)


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import UsageError

    if len(args.inputs) < 2:
        raise UsageError("give the recordings and then the question: kikimimi ask FILE… \"question\"")
    *sources, question = args.inputs
    if not question.strip():
        raise UsageError("the question is empty")
    if _is_captioner(sources[0]) and not args.clap:
        if len(sources) < 2:
            raise UsageError("give the captioner folder, then the audio, then the question")
        return _run_captioner(args, sources[0], sources[1:], question)
    return _run_grounded(args, sources, question)


def _run_captioner(args: argparse.Namespace, model: str, audio: list[str], question: str) -> int:
    from kikimimi.commands._exit import check_model_paths, check_paths

    check_model_paths([model])  # a missing path: usage error (exit 2); a name is left to the registry
    check_paths(audio)
    from kikimimi.inference.captioner import caption_files, load_captioner

    captioner = load_captioner(model, audio_model=args.audio_model, device=args.device)
    results, errors = caption_files(captioner, audio, question=question, window_s=args.window_s,
                                    beam_size=args.beam, max_new_tokens=args.max_tokens)
    for e in errors:
        print(f"error: {e['file']}: {e['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({"question": question, "results": [r.to_dict() for r in results], "errors": errors},
                         indent=2))
    else:
        for r in results:
            print(f"{r.file}\t{r.caption}")
    return 1 if errors and not results else 0


def _split_sources(sources: list[str]) -> tuple[list[Path], list[Path]]:
    """``(evidence JSON files, audio files)`` of the inputs (folders and CSV lists expanded to audio files)."""
    from kikimimi.commands._exit import UsageError, check_paths
    from kikimimi.fileio import InputListError, collect_audio_files

    check_paths(sources)
    jsons = [Path(s) for s in sources if s.lower().endswith(".json") and Path(s).is_file()]
    rest = [s for s in sources if not (s.lower().endswith(".json") and Path(s).is_file())]
    try:
        audio = collect_audio_files(rest) if rest else []
    except InputListError as exc:
        raise UsageError(str(exc)) from exc
    if rest and not audio:
        raise UsageError(f"no audio files found in {', '.join(rest)}")
    return jsons, audio


def _run_grounded(args: argparse.Namespace, sources: list[str], question: str) -> int:
    from kikimimi.commands._exit import UsageError, batch_status, check_model_paths

    jsons, audio = _split_sources(sources)
    if audio and not args.clap:  # no model given: kikimimi's packaged CLAP, and its captioner for the evidence
        from kikimimi.commands._options import model_or_packaged

        args.clap = model_or_packaged(None, "clap", "--clap")
        if args.clap and not args.captioner:
            args.captioner = model_or_packaged(None, "captioner", "--captioner")
    if audio and not args.clap:
        raise UsageError("grounded answers about audio need a CLAP model: --clap MODEL (or give the evidence JSON "
                         "of kikimimi evidence; or a captioner folder first for the end-to-end captioner)")
    check_model_paths([args.clap, args.captioner])
    if args.choices is not None and len({c.strip() for c in args.choices.split(",") if c.strip()}) < 2:
        raise UsageError(f"--choices {args.choices!r}: give at least two different options, separated by commas")
    saves = _save_paths(args, audio)  # refused before any model is loaded
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.commands._evidence import answer_question, evidence_or_report, load_lm, print_answer
    from kikimimi.inference.evidence import Evidence, EvidenceError
    from kikimimi.models.text import TextEncoderError

    items: list[tuple[str, object]] = []  # (name, Evidence or the path of an audio file)
    for path in jsons:
        try:
            items.append((str(path), Evidence.load(path)))
        except EvidenceError as exc:
            raise UsageError(str(exc)) from exc
    builder = None
    if audio:
        from kikimimi.commands._evidence import EvidenceSources

        try:
            builder = EvidenceSources(args)
        except (CheckpointError, TextEncoderError, ValueError, OSError) as exc:
            raise UsageError(str(exc)) from exc
        items.extend((str(p), p) for p in audio)
    lm, tokenizer = load_lm(args)
    results, failed = [], 0
    for name, item in items:
        built = evidence_or_report(builder, item, args.json)
        if built is None:
            failed += 1
            continue
        if saves and built is not item:
            built.save(saves[name])
        item = built
        answer = answer_question(item, question, args, lm, tokenizer, choices=args.choices)
        results.append({"file": name, "answer": answer.to_dict(),
                        **({"evidence": item.to_dict()} if args.evidence and args.json else {})})
        if not args.json:
            print(name)
            print(f"  Q: {question}")
            print_answer(answer, item, args.evidence)
    if args.json:
        print(json.dumps({"question": question, "results": results}, indent=2, ensure_ascii=False))
    return batch_status(len(results), failed)


def _save_paths(args: argparse.Namespace, audio: list[Path]) -> dict[str, Path]:
    """Where ``--save-evidence`` writes each audio file's evidence (a .json for one file, else a folder)."""
    if not args.save_evidence or not audio:
        return {}
    from kikimimi.commands._exit import UsageError

    out = Path(args.save_evidence)
    if out.suffix.lower() == ".json":
        if len(audio) != 1:
            raise UsageError(f"--save-evidence {out}: a .json file holds one file's evidence; give a folder")
        return {str(audio[0]): out}
    paths: dict[str, Path] = {}
    for p in audio:
        name, n = f"{p.stem}.evidence.json", 1
        while out / name in paths.values():
            n += 1
            name = f"{p.stem}-{n}.evidence.json"
        paths[str(p)] = out / name
    return paths
