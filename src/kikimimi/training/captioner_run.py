"""Train a captioner from audio files and captions (the library call behind ``kikimimi train-captioner``).

1. read the caption table (``file_name,caption`` CSV or JSON; :class:`~kikimimi.data.captions.CaptionTable`)
   and the optional question–answer list (``file_name,question,answer``) or label QA pairs;
2. compute every captioned clip's frame features ``[T, D]`` once with the frozen audio encoder (unreadable
   clips are reported and skipped);
3. train the mapper (and a small language model when ``train_lm``, or LoRA adapters on the frozen one with
   ``lora``) with the pre-training loop
   (:func:`kikimimi.training.captioner.fit_captioner`; resumable from the run folder);
4. write the captioner folder ``<run>/captioner`` (:func:`~kikimimi.inference.captioner.save_captioner`)
   with the nearest-neighbour bank of the training clips.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from kikimimi.audio.decode import AudioDecodeError, audio_info
from kikimimi.checkpoints.runs import find_resume_checkpoint
from kikimimi.data.caption_qa import caption_examples, read_qa_csv
from kikimimi.data.captions import CaptionTable
from kikimimi.inference.captioner import load_audio_model, save_captioner
from kikimimi.inference.encoder import AudioEncoder
from kikimimi.models.causal_lm import load_causal_lm
from kikimimi.models.lora import LoraSettings, require_peft
from kikimimi.training.captioner import CAPTIONER_DEFAULTS, fit_captioner
from kikimimi.training.trainer import load_training_checkpoint

__all__ = ["CaptionerTraining", "clip_features", "train_captioner"]

Log = Callable[[str], None]


@dataclass
class CaptionerTraining:
    """What :func:`train_captioner` made: the captioner folder, the run folder, per-step losses, skipped files."""

    model_dir: Path
    run_dir: Path
    losses: dict[int, float]
    n_clips: int
    n_examples: int
    skipped: list[dict[str, str]]
    seconds_features: float


def clip_features(encoder: AudioEncoder, paths: Mapping[str, Path], *, batch_size: int = 16,
                  progress: bool = False) -> tuple[dict[str, torch.Tensor], list[dict[str, str]]]:
    """key → frame features ``[T, D]`` of each file; unreadable files go to the second list (``file``,
    ``error``) and are skipped."""
    feats: dict[str, torch.Tensor] = {}
    errors: list[dict[str, str]] = []
    keys = list(paths)
    bar = tqdm(total=len(keys), desc="audio features", unit="clip", dynamic_ncols=True) if progress else None
    for start in range(0, len(keys), batch_size):
        part = keys[start:start + batch_size]
        try:
            frames, _ = encoder.embed_frames([str(paths[k]) for k in part], stack=False)
            done = dict(zip(part, frames, strict=True))
        except (AudioDecodeError, ValueError, OSError):
            done = {}
            for k in part:  # find the bad file(s) one by one
                try:
                    done[k] = encoder.embed_frames(str(paths[k]), stack=False)[0][0]
                except (AudioDecodeError, ValueError, OSError) as exc:
                    errors.append({"file": str(paths[k]), "error": f"{type(exc).__name__}: {exc}"})
        for k, f in done.items():
            feats[k] = torch.as_tensor(np.asarray(f), dtype=torch.float32)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return feats, errors


def train_captioner(
    audio_model: str | os.PathLike,
    captions: str | os.PathLike | CaptionTable,
    run_dir: str | os.PathLike,
    *,
    qa: str | os.PathLike | Mapping[str, Sequence[tuple[str, str]]] | None = None,
    settings: Mapping[str, Any] | None = None,
    resume: bool = False,
    window_s: float | None = None,
    log: Log | None = None,
) -> CaptionerTraining:
    """Train a captioner on the frame features of ``audio_model`` (frozen) and write ``run_dir/captioner``.

    Args:
        audio_model: any encoder :func:`kikimimi.inference.encoder.load` reads (or a pre-training run folder).
        captions: caption table file (keys relative to its folder) or a loaded :class:`CaptionTable`.
        run_dir: the run folder (checkpoints, ``log.jsonl``, ``config.json``, ``captioner/``).
        qa: question–answer CSV (``file_name,question,answer``) or key → [(question, answer)].
        settings: over :data:`kikimimi.training.captioner.CAPTIONER_DEFAULTS` (``lm``, ``steps``, ``batch_size``,
            ``lr``, ``train_lm``, ``lora`` = ``{"rank", "alpha", "targets"}``, ``mapper``…).
        resume: continue the run in ``run_dir`` from its newest checkpoint (its saved settings win over
            ``settings`` but ``steps``/``progress``/``device``).
        window_s: window length for long files at caption time (default: the longest training clip, ≥ 1 s).
        log: receives progress lines; ``None`` = quiet.

    Raises:
        kikimimi.data.captions.CaptionError: unreadable caption/QA lists; ValueError: no usable clip, LoRA
            together with ``train_lm``; kikimimi.models.text.TextEncoderError: ``lora`` without ``peft`` (the
            message names ``pip install "kikimimi[lora]"``);
            kikimimi.training.trainer.TrainingDivergedError: the loss diverged (one line naming ``--lr``).
    """
    log = log or (lambda _line: None)
    run_dir = Path(run_dir)
    s = {**CAPTIONER_DEFAULTS, **dict(settings or {})}
    resume_from = None
    if resume:
        resume_from = find_resume_checkpoint(run_dir)
        saved = load_training_checkpoint(resume_from)["args"]["captioner"]
        saved.setdefault("prefix_norm", False)  # a run started before the prefix was scaled (issue 33) stays as it was
        keep = {k: s[k] for k in ("steps", "progress", "device", "save_every") if settings and k in settings}
        s = {**saved, **keep}
        log(f"resuming {run_dir} from {Path(resume_from).name}")
    if s.get("lora"):  # before any clip is embedded
        LoraSettings.from_dict(s["lora"])
        if s.get("train_lm"):
            raise ValueError("LoRA adapters train on a frozen language model; train_lm trains all of it — choose one")
        require_peft()
    table = captions if isinstance(captions, CaptionTable) else CaptionTable.load(captions)
    qa_pairs = read_qa_csv(qa) if isinstance(qa, (str, os.PathLike)) else dict(qa or {})
    unknown = sorted(set(qa_pairs) - set(table.keys))
    if unknown:
        log(f"note: {len(unknown)} question-answer keys have no caption row and are not used, e.g. {unknown[:3]}")
    t0 = time.perf_counter()
    encoder = load_audio_model(audio_model, device=s.get("device") if s.get("device") != "auto" else None)
    paths = {k: table.path(k) for k in table.keys}
    log(f"audio features of {len(paths)} clips with {audio_model} ({encoder.family}, {encoder.embedding_dim}-d frames)")
    feats, skipped = clip_features(encoder, paths, progress=bool(s.get("progress")))
    for e in skipped:
        log(f"skipped {e['file']}: {e['error']}")
    if not feats:
        raise ValueError(f"{table.source}: none of the {len(paths)} captioned clips could be read")
    seconds_features = time.perf_counter() - t0
    examples = caption_examples({k: table.captions(k) for k in feats},
                                {k: v for k, v in qa_pairs.items() if k in feats})
    lm = load_causal_lm(str(s["lm"]))
    fit = fit_captioner(feats, examples, s, run_dir, resume=resume_from, lm=lm, notice=log)
    if window_s is None:  # the longest training clip (by frames), in seconds
        longest = max(feats, key=lambda k: feats[k].shape[0])
        window_s = max(1.0, float(audio_info(paths[longest]).duration_s))
    bank_keys = sorted(feats)
    bank = torch.stack([encoder.encoder.pool(feats[k]) for k in bank_keys]).numpy()
    model_dir = save_captioner(
        run_dir / "captioner", mapper=fit.method.mapper, lm=fit.method.language_model, tokenizer=fit.tokenizer,
        lm_trained=bool(s["train_lm"]), lm_spec=str(s["lm"]), audio_model=audio_model, lora=fit.method.lora_settings,
        audio_embedding_dim=encoder.embedding_dim, window_s=float(window_s),
        training={"run_dir": str(run_dir), "steps": fit.result.step, "captions": table.source,
                  "n_clips": len(feats), "n_examples": len(fit.dataset), "skipped": len(skipped),
                  "final_loss": fit.result.losses.get(fit.result.step)},
        nn_bank=(bank, bank_keys, [table.captions(k)[0] for k in bank_keys]),
    )  # fmt: skip
    last = fit.result.losses.get(fit.result.step)
    log(f"captioner trained for {fit.result.step} steps" + (f", final loss {last:.4f}" if last is not None else "")
        + f"; wrote {model_dir}")
    return CaptionerTraining(model_dir, run_dir, fit.result.losses, len(feats), len(fit.dataset), skipped,
                             seconds_features)
