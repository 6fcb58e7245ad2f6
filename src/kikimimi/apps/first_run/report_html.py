"""``report.html`` of the first run: one self-contained page (plots as inline PNG, audio as inline WAV).

Reads what the stages wrote under the demo folder — ``report/report.json`` (probe results, chance lines),
``report/<task>/*.png`` (cluster maps, confusion matrices), ``clap/zeroshot.json`` and ``clap/search.json``
(the tiny CLAP trained from scratch; the packaged ``open-clap-tiny``'s in ``clap/shipped/``; the held-out clips
under ``clap/heldout/``), ``caption/caption_stage.json`` — plus the run summary, and
writes one HTML file with no external asset (no scripts, fonts or links to fetch).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kikimimi.apps.first_run.figures import machine_line
from kikimimi.evaluation.report import confusion_name, slug
from kikimimi.fileio import atomic_write_text

__all__ = ["write_report_html", "MAX_INLINE_AUDIO_BYTES"]

#: Clips larger than this are not inlined (the page names the file instead).
MAX_INLINE_AUDIO_BYTES = 400_000

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.ref td{color:#666;font-style:italic}
tr.pre td{background:#eef6ff}.good{color:#0a7d27;font-weight:600}.bad{color:#b3261e;font-weight:600}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;width:340px}.grid img{width:100%}
figure figcaption{font-size:.85em;color:#555}img.wide{max-width:100%}audio{height:28px;vertical-align:middle}
code{background:#f3f3f5;padding:0 .25em}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _png(path: Path, cls: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img{f" class={chr(34)}{cls}{chr(34)}" if cls else ""} alt="{_e(path.name)}" ' \
           f'src="data:image/png;base64,{data}">'


def _audio(path: Path | None) -> str:
    """An inline ``<audio>`` player for a small WAV/FLAC file, or a note naming the file."""
    if path is None or not path.is_file():
        return "<span class=note>(clip not found)</span>"
    if path.stat().st_size > MAX_INLINE_AUDIO_BYTES:
        return f"<code>{_e(path.name)}</code> (not inlined: {path.stat().st_size // 1000} kB)"
    mime = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}.get(
        path.suffix.lower(), "audio/wav")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<audio controls preload="none" src="data:{mime};base64,{data}"></audio>'


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}"


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _results_table(report: dict[str, Any], verdicts: Sequence[dict[str, Any]]) -> list[str]:
    tasks = list(report.get("tasks", {}))
    probes = report.get("probes", ["linear"])
    models = list(report.get("models", {}))
    pre = {v["model"] for v in verdicts}
    out = ["<table><tr><th>model</th><th>probe</th>" + "".join(
        f"<th>{_e(t)} ({_e(report['tasks'][t].get('metric', 'accuracy'))}, %)</th>" for t in tasks) + "</tr>"]
    for m in models:
        for p in probes:
            cells = []
            for t in tasks:
                r = report["tasks"][t]["results"].get(m, {}).get("probes", {}).get(p)
                cells.append("<td class=num>–</td>" if r is None else
                             f"<td class=num>{_pct(r['mean'])} ± {_pct(r['std'])}</td>")
            cls = " class=pre" if m in pre else ""
            out.append(f"<tr{cls}><td>{_e(m)}</td><td>{_e(p)}</td>{''.join(cells)}</tr>")
    for key, label in (("chance", "chance (uniform guess)"), ("majority", "majority class of training")):
        cells = "".join(f"<td class=num>{_pct(report['tasks'][t].get('reference', {}).get(key))}</td>" for t in tasks)
        out.append(f"<tr class=ref><td>{label}</td><td>–</td>{cells}</tr>")
    out.append("</table><p>Mean ± std over the probe seeds; pre-trained encoders shaded. Random init = the same "
               "network, untrained. Chance = guessing uniformly.</p>")
    return out


def _verdict_html(text: str) -> str:
    """A verdict sentence as HTML: escaped, Markdown ``**bold**`` as ``<b>``."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", _e(text))


