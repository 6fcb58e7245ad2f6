"""A folder of good and broken audio files, the same for every batch command of the fault suite.

:func:`fault_folder` writes good clips next to each kind of bad input a user meets: an empty file, text
renamed to ``.wav``, a truncated WAV, float samples that are NaN, a WAV with no samples, a header that claims
8 hours (and 4 GB) of audio that is not there, and (when the tests do not run as root, which reads anything) a
file without read permission. A 0.01-s clip is *good*: commands pad it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


@dataclass
class FaultFolder:
    """``root`` holds ``good`` files (to be processed) and ``bad`` ones (file → what is wrong, for the reader)."""

    root: Path
    good: list[Path] = field(default_factory=list)
    bad: dict[Path, str] = field(default_factory=dict)

    @property
    def all(self) -> list[Path]:
        return sorted([*self.good, *self.bad])


def tone(seconds: float, freq: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav_header(n_data_bytes: int, rate: int = RATE, channels: int = 1, bits: int = 16) -> bytes:
    """A canonical 44-byte PCM WAV header announcing ``n_data_bytes`` of samples."""
    block = channels * bits // 8
    riff_size = min(36 + n_data_bytes, 0xFFFFFFFF)
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
            rate * block, block, bits) + b"data" + struct.pack("<I", min(n_data_bytes, 0xFFFFFFFF)))


def fault_folder(root: Path, n_good: int = 4, good_seconds: float = 1.2) -> FaultFolder:
    """Write the mixed folder under ``root`` (created) and describe it."""
    root.mkdir(parents=True, exist_ok=True)
    ff = FaultFolder(root)
    for i in range(n_good):
        path = root / f"good {i:02d}.wav"  # a space in every name
        sf.write(path, tone(good_seconds, 220.0 * (i + 1)), RATE, subtype="PCM_16")
        ff.good.append(path)
    path = root / "ünïcode-flac.flac"
    sf.write(path, tone(good_seconds, 330.0), RATE)
    ff.good.append(path)
    path = root / "short 0.01 s.wav"
    sf.write(path, tone(0.01, 440.0), RATE, subtype="PCM_16")
    ff.good.append(path)

    (root / "empty.wav").write_bytes(b"")
    ff.bad[root / "empty.wav"] = "empty file"
    (root / "notes.wav").write_text("this is a text file renamed to .wav\n" * 20)
    ff.bad[root / "notes.wav"] = "text, not audio"
    full = (tone(1.0, 500.0) * 32767).astype("<i2").tobytes()
    (root / "truncated.wav").write_bytes(_wav_header(len(full)) + full[: len(full) // 3])
    ff.bad[root / "truncated.wav"] = "two thirds of the samples missing"
    nan = tone(1.0, 600.0)
    nan[100:200] = np.nan
    sf.write(root / "nan.wav", nan, RATE, subtype="FLOAT")
    ff.bad[root / "nan.wav"] = "NaN samples"
    (root / "zero-samples.wav").write_bytes(_wav_header(0))
    ff.bad[root / "zero-samples.wav"] = "no samples"
    eight_hours = 8 * 3600 * RATE * 2
    (root / "claims-8-hours.wav").write_bytes(_wav_header(eight_hours) + full[:3200])
    ff.bad[root / "claims-8-hours.wav"] = "header claims 8 h, file holds 0.1 s"
    (root / "claims-4-GB.wav").write_bytes(_wav_header(2**32 - 64) + full[:3200])
    ff.bad[root / "claims-4-GB.wav"] = "header claims 4 GB"
    if os.geteuid() != 0:  # root reads files without permission bits
        path = root / "no-permission.wav"
        sf.write(path, tone(1.0, 700.0), RATE, subtype="PCM_16")
        path.chmod(0)
        ff.bad[path] = "unreadable (permission)"
    return ff


def named_once(text: str, path: Path) -> bool:
    """Exactly one line of ``text`` names ``path`` (by its file name)."""
    return sum(path.name in line for line in text.splitlines()) == 1


def write_tagger(root: Path) -> tuple[Path, Path]:
    """A tiny AudioSet-style tagger (official EVAR fine-tuned layout, 3 classes) and its labels CSV under ``root``."""
    import official_layouts as ol
    import torch

    folder = root / "m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d"
    folder.mkdir(parents=True)
    model = folder / "weights_ep69it3124-0.48494.pth"
    torch.save(ol.evar_finetuned(embed_dim=64, depth=2, n_classes=3), model)
    labels = root / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/c,Cat\n1,/m/a,Alarm\n2,/m/b,Bird\n")
    return model, labels
