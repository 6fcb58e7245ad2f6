"""Pre-training data: corpora, fixed-length log-mel crops, deterministic sampling.

A *corpus* is one or more audio folders / CSV file lists (decoded and converted to log-mel on the fly)
or one or more ``kikimimi prep`` caches (a folder with ``manifest.csv`` whose ``file_name`` column names
``.npy`` log-mels ``[n_mels, frames]`` relative to the folder, and ``prep.json`` naming the preset).

:class:`CropDataset` yields ``{"lms": [F, crop_frames]}`` float32 log-mel crops, normalised with the run's
:class:`~kikimimi.features.normstats.NormStats` (``(x − mean) / std``) when given.

Determinism: item ``i`` of epoch ``e`` draws all its randomness (crop start, replacement of an
unreadable file) from ``np.random.default_rng((seed, e, i))``. Items therefore do not depend on the
number of DataLoader workers, on the order they are fetched in, or on whether the run was resumed.
:class:`EpochSampler` yields ``(epoch, i)`` keys so persistent workers always know the epoch.

Short items:
- audio, ``pad_mode="wave_zero"`` (default, official M2D): the waveform is right-padded with zeros
  (digital silence) to the crop length *before* the front end;
- ``pad_mode="log_silence"`` (default for caches): the log-mel is right-padded with ``ln(eps)``
  (≈ −15.94, the log-mel of digital silence) — the same value ``wave_zero`` produces away from the edge;
- ``pad_mode="log_zero"`` (official fallback in the M2D dataset class): the log-mel is right-padded with
  the value 0 in the *unnormalised* log domain (a loud constant, not silence).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from kikimimi.audio.decode import load_audio
from kikimimi.data.official_lists import is_lms_list, read_file_list
from kikimimi.features.frontend import FrontendConfig, LogMelSpectrogram, get_preset, log_mel
from kikimimi.features.normstats import NormStats
from kikimimi.features.prep_cache import cache_entries, cache_preset, is_prep_cache, open_log_mel
from kikimimi.fileio import collect_audio_files

__all__ = [
    "PAD_MODES",
    "Corpus",
    "resolve_corpus",
    "CropDataset",
    "EpochSampler",
    "make_loader",
    "estimate_norm_stats",
    "DeviceLogMel",
]

PAD_MODES = ("wave_zero", "log_silence", "log_zero")
#: replacement attempts for an unreadable item before giving up
MAX_REPLACEMENTS = 20
#: first entropy word of the crop generators used for normalisation statistics
STATS_KEY = 0x5747


# ---------------------------------------------------------------------------------------------- corpus
@dataclass
class Corpus:
    """A resolved list of training items.

    ``kind`` is ``"audio"`` (``files`` are audio files) or ``"cache"`` (``files`` are ``.npy`` log-mels);
    ``preset`` is the front-end preset name recorded in a cache's ``prep.json`` (``None`` for audio);
    ``default_pad`` is the padding used when a run names none (``None``: ``wave_zero`` for audio, ``log_silence``
    for caches; official ``files_*.csv`` log-mel lists: ``log_zero``, as NTT's dataset pads, fact sheet §4).
    """

    kind: str
    files: list[Path]
    preset: str | None = None
    sources: list[str] = field(default_factory=list)
    default_pad: str | None = None

    def __len__(self) -> int:
        return len(self.files)


def resolve_corpus(inputs: Sequence[str | Path]) -> Corpus:
    """Resolve ``--data`` arguments into a :class:`Corpus`.

    Each input is a prep cache folder, an audio folder (searched recursively), a CSV list of audio files
    (see :func:`kikimimi.fileio.collect_audio_files`) or an official ``files_*.csv`` list of log-mel ``.npy`` files
    (:func:`kikimimi.data.official_lists.read_file_list`: missing files named in one warning and skipped). Caches,
    log-mel lists and audio sources cannot be mixed.

    Raises:
        ValueError: no inputs, an input that does not exist, mixed kinds, caches with different presets, or no
            files found.
    """
    if not inputs:
        raise ValueError("no training data given (--data FOLDER|CSV|CACHE ...)")
    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing:
        raise ValueError(f"--data: no such file or folder: {', '.join(repr(m) for m in missing)}")
    caches = [Path(p) for p in inputs if is_prep_cache(p)]
    lms_lists = [Path(p) for p in inputs if is_lms_list(p)]  # official files_*.csv over *_lms trees
    others = [Path(p) for p in inputs if not is_prep_cache(p) and not is_lms_list(p)]
    if lms_lists:
        if caches or others:
            raise ValueError(
                f"cannot mix log-mel file lists ({lms_lists[0]}) with other --data ({(caches + others)[0]}) in one "
                "corpus"
            )
        files = [f for lst in lms_lists for f in read_file_list(lst).files]
        return Corpus("cache", files, None, [str(p) for p in lms_lists], default_pad="log_zero")
    if caches and others:
        raise ValueError(
            f"cannot mix prep caches ({caches[0]}) and audio sources ({others[0]}) in one corpus; "
            "prep the audio too, or train from audio only"
        )
    if caches:
        files: list[Path] = []
        presets = set()
        for root in caches:
            presets.add(cache_preset(root))
            files.extend(cache_entries(root))
        if len(presets) > 1:
            raise ValueError(f"prep caches were made with different presets {sorted(map(str, presets))}")
        if not files:
            raise ValueError(f"prep caches {[str(c) for c in caches]} list no files")
        return Corpus("cache", files, presets.pop(), [str(c) for c in caches])
    files = list(collect_audio_files([str(p) for p in others]))
    if not files:
        raise ValueError(f"no audio files found in {[str(p) for p in others]}")
    return Corpus("audio", [Path(f) for f in files], None, [str(p) for p in others])


# ---------------------------------------------------------------------------------------------- dataset
def _frontend_config(frontend: Any) -> FrontendConfig:
    if isinstance(frontend, FrontendConfig):
        return frontend
    if isinstance(frontend, str):
        return get_preset(frontend)
    if isinstance(frontend, dict):
        return FrontendConfig.from_dict(frontend)
    raise TypeError(f"frontend must be a FrontendConfig, preset name or dict, got {type(frontend).__name__}")


#: training files already reported as unreadable in this process
_WARNED_PATHS: set[str] = set()


class CropDataset(Dataset):
    """Random fixed-length log-mel crops ``[F, crop_frames]`` of a :class:`Corpus`.

    Args:
        corpus: the items (audio files or cached ``.npy`` log-mels).
        crop_frames: crop length in frames (e.g. 608 for M2D 80x608, 96 for BYOL-A).
        frontend: front-end config / preset name; required for audio, used to check ``n_mels`` of caches.
        norm_stats: normalisation applied to every crop (``None`` = raw log-mel).
        seed: data seed; item ``i`` of epoch ``e`` uses ``np.random.default_rng((seed, e, i))``.
        min_epoch_size: repeat the file list (whole copies) until an epoch has at least this many items.
        pad_mode: ``wave_zero`` (audio default), ``log_silence`` (cache default) or ``log_zero``.
        output: ``"lms"`` (log-mel crops) or ``"wave"`` (waveform crops of ``(crop_frames − 1) × hop``
            samples for a front end run on the training device, see :class:`DeviceLogMel`; audio only).

    ``dataset[(epoch, i)]`` → ``{"lms": FloatTensor [F, crop_frames]}`` (or ``{"wave": [samples]}``);
    an int key means epoch 0.
    """

    def __init__(
        self,
        corpus: Corpus,
        crop_frames: int,
        *,
        frontend: Any = None,
        norm_stats: Any = None,
        seed: int = 0,
        min_epoch_size: int = 0,
        pad_mode: str | None = None,
        output: str = "lms",
    ) -> None:
        if crop_frames <= 0:
            raise ValueError(f"crop_frames must be positive, got {crop_frames}")
        if len(corpus) == 0:
            raise ValueError("the corpus is empty")
        if pad_mode is None:
            pad_mode = corpus.default_pad or ("wave_zero" if corpus.kind == "audio" else "log_silence")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if pad_mode == "wave_zero" and corpus.kind != "audio":
            raise ValueError("pad_mode 'wave_zero' needs audio input; a prep cache holds log-mels already")
        if output not in ("lms", "wave"):
            raise ValueError(f"output must be 'lms' or 'wave', got {output!r}")
        if output == "wave" and (corpus.kind != "audio" or pad_mode != "wave_zero"):
            raise ValueError(
                "output='wave' (front end on the device) needs audio input and pad_mode 'wave_zero'"
            )
        if frontend is None and corpus.kind == "cache" and corpus.preset:
            frontend = corpus.preset
        if frontend is None and corpus.kind == "audio":
            raise ValueError("a front-end config (or preset name) is needed to train from audio files")
        self.corpus = corpus
        self.crop_frames = int(crop_frames)
        self.frontend = _frontend_config(frontend) if frontend is not None else None
        self.norm_stats = norm_stats
        self.seed = int(seed)
        self.pad_mode = pad_mode
        self.output = output
        n = len(corpus)
        self.repeats = max(1, math.ceil(int(min_epoch_size) / n)) if min_epoch_size else 1
        self.eps = float(self.frontend.eps) if self.frontend is not None else FrontendConfig.eps

    # -- sizes
    def __len__(self) -> int:
        return len(self.corpus) * self.repeats

    @property
    def n_mels(self) -> int | None:
        return None if self.frontend is None else int(self.frontend.n_mels)

    @property
    def crop_samples(self) -> int:
        """Waveform crop length giving exactly ``crop_frames`` frames: ``(crop_frames − 1) × hop`` samples."""
        if self.frontend is None:
            raise ValueError("crop_samples needs a front-end config")
        return (self.crop_frames - 1) * int(self.frontend.hop_length)

    def item_rng(self, epoch: int, index: int) -> np.random.Generator:
        """The generator for item ``index`` of ``epoch``: ``np.random.default_rng((seed, epoch, index))``."""
        return np.random.default_rng((self.seed, int(epoch), int(index)))

    # -- loading
    def _pad_log(self, lms: np.ndarray) -> np.ndarray:
        missing = self.crop_frames - lms.shape[1]
        if missing <= 0:
            return lms
        value = 0.0 if self.pad_mode == "log_zero" else math.log(self.eps)
        pad = np.full((lms.shape[0], missing), value, dtype=np.float32)
        return np.concatenate([lms, pad], axis=1)

    def _crop_cache(self, path: Path, rng: np.random.Generator) -> np.ndarray:
        lms = open_log_mel(path, self.n_mels)
        frames = lms.shape[1]
        if frames > self.crop_frames:
            start = int(rng.integers(0, frames - self.crop_frames + 1))
            lms = lms[:, start : start + self.crop_frames]
        out = np.array(lms, dtype=np.float32)
        return self._pad_log(out)

    def _crop_wave(self, path: Path, rng: np.random.Generator) -> np.ndarray:
        wave, _ = load_audio(path, int(self.frontend.sample_rate))
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"decoded to an empty or multi-channel array of shape {wave.shape}")
        need = self.crop_samples
        if wave.size > need:
            start = int(rng.integers(0, wave.size - need + 1))
            wave = wave[start : start + need]
        elif wave.size < need and self.pad_mode == "wave_zero":
            wave = np.concatenate([wave, np.zeros(need - wave.size, dtype=np.float32)])
        return wave

    def _crop_audio(self, path: Path, rng: np.random.Generator) -> np.ndarray:
        wave = self._crop_wave(path, rng)
        if wave.size < self.frontend.min_samples:  # too short for the reflect-padded STFT
            wave = np.concatenate([wave, np.zeros(self.frontend.min_samples - wave.size, dtype=np.float32)])
        lms = np.asarray(log_mel(wave, self.frontend), dtype=np.float32)[:, : self.crop_frames]
        return self._pad_log(lms)

    def raw_item(self, epoch: int, index: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Un-normalised crop ``[F, crop_frames]`` (or waveform ``[samples]`` for ``output='wave'``).

        ``rng`` replaces the item's own generator (used by :func:`estimate_norm_stats`).
        An unreadable file is reported once per process with a :class:`UserWarning` and replaced by
        another file chosen with the item's own generator (deterministic).

        Raises:
            IndexError: ``index`` outside ``[0, len(self))``.
            RuntimeError: :data:`MAX_REPLACEMENTS` consecutive files failed to load.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} outside the epoch of {len(self)} items")
        if rng is None:
            rng = self.item_rng(epoch, index)
        file_index = index % len(self.corpus)
        failures: list[str] = []
        for _ in range(MAX_REPLACEMENTS + 1):
            path = self.corpus.files[file_index]
            try:
                if self.corpus.kind == "cache":
                    return self._crop_cache(path, rng)
                if self.output == "wave":
                    return self._crop_wave(path, rng)
                return self._crop_audio(path, rng)
            except (OSError, ValueError, EOFError, RuntimeError) as err:
                msg = f"'{path}': {err}"
                failures.append(msg)
                if str(path) not in _WARNED_PATHS:  # once per process, across datasets (statistics, training)
                    _WARNED_PATHS.add(str(path))
                    warnings.warn(f"skipping unreadable training item {msg}", UserWarning, stacklevel=2)
                file_index = int(rng.integers(0, len(self.corpus)))
        raise RuntimeError(
            f"{len(failures)} training files in a row failed to load (last: {failures[-1]}); "
            "check the corpus (kikimimi info) or remove the broken files from the list"
        )

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        item = self.raw_item(int(epoch), int(index))
        if self.output == "wave":
            return {"wave": torch.from_numpy(np.ascontiguousarray(item))}
        if self.norm_stats is not None:
            item = (item - float(self.norm_stats.mean)) / float(self.norm_stats.std)
        return {"lms": torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))}


# ---------------------------------------------------------------------------------------------- sampling
class EpochSampler(Sampler):
    """Shuffled, rank-sharded ``(epoch, index)`` keys for :class:`CropDataset`.

    Wraps :class:`torch.utils.data.DistributedSampler` (``shuffle=True``, ``drop_last=True``, seeded with
    ``seed``; the order of epoch ``e`` is a function of ``(seed, e)`` only). :meth:`set_epoch` selects the
    epoch; :meth:`set_start` skips the first ``n`` keys of this rank's order (exact mid-epoch resume).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.inner = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.inner.set_epoch(self.epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, index in enumerate(self.inner):
            if pos >= self.start:
                yield (self.epoch, int(index))


def make_loader(
    dataset: CropDataset,
    batch_size: int,
    *,
    num_replicas: int = 1,
    rank: int = 0,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, EpochSampler]:
    """A DataLoader over ``dataset`` with an :class:`EpochSampler` (full batches only).

    Workers are persistent when ``num_workers > 0``; the loader has its own ``torch.Generator`` so
    creating an iterator never consumes the global torch RNG.

    Raises:
        ValueError: a rank's share of the epoch is smaller than one batch.
    """
    sampler = EpochSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
    if len(sampler) < batch_size:
        raise ValueError(
            f"each of the {num_replicas} rank(s) gets {len(sampler)} items per epoch, fewer than the batch "
            f"size {batch_size}; lower --batch-size or raise --min-epoch-size"
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


# ---------------------------------------------------------------------------------------------- statistics
def estimate_norm_stats(
    dataset: CropDataset, n_samples: int = 10000, seed: int = 0, *, num_workers: int = 0
) -> NormStats:
    """Global scalar mean/std of ``n_samples`` un-normalised crops drawn with replacement.

    Items are drawn with ``np.random.default_rng(seed)``; sample ``j`` is cropped with
    ``np.random.default_rng((STATS_KEY, seed, j))`` (apart from any training crop); each crop is
    already cut/padded to ``crop_frames`` as in training (official M2D procedure).
    Returns a :class:`kikimimi.features.normstats.NormStats`; population std over all bins and frames.
    """
    if dataset.output != "lms":
        raise ValueError("norm statistics need log-mel crops (output='lms')")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(dataset), size=int(n_samples))
    keys = [int(i) for i in indices]

    class _Raw(Dataset):
        def __len__(self) -> int:
            return len(keys)

        def __getitem__(self, j: int) -> torch.Tensor:
            crop_rng = np.random.default_rng((STATS_KEY, int(seed), j))
            return torch.from_numpy(dataset.raw_item(0, keys[j], rng=crop_rng))

    loader = DataLoader(_Raw(), batch_size=64, num_workers=num_workers, shuffle=False)
    total = 0.0
    total_sq = 0.0
    count = 0
    for batch in loader:
        x = batch.double()
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += x.numel()
    mean = total / count
    var = max(0.0, total_sq / count - mean * mean)
    return NormStats(float(mean), float(math.sqrt(var)))


# -------------------------------------------------------------------------------------- device front end
class DeviceLogMel(torch.nn.Module):
    """Front end on the training device: ``{"wave": [B, samples]}`` → ``{"lms": [B, F, crop_frames]}``.

    Applies :class:`kikimimi.features.frontend.LogMelSpectrogram`, keeps the first ``crop_frames`` frames and
    normalises with ``norm_stats`` (when given). Use with ``CropDataset(output="wave")``.
    """

    def __init__(self, frontend: Any, crop_frames: int, norm_stats: Any = None) -> None:
        super().__init__()
        self.melspec = LogMelSpectrogram(_frontend_config(frontend))
        self.crop_frames = int(crop_frames)
        self.mean = None if norm_stats is None else float(norm_stats.mean)
        self.std = None if norm_stats is None else float(norm_stats.std)

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        lms = self.melspec(batch["wave"].float())[..., : self.crop_frames]
        if self.mean is not None:
            lms = (lms - self.mean) / self.std
        out = {k: v for k, v in batch.items() if k != "wave"}
        out["lms"] = lms
        return out
