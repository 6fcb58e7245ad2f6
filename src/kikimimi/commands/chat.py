"""`kikimimi chat FILE`: a conversation about one recording. Questions are read from stdin, one a line; each answer
rests on the recording's evidence (built once, or read from the JSON of `kikimimi evidence`) and cites segment
times. The conversation is kept: a question that names no sound but refers back ("and when does it stop?") is
about the sounds of the previous answer, and a language model (``--lm``) also reads the last three exchanges.

Lines: a question; ``/evidence`` prints the evidence; ``/choices A,B,C question`` asks a multiple-choice question;
``/quit`` (or end of input) ends.
"""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._evidence import add_evidence_arguments

NAME = "chat"
HELP = "Talk about a recording: questions on stdin, answers grounded in its evidence, citing times."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="an audio file (with --clap) or the evidence JSON of kikimimi evidence")
    parser.add_argument("--lm", metavar="SPEC",
                        help="language model that answers: 'smollm2' or a local Hugging Face causal-LM folder; "
                             "default: the rule answerer (no model)")
    parser.add_argument("--max-tokens", type=int, help="most new tokens per answer of the LM (default 64)")
    parser.add_argument("--save-evidence", metavar="OUT.json", help="audio input: also write its evidence here")
    parser.add_argument("--json", action="store_true", help="one JSON line per answer instead of text")
    parser.add_argument("--device", default="cpu")
    add_evidence_arguments(parser, clap_required=False, device=False)


def _evidence(args: argparse.Namespace):
    from pathlib import Path

    from kikimimi.commands._exit import UsageError, check_model_paths, check_paths
    from kikimimi.inference.evidence import Evidence, EvidenceError

    check_paths([args.file])
    if args.file.lower().endswith(".json"):
        try:
            return Evidence.load(args.file)
        except EvidenceError as exc:
            raise UsageError(str(exc)) from exc
    if Path(args.file).is_dir():
        raise UsageError(f"{args.file}: a folder; chat is about one recording")
    if not args.clap:
        raise UsageError("chat about audio needs a CLAP model: --clap MODEL (or give the evidence JSON of "
                         "kikimimi evidence)")
    check_model_paths([args.clap, args.captioner])
    from kikimimi.audio.decode import AudioDecodeError
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.commands._evidence import EvidenceSources
    from kikimimi.models.text import TextEncoderError

    try:
        evidence = EvidenceSources(args).evidence(args.file, progress=False if args.json else None)
    except (AudioDecodeError, CheckpointError, TextEncoderError, ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    if args.save_evidence:
        evidence.save(args.save_evidence)
    return evidence


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 after the conversation, 2 on a bad input, model or setting."""
    from kikimimi.commands._evidence import answer_question, load_lm, print_answer
    from kikimimi.inference.grounded import evidence_text, format_time

    evidence = _evidence(args)
    lm, tokenizer = load_lm(args)
    interactive = sys.stdin.isatty()
    if not args.json:
        print(f"{evidence.file}: {format_time(evidence.duration_s)}, {len(evidence.segments)} segments; "
              f"answers by {('lm:' + args.lm) if lm is not None else 'rules'}. Ask away (/evidence, /quit).")
    history: list[tuple[str, str]] = []
    context: list[str] = []
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        question = line.strip()
        if not question:
            continue
        if question in ("/quit", "/exit", "quit", "exit"):
            break
        if question == "/evidence":
            print(evidence_text(evidence))
            continue
        choices = None
        if question.startswith("/choices "):
            _cmd, choices, *rest = question.split(" ", 2)
            question = rest[0] if rest else ""
            if not question.strip():
                print("error: /choices A,B,C then the question", file=sys.stderr)
                continue
        try:
            answer = answer_question(evidence, question, args, lm, tokenizer, choices=choices, history=history,
                                     context=context)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
        else:
            print_answer(answer, evidence, False)
            sys.stdout.flush()
        history.append((question, answer.text))
        if answer.labels:
            context = list(answer.labels)
    return 0
