"""Model cards that carry their own evidence: a Hub ``README.md`` built from a model folder, evaluation reports and
a facts file (``kikimimi card``).

Every number of the card comes from a ``report.json`` written by ``kikimimi eval``
(:mod:`kikimimi.evaluation.report`): the ``model-index`` block of the YAML front matter holds the reports' values
unchanged (fractions, e.g. ``0.8611``), the results table the same values in percent, each row naming its report
file (with the file's SHA-256), the model's fingerprint in that report and the command that reproduces it. The
weight files are listed with their SHA-256. What the folder and the reports cannot tell (training data and their
licences, compute, recipe, training command, licence of the weights) comes from an optional facts file, a JSON
object read into :class:`CardFacts`::

    {"name": "kikimimi-open-m2d-tiny", "repo_id": "owner/name", "license": "apache-2.0",
     "description": "…", "tags": ["music"], "language": ["en"],
     "datasets": [{"name": "…", "licence": "CC-BY-4.0", "url": "…", "hub_id": "owner/dataset", "notes": "…"}],
     "compute": {"hardware": "1× H100", "hours": 3.5, "steps": 100000},
     "recipe": "open-m2d-tiny", "command": "kikimimi pretrain …",
     "eval_tasks": {"language_id": "tasks/language_id.csv"}}

The card parses as Hub model-card metadata (``huggingface_hub.ModelCard``; ``library_name: kikimimi``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kikimimi.checkpoints.digest import sha256_file_cached
from kikimimi.checkpoints.errors import CheckpointError

__all__ = [
    "CardError",
    "CardFacts",
    "DataSource",
    "ReportScore",
    "build_card",
    "read_facts",
    "read_report_scores",
]

#: Hub pipeline tag by folder kind.
PIPELINE_TAGS = {"encoder": "feature-extraction", "clap": "zero-shot-audio-classification",
                 "captioner": "audio-text-to-text"}
#: Hub task type of a kikimimi task metric (model-index ``task.type``).
_TASK_TYPE = {"zero-shot": "zero-shot-audio-classification"}


class CardError(ValueError):
    """A facts file, report or model folder the card cannot use; ``str()`` names the file and the problem."""


@dataclass(frozen=True)
class DataSource:
    """One training data source: ``name``, its ``licence``, where it is (``url``), its Hub dataset id (``hub_id``,
    listed under ``datasets:`` of the front matter) and ``notes`` (hours, clips, filtering)."""

    name: str
    licence: str = ""
    url: str = ""
    hub_id: str = ""
    notes: str = ""


@dataclass
class CardFacts:
    """What the folder and reports cannot tell (see the module docstring); every field optional."""

    name: str = ""
    repo_id: str = ""
    license: str = ""
    license_name: str = ""
    license_link: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    language: list[str] = field(default_factory=list)
    datasets: list[DataSource] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""
    command: str = ""
    eval_tasks: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike = "facts") -> CardFacts:
        """Check types and keys; unknown keys and wrong types raise :class:`CardError` naming ``source``."""
        if not isinstance(data, dict):
            raise CardError(f"'{source}': expected a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise CardError(f"'{source}': unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "datasets":
                values[key] = [_data_source(v, source, i) for i, v in enumerate(_typed(value, list, key, source))]
            elif key in ("tags", "language"):
                items = _typed(value, list, key, source)
                if not all(isinstance(v, str) for v in items):
                    raise CardError(f"'{source}': {key} must be a list of strings")
                values[key] = list(items)
            elif key in ("compute", "eval_tasks"):
                values[key] = dict(_typed(value, dict, key, source))
            else:
                values[key] = _typed(value, str, key, source)
        return cls(**values)


def _typed(value: Any, kind: type, key: str, source: str | os.PathLike) -> Any:
    if not isinstance(value, kind):
        raise CardError(f"'{source}': {key} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _data_source(value: Any, source: str | os.PathLike, i: int) -> DataSource:
    if isinstance(value, str):
        return DataSource(value)
    if not isinstance(value, dict) or "name" not in value:
        raise CardError(f"'{source}': datasets[{i}] must be a name or an object with a name")
    allowed = {f.name for f in dataclasses.fields(DataSource)}
    if set(value) - allowed:
        raise CardError(f"'{source}': datasets[{i}] has unknown key(s) {', '.join(sorted(set(value) - allowed))}")
    return DataSource(**{k: str(v) for k, v in value.items()})


def read_facts(path: str | os.PathLike) -> CardFacts:
    """A facts JSON file as :class:`CardFacts` (:class:`CardError` names the file on any problem)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardError(f"'{path}': unreadable facts file ({exc})") from exc
    return CardFacts.from_dict(data, path)


