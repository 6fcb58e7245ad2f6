"""Evidence of long files in bounded memory, and the time per question: `kikimimi.inference.evidence` on generated
WAVs (issue 30).

Each duration runs in a fresh subprocess: load an M2D-CLAP 2025-layout model of ``--size`` (random weights,
official layout; a bag-of-words hash text encoder), build the evidence of the file streamed (10-s segments, the
packaged vocabulary), answer a few questions by rules, then — the baseline, in the same process — decode the whole
file into memory (``load_audio``). Printed: peak RSS after loading the model, after the evidence and after the
whole-file decode (``resource.getrusage``), so the evidence's growth is compared with what one copy of the
waveform costs; wall seconds of the evidence and mean milliseconds per rule-answered question.

Usage: nice -n 10 python benchmarks/bench_evidence_long.py [--hours 0.0028 1] [--size tiny] [--threads 2] [--spectrum]
(0.0028 h = a 10-s clip; ``--spectrum``: a cheap spectral stand-in for the ViT, to measure the streaming itself
over hours in minutes)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import cpu_model  # noqa: E402
from bench_long_file import write_long_wav  # noqa: E402

QUESTIONS = ("What sounds are in it?", "When does the dog bark?", "Is it silent at 0:05?", "Which part is the loudest?",
             "how many times is there speech?")

CHILD = r"""
import json, resource, sys, time, zlib
import torch
torch.set_num_threads({threads})

class HashText:
    name = "hash-64"
    def encode(self, texts, batch_size=32):
        out = torch.zeros(len(texts), 64)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i] += torch.randn(64, generator=torch.Generator().manual_seed(zlib.crc32(w.encode())))
        return out

def kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

from kikimimi.audio.decode import load_audio
from kikimimi.inference.clap import load_clap
from kikimimi.inference.evidence import EvidenceSettings, build_evidence
from kikimimi.inference.grounded import rule_answer
from kikimimi.inference.listener import default_labels
class Spectrum:  # a stand-in CLAP: 64 log band energies; isolates the streaming from the network's working set
    sample_rate, temperature_scale = 16000, 10.0
    def encode_audio(self, waves, sample_rate=None, batch_size=8):
        import numpy as np
        return np.stack([np.log1p(np.abs(np.fft.rfft(w))[: 64 * 1000].reshape(64, -1).mean(1)) for w in waves])
    def encode_text(self, texts):
        return HashText().encode(texts).numpy()

clap = Spectrum() if {spectrum!r} else load_clap({model!r}, text_encoder=HashText(), device="cpu", precision="fp32")
clap.encode_text(["warm up"])
loaded = kb()
t = time.perf_counter()
ev = build_evidence({wav!r}, clap, default_labels(), EvidenceSettings(segment_s=10.0))
build_s = time.perf_counter() - t
after = kb()
t = time.perf_counter()
for q in {questions!r}:
    a = rule_answer(ev, q)
ask_ms = (time.perf_counter() - t) * 1000 / len({questions!r})
wave, _ = load_audio({wav!r}, 16000)
whole = kb()
print("RESULT", json.dumps({{"loaded_mb": loaded / 1024, "evidence_mb": after / 1024, "whole_mb": whole / 1024,
      "build_s": build_s, "ask_ms": ask_ms, "segments": len(ev.segments), "duration_s": ev.duration_s,
      "wave_mb": wave.nbytes / 2**20, "last_answer": a.text}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, nargs="+", default=[10 / 3600, 1.0])
    ap.add_argument("--size", default="tiny", choices=("tiny", "small", "base"), help="ViT size")
    ap.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    ap.add_argument("--tmp", help="folder for the generated files (default: a temporary folder)")
    ap.add_argument("--spectrum", action="store_true",
                    help="a cheap spectral stand-in instead of the ViT: the streaming's own memory over long files")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    import official_layouts as ol

    from kikimimi.models.vit import VIT_SIZES

    dim, depth, _ = VIT_SIZES[args.size]
    what = ("a spectral stand-in for CLAP (64 band energies)" if args.spectrum else
            f"M2D-CLAP 2025 layout, ViT-{args.size} ({dim}-d, {depth} blocks), random weights")
    print(f"CPU: {cpu_model()}; {args.threads} thread(s); {what}; 10-s segments; the packaged vocabulary")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        inner = ol.m2d_encoder_state(embed_dim=dim, depth=depth, norm_stats=ol.CLAP2025_NORM_STATS)
        inner.update(ol.clap2025_proj_state(dim, 1, 1.0, text_proj="linear", text_dim=64))
        model = ol.write_state(tmp / "m2d_clap_vit_base-80x608p16x16-2025bench" / "checkpoint-30.pth",
                               {f"backbone.{k}": v for k, v in inner.items()}, "model")
        for hours in args.hours:
            wav = tmp / f"{hours:g}h.wav"
            write_long_wav(wav, max(hours, 1 / 60))  # whole minutes (a shorter clip: one, cut below)
            if hours < 1 / 60:  # a short clip: cut the minute
                import soundfile as sf

                data, sr = sf.read(wav, frames=int(round(hours * 3600 * 16000)), dtype="float32")
                sf.write(wav, data, sr, subtype="PCM_16")
            code = CHILD.format(threads=args.threads, model=str(model), wav=str(wav), questions=QUESTIONS,
                                spectrum=args.spectrum)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.split("RESULT", 1)[1])
            grew, whole = r["evidence_mb"] - r["loaded_mb"], r["whole_mb"] - r["evidence_mb"]
            print(f"{r['duration_s']:.0f} s ({wav.stat().st_size / 1e6:.0f} MB WAV, {r['segments']} segments): "
                  f"peak RSS {r['loaded_mb']:.0f} MB with the model, {r['evidence_mb']:.0f} MB after the evidence "
                  f"(+{grew:.0f} MB) in {r['build_s']:.1f} s; whole-file decode baseline +{whole:.0f} MB more "
                  f"(waveform {r['wave_mb']:.0f} MB); {r['ask_ms']:.2f} ms per rule-answered question", flush=True)
            wav.unlink()


if __name__ == "__main__":
    main()