def _verdict_list(verdicts: Sequence[dict[str, Any]], why: str = "") -> list[str]:
    """Each trained model against random init and the strongest baseline; ✔ only where pre-training beat both."""
    if not verdicts:
        return []
    items, all_helped = [], True
    for v in verdicts:
        helped = v.get("verdict", "helped" if v["beats"] else "no gain over random init") == "helped"
        all_helped = all_helped and helped
        mark = "<span class=good>✔</span>" if helped else "<span class=bad>✘</span>"
        items.append(f"<li>{mark} {_verdict_html(v['text'])}</li>")
    lost = [v for v in verdicts if v.get("beats_baseline") is False]
    head = "<h3>Did pre-training help? (against random init and against log-mel statistics)</h3>"
    summary = ([f"<p class=note><b>The log-mel statistics baseline beat or tied {len(lost)} of {len(verdicts)} "
                "trained model × task × probe results</b>: on these, the short pre-training learned nothing that "
                "hand-made statistics do not already give.</p>"] if lost else [])
    tail = [f"<p class=note>{_e(why)}</p>"] if why and not all_helped else []
    return [head] + summary + ["<ul>"] + items + ["</ul>"] + tail


def _task_figures(report_dir: Path, task: str, models: Sequence[str], probes: Sequence[str]) -> list[str]:
    folder = report_dir / slug(task)
    out = []
    if (folder / "clusters.png").is_file():
        out += [f"<h3>{_e(task)}: cluster map of the test embeddings</h3>", _png(folder / "clusters.png", "wide")]
    figs = []
    for m in models:
        png = folder / confusion_name(m, probes[0])
        if png.is_file():
            figs.append(f"<figure>{_png(png)}<figcaption>{_e(m)}, {_e(probes[0])} probe</figcaption></figure>")
    if figs:
        out += [f"<h3>{_e(task)}: confusion matrices ({_e(probes[0])} probe, test counts over all seeds)</h3>",
                "<div class=grid>" + "".join(figs) + "</div>"]
    return out


def _search_share(search: dict[str, Any] | None) -> float | None:
    """Share of the shown text-search hits that are of the queried class (P@3 over the queries)."""
    hits = [bool(h.get("match")) for r in (search or {}).get("results", []) for h in r.get("hits", [])]
    return sum(hits) / len(hits) if hits else None


def _clap_comparison(out_dir: Path) -> list[str]:
    """One table: the from-scratch CLAP and the packaged one on the same held-out clips (empty unless both ran)."""
    rows = []
    for folder, shipped in ((out_dir / "clap", False), (out_dir / "clap" / "shipped", True)):
        zs = _read_json(folder / "zeroshot.json")
        if zs is not None:
            label = (f"{zs.get('model')}, kikimimi's packaged CLAP, as shipped" if shipped
                     else "tiny M2D-CLAP trained from scratch here (minutes-long)")
            rows.append((label, zs, _search_share(_read_json(folder / "search.json"))))
    if len(rows) < 2:
        return []
    out = ["<h2>Audio–language: trained from scratch vs shipped</h2>",
           "<table><tr><th>CLAP</th><th>zero-shot accuracy (%)</th><th>chance (%)</th>"
           "<th>text search: top-3 hits of the queried class (%)</th></tr>"]
    for label, zs, share in rows:
        out.append(f"<tr><td>{_e(label)}</td><td class=num>{_pct(zs.get('accuracy'))}</td>"
                   f"<td class=num>{_pct(zs.get('chance'))}</td><td class=num>{_pct(share)}</td></tr>")
    return out + ["</table>"]