# ------------------------------------------------------------------------------------------ reports
@dataclass(frozen=True)
class ReportScore:
    """One number of a ``report.json``: ``value`` (and ``std`` over seeds) as stored there (a fraction)."""

    report: Path
    report_sha256: str
    model: str
    fingerprint: str
    task: str
    metric: str
    probe: str  # "linear", "logistic", "mlp…", "zero-shot" or "fine-tune"
    value: float
    std: float | None
    seeds: tuple[int, ...]
    lr: float | None = None
    hidden: tuple[int, ...] = ()


def _load_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardError(f"'{path}': unreadable evaluation report ({exc})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("tasks"), dict) or "models" not in report:
        raise CardError(f"'{path}': not a kikimimi evaluation report (report.json of `kikimimi eval`)")
    return report


def _trained_models(report: dict[str, Any]) -> list[str]:
    return [name for name, m in report["models"].items()
            if m.get("family") != "baseline" and not str(m.get("fingerprint", "")).startswith("random:")]


def read_report_scores(path: str | os.PathLike, model: str | None = None) -> list[ReportScore]:
    """Every score of one model in a ``report.json``: probes per task, zero-shot, fine-tune rows.

    Args:
        model: the model's row name in the report; default: its one trained model (not a baseline, not a random
            init twin).

    Raises:
        CardError: unreadable or not a report; no such model, or several trained models and none chosen.
    """
    path = Path(path)
    report = _load_report(path)
    trained = _trained_models(report)
    if model is None:
        if len(trained) != 1:
            raise CardError(f"'{path}': {len(trained)} trained models in the report ({', '.join(trained) or 'none'})"
                            "; choose one with --report-model")
        model = trained[0]
    if model not in report["models"]:
        raise CardError(f"'{path}': no model {model!r} in the report (models: {', '.join(report['models'])})")
    digest = sha256_file_cached(path)
    info = report["models"][model]
    seeds = tuple(int(s) for s in report.get("seeds", ()))
    hidden = tuple(int(h) for h in report.get("hidden", ()))
    common = dict(report=path, report_sha256=digest, model=model, fingerprint=str(info.get("fingerprint", "")),
                  lr=info.get("lr"))
    out = []
    for task, entry in report["tasks"].items():
        result = (entry.get("results") or {}).get(model)
        if result is None:
            continue
        for probe, r in (result.get("probes") or {result.get("probe", "linear"): result}).items():
            out.append(ReportScore(**common, task=task, metric=str(r["metric"]), probe=probe, value=float(r["mean"]),
                                   std=float(r["std"]), seeds=seeds, hidden=hidden if probe == "mlp" else ()))
    for task, by_model in (report.get("zero_shot") or {}).items():
        if model in by_model:
            r = by_model[model]
            out.append(ReportScore(**common, task=task, metric=str(r["metric"]), probe="zero-shot",
                                   value=float(r["score"]), std=None, seeds=()))
    for r in report.get("finetune") or ():
        if r.get("model") == model:
            out.append(ReportScore(**common, task=str(r["task"]), metric=str(r["metric"]), probe="fine-tune",
                                   value=float(r["mean"]), std=float(r["std"]) if r.get("std") else None, seeds=()))
    for s in out:
        if not math.isfinite(s.value):
            raise CardError(f"'{path}': {s.task}/{s.probe} score is {s.value}, not a number a card can carry")
    return out


# ------------------------------------------------------------------------------------------ the folder
def _folder_facts(folder: Path) -> dict[str, Any]:
    """Kind, family, sizes and the weight files (name, bytes, SHA-256) of a kikimimi model folder."""
    if (folder / "captioner.json").is_file():
        config_path, kind = folder / "captioner.json", "captioner"
    elif (folder / "config.json").is_file():
        config_path, kind = folder / "config.json", "encoder"
    else:
        raise CardError(f"'{folder}': not a kikimimi model folder (no config.json or captioner.json)")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardError(f"'{config_path}': unreadable ({exc})") from exc
    if kind == "encoder" and (meta.get("extras") or {}).get("audio_proj"):
        kind = "clap"
    weights = sorted(p for p in folder.rglob("*.safetensors") if not any(x.startswith(".") for x in
                                                                         p.relative_to(folder).parts))
    if not weights:
        raise CardError(f"'{folder}': no .safetensors weight file")
    files = [{"file": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file_cached(p)}
             for p in weights]
    if kind == "encoder" or kind == "clap":
        recorded = meta.get("weights_sha256")
        main = next(f for f in files if f["file"] == "model.safetensors") if any(
            f["file"] == "model.safetensors" for f in files) else None
        if recorded and main and recorded != main["sha256"]:
            raise CheckpointError(folder / "model.safetensors", "SHA-256 differs from the weights_sha256 of "
                                  "config.json (a changed or damaged file); re-export the folder")
    return {"kind": kind, "meta": meta, "files": files}


def _architecture_lines(kind: str, meta: dict[str, Any]) -> list[str]:
    if kind == "captioner":
        mapper, lm = meta.get("mapper", {}), meta.get("lm", {}).get("spec")
        return [f"- captioner: prefix mapper ({mapper.get('depth', '?')} layers, width {mapper.get('width', '?')}, "
                f"{mapper.get('prefix_len', '?')} prefix tokens) into the language model `{lm}`"
                f"; audio frames of {meta.get('audio_embedding_dim')} dims from `audio_model/`"]
    config, lines = meta.get("config", {}), []
    lines.append(f"- family: {config.get('family', meta.get('family', '?'))}")
    vit, byola = config.get("vit"), config.get("byola")
    if isinstance(vit, dict):
        lines.append(f"- encoder: ViT, width {vit.get('embed_dim')}, depth {vit.get('depth')}, heads "
                     f"{vit.get('num_heads')}, input {tuple(vit.get('input_size', ()))} (mel bins, frames), patch "
                     f"{tuple(vit.get('patch_size', ()))}, {vit.get('sample_rate')} Hz")
    elif isinstance(byola, dict):
        lines.append(f"- encoder: BYOL-A v{byola.get('version')} CNN, {byola.get('n_mels')} mel bins, d = "
                     f"{byola.get('d')}")
    frontend = meta.get("frontend") or {}
    if frontend:
        lines.append(f"- front end: log-mel, {frontend.get('sample_rate')} Hz, {frontend.get('n_mels')} mel bins, "
                     f"hop {frontend.get('hop_length')} samples; normalisation (mean, std) = "
                     f"{tuple(meta.get('norm_stats') or ())}")
    if config.get("audio_proj"):
        lines.append(f"- audio–text: {config['audio_proj'].get('kind')} audio projector"
                     + (", text encoder bundled" if (meta.get("extras") or {}).get("text_encoder") else ""))
    return lines


# ------------------------------------------------------------------------------------------ the card
def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML of dicts, lists and scalars (JSON-quoted strings), enough for model-card metadata."""
    pad, lines = " " * indent, []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines += _yaml(v, indent + 2)
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(v) if not isinstance(v, dict | list) else '[]'}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                sub = _yaml(item, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    return lines


def _metric_name(score: ReportScore) -> str:
    how = {"zero-shot": "zero-shot", "fine-tune": "fine-tuned"}.get(score.probe, f"{score.probe} probe")
    return f"{score.metric} ({how})"


def _task_csv(task: str, facts: CardFacts) -> str:
    return facts.eval_tasks.get(task, f"TASK_CSV_OF_{task}")


def reproduce_command(score: ReportScore, model_ref: str, facts: CardFacts) -> str:
    """The ``kikimimi eval`` command that produces ``score`` again (same probes, seeds, pinned lr, hidden sizes)."""
    if score.probe == "fine-tune":
        return f"kikimimi finetune {shlex.quote(model_ref)} --task {shlex.quote(_task_csv(score.task, facts))}"
    args = ["kikimimi", "eval", model_ref, "--task", _task_csv(score.task, facts), "-o", f"eval-{score.task}"]
    if score.probe in ("linear", "logistic"):
        args += ["--probe", score.probe]
    if score.seeds:
        if score.seeds != tuple(range(42, 42 + len(score.seeds))):
            raise CardError(f"'{score.report}': seeds {list(score.seeds)} are not the ones `kikimimi eval --seeds N` "
                            "draws (42, 43, …)")
        args += ["--seeds", str(len(score.seeds))]
    if score.lr is not None:
        args += ["--lr", repr(float(score.lr))]
    if score.hidden:
        args += ["--hidden", *map(str, score.hidden)]
    if score.metric in ("uar", "wacc", "mAP"):
        args += ["--metric", score.metric]
    return shlex.join(args)


def _model_index(name: str, scores: list[ReportScore]) -> list[dict[str, Any]]:
    results = []
    for s in scores:
        task_type = _TASK_TYPE.get(s.probe, "audio-classification")
        results.append({
            "task": {"type": task_type, "name": task_type.replace("-", " ").capitalize()},
            "dataset": {"name": s.task, "type": s.task},
            "metrics": [{"type": s.metric, "value": s.value, "name": _metric_name(s), "verified": False}],
        })  # the report file is named in the results table of the body (the Hub's `source` wants a URL)
    return [{"name": name, "results": results}] if results else []


def build_card(folder: str | os.PathLike, reports: list[str | os.PathLike] = (), *, facts: CardFacts | None = None,
               report_model: str | None = None, repo_id: str | None = None) -> str:
    """The ``README.md`` text of a model folder (module docstring).

    Raises:
        CardError: a folder, report or facts problem (one line naming the file).
        CheckpointError: ``model.safetensors`` does not match its recorded SHA-256.
    """
    folder = Path(folder)
    facts = facts or CardFacts()
    found = _folder_facts(folder)
    kind, meta = found["kind"], found["meta"]
    resolved = folder.resolve()
    name = facts.name or (resolved.parent.name if resolved.name == "kikimimi" else resolved.name)  # a run's export
    repo = repo_id or facts.repo_id
    model_ref = f"hf://{repo}" if repo else str(folder)
    scores = [s for r in reports for s in read_report_scores(r, report_model)]
    family = str((meta.get("config") or {}).get("family") or meta.get("family") or kind)
    tags = list(dict.fromkeys(["kikimimi", "audio", family, PIPELINE_TAGS[kind], *facts.tags]))
    front: dict[str, Any] = {"library_name": "kikimimi", "license": facts.license or "other"}
    if not facts.license or facts.license == "other":
        front["license_name"] = facts.license_name or "unstated"
        if facts.license_link:
            front["license_link"] = facts.license_link
    front["pipeline_tag"] = PIPELINE_TAGS[kind]
    front["tags"] = tags
    if facts.language:
        front["language"] = facts.language
    hub_datasets = [d.hub_id for d in facts.datasets if d.hub_id]
    if hub_datasets:
        front["datasets"] = hub_datasets
    if scores:
        front["model-index"] = _model_index(name, scores)

    lines = ["---", *_yaml(front), "---", "", f"# {name}", ""]
    if facts.description:
        lines += [facts.description, ""]
    lines += ["## Use", "", 'With `pip install "kikimimi[hub]"`:' if repo else "Load the folder:", "", "```python",
              "import kikimimi", ""]
    if kind == "captioner":
        lines += ["from kikimimi.inference.pretrained import from_pretrained",
                  f'captioner = from_pretrained("{model_ref}")', 'print(captioner.caption("sound.wav"))']
    elif kind == "clap":
        lines += [f'clap = kikimimi.load_clap("{model_ref}")',
                  'scores = clap.similarity(clap.encode_audio(["dog.wav"]), clap.encode_text(["a dog barks"]))']
    else:
        lines += [f'model = kikimimi.load("{model_ref}")', 'embedding = model.embed("sound.wav")  # [D]']
    lines += ["```", "", "## Model", "", *_architecture_lines(kind, meta), ""]

    lines += ["## Training data", ""]
    if facts.datasets:
        lines += ["| source | licence | where | notes |", "|---|---|---|---|"]
        lines += [f"| {d.name} | {d.licence or 'not stated'} | {d.url or d.hub_id or '–'} | {d.notes or '–'} |"
                  for d in facts.datasets]
    else:
        lines.append("Not stated (`kikimimi card --facts FACTS.json` adds the sources and their licences).")
    lines += ["", "## Training compute and recipe", ""]
    if facts.compute:
        lines += [f"- {k}: {v}" for k, v in facts.compute.items()]
    if facts.recipe:
        lines.append(f"- recipe: {facts.recipe}")
    if facts.command:
        lines += ["", "Training command:", "", "```bash", facts.command, "```"]
    if not (facts.compute or facts.recipe or facts.command):
        lines.append("Not stated.")

    lines += ["", "## Results", ""]
    if scores:
        lines += ["Every number below is copied from the `kikimimi eval` report named in its row (values in percent; "
                  "the front matter holds the same values as fractions). Mean ± std over the probe seeds.", "",
                  "| task | metric | probe | score | report (SHA-256) | model in report | reproduce |",
                  "|---|---|---|---|---|---|---|"]
        for s in scores:
            value = f"{100 * s.value:.2f}" + (f" ± {100 * s.std:.2f}" if s.std is not None else "")
            lines.append(f"| {s.task} | {s.metric} | {s.probe} | {value} | `{s.report.name}` "
                         f"({s.report_sha256[:12]}) | {s.model} ({s.fingerprint[:12]}) | "
                         f"`{reproduce_command(s, model_ref, facts)}` |")
    else:
        lines.append("No evaluation report given (`kikimimi card MODEL_DIR --eval report.json`).")
    lines += ["", "## Files", "", "| file | bytes | SHA-256 |", "|---|---|---|"]
    lines += [f"| {f['file']} | {f['bytes']} | `{f['sha256']}` |" for f in found["files"]]
    lines += ["", "## Licence", ""]
    if facts.license and facts.license != "other":
        lines.append(f"The weights are released under `{facts.license}`.")
    else:
        lines.append("The licence of these weights is not stated (`--facts` with `license`).")
        if meta.get("licence_note"):
            lines += ["", f"Note recorded in the folder's configuration: {meta['licence_note']}"]
    lines += ["", f"Card written by `kikimimi card` from the folder and {len(reports)} evaluation report(s).", ""]
    return "\n".join(lines)


def card_digest(text: str) -> str:
    """SHA-256 of a card's text (what ``kikimimi card`` prints)."""
    return hashlib.sha256(text.encode()).hexdigest()
