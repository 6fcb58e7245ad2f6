"""The open captioner's training view of the open corpus (issue 27): a caption table of a subset small enough for a
loaded 2-core CPU (the frozen encoder embeds every clip once, at about 10 s of audio per CPU-second).

    python benchmarks/open_suite/captioner_view.py [--corpus DIR] [--out DIR]

Per caption kind (``captions.csv`` column ``kind``) at most :data:`QUOTA` clips, drawn round-robin over the kind's
source packages (so every language, kit and soundfont is represented; seed 0), with all the captions of each drawn
clip. Writes ``OUT/train_captions.csv`` (``file_name,caption``, absolute paths) and ``OUT/train_view.json``
(clips and hours per kind, the quota).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from collections import defaultdict
from pathlib import Path

from kikimimi.fileio import atomic_write_json, atomic_write_text

DEFAULT_CORPUS = Path("/root/.cache/kikimimi/open-corpus/corpus-all")
DEFAULT_OUT = Path("/root/.cache/kikimimi/open-train/captioner")
#: clips per caption kind: the kinds the open suite tests (speech languages, drum pieces, instrument notes) get most;
#: 7,638 clips, 4.92 h (the shipped open-captioner-tiny; its first run used speech=700,note=600,syllable=200,
#: letter=150,sample=150,sfx=150,voice=100,event=80,synthetic=40,music=40: 2,916 clips, 1.73 h)
QUOTA = {"speech": 2000, "note": 2000, "drum": 700, "syllable": 600, "letter": 400, "sample": 400, "sfx": 600,
         "voice": 400, "event": 240, "synthetic": 150, "tone": 30, "music": 150}


def build_view(corpus: Path, out: Path, seed: int = 0, quota: dict[str, int] | None = None) -> dict:
    """Write the view's caption table and summary; returns the summary (``clips``, ``hours``, ``kinds``).
    ``quota``: clips per kind over :data:`QUOTA`."""
    quota = {**QUOTA, **(quota or {})}
    with (corpus / "captions.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with (corpus / "corpus.csv").open(newline="", encoding="utf-8") as fh:
        items = {r["file_name"]: r for r in csv.DictReader(fh)}
    by_kind: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, kind in sorted({r["file_name"]: r["kind"] for r in rows}.items()):
        by_kind[kind][items[name]["package"]].append(name)
    rng = random.Random(seed)
    keep: set[str] = set()
    kinds = {}
    for kind, packages in sorted(by_kind.items()):
        pools = [rng.sample(v, len(v)) for _, v in sorted(packages.items())]
        chosen: list[str] = []
        while len(chosen) < quota.get(kind, 0) and any(pools):
            for pool in pools:
                if pool and len(chosen) < quota[kind]:
                    chosen.append(pool.pop())
        keep |= set(chosen)
        hours = sum(float(items[f]["duration_s"]) for f in chosen) / 3600
        kinds[kind] = {"clips": len(chosen), "hours": round(hours, 3)}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["file_name", "caption"])
    w.writerows([f"{corpus}/{r['file_name']}", r["caption"]] for r in rows if r["file_name"] in keep)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train_captions.csv", buf.getvalue())
    summary = {"clips": len(keep), "hours": round(sum(float(items[f]["duration_s"]) for f in keep) / 3600, 3),
               "quota": quota, "kinds": kinds, "seed": seed, "corpus": str(corpus)}
    atomic_write_json(out / "train_view.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quota", default="", metavar="KIND=N,…", help="clips per caption kind over the defaults")
    args = p.parse_args(argv)
    quota = {k: int(v) for k, v in (item.split("=") for item in args.quota.split(",") if item.strip())}
    s = build_view(args.corpus, args.out, quota=quota)
    print(f"{s['clips']} clips, {s['hours']} h → {args.out / 'train_captions.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