def _clap_section(out_dir: Path, summary: dict[str, Any], shipped: bool = False) -> list[str]:
    """The tiny CLAP trained from scratch (``clap/``), or with ``shipped`` the packaged one (``clap/shipped/``)."""
    clap_dir = out_dir / "clap"
    own = clap_dir / "shipped" if shipped else clap_dir
    zs = _read_json(own / "zeroshot.json")
    search = _read_json(own / "search.json")
    if zs is None:
        return []
    data_root = Path(summary.get("clap_csv_dir") or "")
    prompt = str(zs.get("prompt")).replace("{}", "<label>")
    result = (f"Zero-shot prompt <i>{_e(prompt)}</i> on {zs.get('n_test')} held-out test clips: "
              f"<b>{_pct(zs.get('accuracy'))} %</b> (chance {_pct(zs.get('chance'))} %).")
    if shipped:
        lines = [f"<h2>Audio–language: {_e(zs.get('model'))} as shipped</h2>",
                 f"<p>kikimimi's packaged CLAP (a tiny M2D-CLAP trained for about an hour of CPU time on openly "
                 f"licensed audio and metadata captions), used as it is on the same held-out clips, prompt and "
                 f"queries. {result}</p>"]
    else:
        template = (zs.get("caption_templates") or ["{labels}"])[0].replace("{labels}", "<label>")
        lines = ["<h2>Audio–language: tiny M2D-CLAP trained from scratch (minutes-long)</h2>",
                 f"<p>Trained {zs.get('steps')} steps on {zs.get('train_clips')} training clips, each with "
                 f"{len(zs.get('caption_templates', []))} captions made from its label (e.g. "
                 f"<i>{_e(template)}</i>), text side = frozen "
                 f"<code>{_e(zs.get('text_encoder'))}</code>. {result}</p>"]
    lines.append("<table><tr><th>class</th><th>prompt</th><th>accuracy (%)</th></tr>")
    for cls, cap in zip(zs.get("classes", []), zs.get("captions", []), strict=False):
        acc = zs.get("per_class_accuracy", {}).get(cls)
        lines.append(f"<tr><td>{_e(cls)}</td><td>{_e(cap)}</td><td class=num>{_pct(acc)}</td></tr>")
    lines.append("</table>")
    preds = zs.get("predictions", [])
    shown, seen = [], set()
    for p in preds:  # one clip per class, then stop
        if p["label"] in seen:
            continue
        seen.add(p["label"])
        shown.append(p)
    if shown:
        lines += ["<h3>Some held-out clips and their zero-shot answers</h3>",
                  "<table><tr><th>clip</th><th>true class</th><th>zero-shot answer</th><th>probability</th></tr>"]
        for p in shown[:8]:
            ok = "good" if p["predicted"] == p["label"] else "bad"
            lines.append(f"<tr><td>{_audio(_find(p['file'], [clap_dir / 'heldout', data_root]))}</td>"
                         f"<td>{_e(p['label'])}</td><td class={ok}>{_e(p['predicted'])}</td>"
                         f"<td class=num>{float(p['probability']):.2f}</td></tr>")
        lines.append("</table>")
    if search:
        lines += ["<h3>Text search over the held-out clips (top 3, cosine)</h3>",
                  "<table><tr><th>query</th><th>rank</th><th>clip</th><th>score</th><th>its class</th></tr>"]
        for r in search.get("results", []):
            for rank, h in enumerate(r.get("hits", []), start=1):
                ok = "good" if h.get("match") else "bad"
                lines.append(f"<tr><td>{_e(r['query']) if rank == 1 else ''}</td><td class=num>{rank}</td>"
                             f"<td>{_audio(_find(h['file'], [clap_dir / 'heldout', data_root]))} "
                             f"<code>{_e(h['file'])}</code></td><td class=num>{float(h['score']):.3f}</td>"
                             f"<td class={ok}>{_e(h.get('label'))}</td></tr>")
        lines.append("</table>")
    return lines


def _find(key: str, roots: Sequence[Path]) -> Path | None:
    p = Path(key)
    if p.is_absolute():
        return p if p.is_file() else None
    for root in roots:
        if str(root) and (root / p).is_file():
            return root / p
    return None


