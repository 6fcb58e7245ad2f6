"""Flags and loading shared by `kikimimi evidence` and the grounded `kikimimi ask` (not a sub-command itself).

Nothing heavy is imported at the top: building the parser stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kikimimi.commands._options import MODEL_NAME_HELP, add_accept_licence_argument, add_precision_argument

#: what the default vocabulary is, for help texts
DEFAULT_LABELS_HELP = "default: the packaged list of everyday sounds of kikimimi serve"


def add_evidence_arguments(parser: argparse.ArgumentParser, *, clap_required: bool, device: bool = True) -> None:
    """The CLAP model, the vocabulary, the segments and the optional captioner of the evidence."""
    g = parser.add_argument_group("evidence (kikimimi.inference.evidence)")
    g.add_argument("--clap", required=clap_required, metavar="MODEL",
                   help="M2D-CLAP checkpoint that tags each segment (official 2024/2025 file or kikimimi folder)"
                        + MODEL_NAME_HELP)
    g.add_argument("--labels", metavar="LABELS",
                   help="label vocabulary: a file (one label a line, or comma-separated) or NAME,NAME,...; "
                        + DEFAULT_LABELS_HELP)
    g.add_argument("--template", default="{} can be heard", help="caption template ({} = label; %(default)s)")
    g.add_argument("--segment-s", type=float, default=10.0, help="segment length in seconds (%(default)s)")
    g.add_argument("--hop-s", type=float,
                   help="seconds between segment starts (default: the segment length, non-overlapping)")
    g.add_argument("--top-k", type=int, default=3, help="tags kept per segment (%(default)s)")
    g.add_argument("--silence-dbfs", type=float, default=-60.0,
                   help="a segment below this RMS level (dBFS) is silent (%(default)s)")
    g.add_argument("--batch-size", type=int, default=8, help="segments embedded together (%(default)s)")
    g.add_argument("--captioner", metavar="DIR", help="captioner folder (kikimimi train-captioner): also caption "
                                                     "each segment")
    g.add_argument("--text-encoder", help="text encoder spec of the CLAP model (default: inside the checkpoint or "
                                          "recorded in its config.json)")
    if device:
        g.add_argument("--device", default="auto")
    g.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickles (trusted files only)")
    add_accept_licence_argument(g)
    add_precision_argument(g)


def evidence_settings(args: argparse.Namespace) -> Any:
    """:class:`kikimimi.inference.evidence.EvidenceSettings` of the flags (raises EvidenceError on bad values)."""
    from kikimimi.inference.evidence import EvidenceSettings

    return EvidenceSettings(segment_s=args.segment_s, hop_s=args.hop_s, top_k=args.top_k, template=args.template,
                            silence_dbfs=args.silence_dbfs, batch_size=args.batch_size)


class EvidenceSources:
    """The loaded models and vocabulary; :meth:`evidence` builds one file's evidence."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Load what the flags name. Raises the loaders' errors (CheckpointError, CLAPError, CaptionerError,
        ValueError for the labels, TextEncoderError)."""
        from kikimimi.inference.clap import load_clap
        from kikimimi.inference.tagging import read_label_list

        self.settings = evidence_settings(args)
        if args.labels:
            self.labels = read_label_list(args.labels)
        else:
            from kikimimi.inference.listener import default_labels

            self.labels = default_labels()
        self.clap = load_clap(args.clap, text_encoder=args.text_encoder, device=args.device,
                              precision=args.precision, trust_pickle=args.trust_pickle,
                              accept_licence=args.accept_licence)
        self.captioner = None
        if args.captioner:
            from kikimimi.inference.captioner import load_captioner

            device = "cpu" if args.device == "auto" else args.device
            self.captioner = load_captioner(args.captioner, device=device)
        self.models = {"clap": str(args.clap), "captioner": str(args.captioner) if args.captioner else None}

    def evidence(self, path: Any, progress: bool | None = None) -> Any:
        """The :class:`~kikimimi.inference.evidence.Evidence` of one audio file."""
        from kikimimi.inference.evidence import build_evidence

        show = sys.stderr.isatty() if progress is None else progress
        return build_evidence(path, self.clap, self.labels, self.settings, captioner=self.captioner,
                              models=self.models, progress=show)


def evidence_or_report(builder, item, quiet: bool):
    """``item`` as :class:`~kikimimi.inference.evidence.Evidence` (already one, or built from audio by ``builder``);
    ``None`` after one error line on stderr when the audio cannot be read (batch rule: report, skip, go on)."""
    from kikimimi.audio.decode import AudioDecodeError
    from kikimimi.inference.evidence import Evidence

    if isinstance(item, Evidence):
        return item
    try:
        return builder.evidence(item, progress=False if quiet else None)
    except (AudioDecodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def load_lm(args: argparse.Namespace):
    """``(model, tokenizer)`` of ``--lm`` (a usage error when it does not load), or ``(None, None)``."""
    if not args.lm:
        return None, None
    from kikimimi.commands._exit import UsageError
    from kikimimi.models.causal_lm import load_causal_lm
    from kikimimi.models.text import TextEncoderError

    try:
        return load_causal_lm(args.lm, device=args.device)
    except TextEncoderError as exc:
        raise UsageError(str(exc)) from exc


def answer_question(evidence, question: str, args: argparse.Namespace, lm, tokenizer, *, choices: str | None = None,
                    history=(), context=()):
    """The :class:`~kikimimi.inference.grounded.Answer` of one question (rules, LM or multiple choice over the
    comma-separated ``choices``); ``history`` and ``context``: the conversation so far (`kikimimi chat`)."""
    from kikimimi.inference.grounded import choose, lm_answer, rule_answer

    if choices:
        return choose(evidence, question, choices.split(","), lm=lm, tokenizer=tokenizer, spec=args.lm or "",
                      context=context)
    if lm is not None:
        return lm_answer(evidence, question, lm, tokenizer, spec=args.lm, max_new_tokens=args.max_tokens or 64,
                         history=history, context=context)
    return rule_answer(evidence, question, context)


def print_answer(answer, evidence, show_evidence: bool) -> None:
    """The answer, its citations and (``show_evidence``) what it rests on, as text."""
    from kikimimi.inference.grounded import evidence_text, format_span

    if show_evidence:
        print("  evidence:")
        print("    " + evidence_text(evidence).replace("\n", "\n    "))
    print(f"  A: {answer.text}")
    if answer.citations:
        print("  cites: " + "; ".join(f"{format_span(c.start_s, c.end_s)} ({c.what})" for c in answer.citations[:12])
              + (f"; … {len(answer.citations) - 12} more" if len(answer.citations) > 12 else ""))
    print(f"  [answered by {answer.answered_by}{'' if answer.known else '; the evidence cannot tell'}]")
    if answer.model_reply is not None and answer.model_reply != answer.text:
        print(f"  (the language model said: {answer.model_reply!r})")
