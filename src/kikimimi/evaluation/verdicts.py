"""Did pre-training help? Each trained model against its random-init twin *and* the strongest baseline.

A score means little alone: a trained encoder that beats the same network at random initialisation may still lose
to hand-made log-mel statistics, and then its training bought nothing a user can use. :func:`compare` states
both comparisons for one task × model × probe; :func:`verdict_text` says it in one sentence, plainly naming the
baseline when it wins; :func:`find_verdicts` finds the pairs in an evaluation's results (twins by their
``random:<fingerprint>``, baselines by family ``baseline``) and :func:`verdict_lines` renders the report section.

Scores are fractions in [0, 1]; differences are stated in percentage points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TIE_POINTS", "compare", "verdict_text", "find_verdicts", "verdict_lines", "BASELINE_WINS"]

#: Differences below this many points (0.05) print as 0.0 and count as a tie.
TIE_POINTS = 0.05
#: What a baseline win means, for a model whose training length is not known (the first run states its own).
BASELINE_WINS = "its training bought nothing over hand-made statistics on this task"


def compare(task: str, model: str, probe: str, pretrained: Any, twin: Any | None,
            baseline_name: str | None = None, baseline: Any | None = None) -> dict[str, Any]:
    """One verdict as a JSON-ready dict.

    ``pretrained`` / ``twin`` / ``baseline``: results with ``score`` and ``std`` (a :class:`ProbeResult`);
    ``twin`` (the random-init network) or ``baseline`` may be ``None`` when the table lacks them. Keys: task,
    model, probe, pretrained, random_init, difference (pretrained − random init), noise (the larger seed std),
    beats, clear (beats by more than the noise), baseline, baseline_score, baseline_difference
    (pretrained − baseline), beats_baseline, baseline_clear, verdict (``"helped"``, ``"baseline wins"``,
    ``"no gain over random init"``).
    """
    tie = TIE_POINTS / 100
    entry: dict[str, Any] = {"task": task, "model": model, "probe": probe, "pretrained": pretrained.score}
    if twin is not None:
        diff = pretrained.score - twin.score
        noise = max(pretrained.std, twin.std)
        entry.update(random_init=twin.score, difference=diff, noise=noise, beats=diff > 0, clear=diff > noise)
    else:
        entry.update(random_init=None, difference=None, noise=pretrained.std, beats=None, clear=None)
    if baseline is not None:
        bdiff = pretrained.score - baseline.score
        entry.update(baseline=baseline_name, baseline_score=baseline.score, baseline_difference=bdiff,
                     beats_baseline=bdiff >= tie, baseline_clear=abs(bdiff) > max(pretrained.std, baseline.std))
    else:
        entry.update(baseline=None, baseline_score=None, baseline_difference=None, beats_baseline=None,
                     baseline_clear=None)
    if entry["beats_baseline"] is False:
        entry["verdict"] = "baseline wins"
    elif entry["beats"] is False:
        entry["verdict"] = "no gain over random init"
    else:
        entry["verdict"] = "helped"
    return entry


def _points(x: float) -> str:
    return f"{100 * abs(x):.1f} points"


def verdict_text(v: Mapping[str, Any], why_short: str = "", baseline_wins: str = BASELINE_WINS) -> str:
    """One sentence for a :func:`compare` entry; ``**not**`` and the baseline's win are in Markdown bold.

    ``why_short``: why a short run may lose (e.g. samples seen against the official recipe), appended when
    pre-training did not help; ``baseline_wins``: what a baseline win means (after a colon).
    """
    head = f"{v['task']}, {v['probe']} probe: {v['model']} {100 * v['pretrained']:.1f} %"
    if v["random_init"] is not None:
        head += f" vs random init {100 * v['random_init']:.1f} %"
    if v["baseline"] is not None:
        head += f" and {v['baseline']} {100 * v['baseline_score']:.1f} %"
    twin = ""
    if v["beats"] is not None:
        strength = "beats" if v["clear"] else "edges out (within the seed spread)"
        twin = (f"pre-training {strength} random init by {_points(v['difference'])}" if v["beats"]
                else "pre-training does **not** beat random init here")
    base = ""
    if v["beats_baseline"] is not None:
        bdiff, spread = v["baseline_difference"], "" if v["baseline_clear"] else " (within the seed spread)"
        if v["beats_baseline"]:
            base = f"the model {'also' if v['beats'] else 'still'} beats {v['baseline']} by {_points(bdiff)}{spread}"
        elif abs(bdiff) < TIE_POINTS / 100:
            base = f"**{v['baseline']} tie with this model**: {baseline_wins}"
        else:
            base = f"**{v['baseline']} beat this model by {_points(bdiff)}**{spread}: {baseline_wins}"
    if twin and base:
        body = twin + ("; " if v["beats_baseline"] else (", but " if v["beats"] else ", and ")) + base
    else:
        body = twin or base or "no comparison available"
    text = f"{head} — {body}"
    if why_short and v["verdict"] != "helped":
        text += f" (run length: {why_short})"
    return text + "."


def find_verdicts(results: Mapping[str, Mapping[str, Mapping[str, Any]]], models: Mapping[str, Mapping[str, Any]],
                  probes: Sequence[str]) -> list[dict[str, Any]]:
    """Verdicts for every model that has a random-init twin in ``results`` (``{task: {model: {probe: result}}}``).

    ``models``: name → ``{"fingerprint", "family"}`` (an evaluation's model table); the twin of a model with
    fingerprint ``F`` has fingerprint ``random:F``; the strongest baseline (family ``baseline``) is picked per
    task and probe by its score.
    """
    by_fp = {m["fingerprint"]: name for name, m in models.items()}
    baselines = [name for name, m in models.items() if m.get("family") == "baseline"]
    found = []
    for task, per_model in results.items():
        for name, m in models.items():
            twin = by_fp.get(f"random:{m['fingerprint']}")
            if twin is None or name not in per_model or twin not in per_model:
                continue
            for probe in probes:
                scored = [b for b in baselines if b in per_model and probe in per_model[b]]
                best = max(scored, key=lambda b: per_model[b][probe].score) if scored else None
                found.append(compare(task, name, probe, per_model[name][probe], per_model[twin][probe], best,
                                     per_model[best][probe] if best else None))
    for v in found:
        v["text"] = verdict_text(v)
    return found


def verdict_lines(found: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Did pre-training help?" section of ``report.md`` (empty without verdicts)."""
    if not found:
        return []
    return ["", "## Did pre-training help?", "",
            "Each trained model against the same network at random initialisation and against the strongest "
            "baseline (log-mel statistics); differences within the seed spread (±) are noise.", "",
            *[f"- {v['text']}" for v in found]]