def _caption_section(out_dir: Path, summary: dict[str, Any]) -> list[str]:
    cap = _read_json(out_dir / "caption" / "caption_stage.json")
    note = (summary.get("captions") or {}).get("skipped") or (summary.get("captions") or {}).get("error")
    if cap is None:
        return ["<h2>Captions</h2>", f"<p class=note>{_e(note or 'not run')}</p>"]
    roots = [Path(summary.get("clap_csv_dir") or ""), out_dir / "clap" / "heldout"]
    lines = ["<h2>Captions (audio → words) and one question</h2>",
             f"<p>Held-out captions that name the clip's class: <b>{_pct(cap.get('class_word_accuracy'))} %</b> "
             f"(nearest-neighbour baseline {_pct(cap.get('nn_class_word_accuracy'))} %, chance "
             f"{_pct(cap.get('chance'))} %), on {cap.get('n_test')} held-out clips.</p>"]
    metrics = cap.get("metrics") or {}
    if metrics:
        nn = cap.get("nn_metrics") or {}
        lines.append("<table><tr><th>metric</th><th>captioner</th><th>nearest neighbour</th></tr>" + "".join(
            f"<tr><td>{_e(k)}</td><td class=num>{float(v):.3f}</td><td class=num>"
            f"{'' if nn.get(k) is None else f'{float(nn[k]):.3f}'}</td></tr>" for k, v in metrics.items()) + "</table>")
    examples = cap.get("examples") or []
    if examples:
        lines.append("<table><tr><th>clip</th><th>class</th><th>caption</th><th>nearest-neighbour caption</th></tr>")
        for ex in examples:
            lines.append(f"<tr><td>{_audio(_find(str(ex.get('file', '')), roots))}</td><td>{_e(ex.get('label'))}"
                         f"</td><td>{_e(ex.get('caption'))}</td><td>{_e(ex.get('nn_caption'))}</td></tr>")
        lines.append("</table>")
    if cap.get("question"):
        lines.append(f"<p><b>Q:</b> {_e(cap['question'])} "
                     f"{_audio(_find(str(cap.get('answer_file', '')), roots))} (a {_e(cap.get('answer_label'))} clip)"
                     f"<br><b>A:</b> {_e(cap.get('answer'))}</p>")
    return lines


def write_report_html(path: Path, out_dir: Path, summary: dict[str, Any]) -> Path:
    """Write the self-contained report of the first run in ``out_dir`` to ``path``; returns ``path``.

    ``summary``: the run summary of :func:`kikimimi.apps.first_run.pipeline.run_first_run` (data, stage times,
    pre-training runs, verdicts).
    """
    out_dir, path = Path(out_dir), Path(path)
    report_dir = out_dir / "report"
    report = _read_json(report_dir / "report.json") or {"tasks": {}, "models": {}, "probes": ["linear"]}
    data = summary.get("data", {})
    verdicts = summary.get("verdicts", [])
    body = ["<h1>kikimimi first run</h1>",
            f"<p>Data: <b>{_e(data.get('kind', '?'))}</b> — {_e(data.get('summary', ''))}</p>"]
    if data.get("fallback_reason"):
        body.append(f"<p class=note>Generated sounds were used: {_e(data['fallback_reason'])}</p>")
    body.append("<ul>" + "".join(f"<li><b>{_e(t['name'])}</b>: {_e(t['description'])}</li>"
                                 for t in data.get("tasks", [])) + "</ul>")
    machine = summary.get("machine")
    if machine:
        body.append(f"<p>Machine: {_e(machine_line(machine))}.</p>")
    stages = summary.get("stages", {})
    if stages:
        body.append("<p>Stages: " + ", ".join(f"{_e(k)} {float(v):.0f} s" for k, v in stages.items())
                    + f"; total {float(summary.get('seconds', sum(stages.values()))):.0f} s.</p>")
    runs = summary.get("pretraining", [])
    if runs:
        body.append("<h2>What was pre-trained</h2><ul>" + "".join(
            f"<li><b>{_e(r['name'])}</b> — {r['steps']} steps of batch {r['batch_size']} "
            f"({int(r['samples']):,} crops) on {r['pool_clips']} unlabelled clips"
            f"{', starting from ' + _e(r['init']) if r.get('init') else ', from scratch'}, {float(r['seconds']):.0f} s "
            f"(run folder <code>{_e(Path(r['run_dir']).name)}</code>)</li>" for r in runs) + "</ul>")
    body += ["<h2>Evaluation: probes on frozen embeddings</h2>"] + _results_table(report, verdicts)
    body += _verdict_list(verdicts, summary.get("why", ""))
    models = list(report.get("models", {}))
    for task in report.get("tasks", {}):
        body += _task_figures(report_dir, task, models, report.get("probes", ["linear"]))
    body += _clap_comparison(out_dir)
    body += _clap_section(out_dir, summary)
    body += _clap_section(out_dir, summary, shipped=True)
    body += _caption_section(out_dir, summary)
    if data.get("licences"):
        body.append("<h2>Sources and licences</h2><p>Audio from the Debian packages "
                    + ", ".join(f"<code>{_e(p)}</code>" for p in data.get("packages", []))
                    + "; their copyright files are kept beside the cached set: "
                    + ", ".join(f"<code>{_e(Path(p).name)}</code>" for p in data["licences"]) + ".</p>")
    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>kikimimi first run</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write_text(path, page)
    return path
