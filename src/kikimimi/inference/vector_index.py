"""A store of unit vectors searched by inner product (= cosine): exact below a size, approximate above it.

:class:`VectorIndex` holds ``[N, D]`` float32 rows (normalised on the way in) and answers
``search(queries [Q, D], k) -> (scores [Q, k], rows [Q, k])`` with row positions ``0..N-1`` (``-1`` pads a
result shorter than ``k``). The kind is chosen once, when the index is built, and recorded by
:meth:`VectorIndex.describe` (the search index keeps it in its manifest):

- ``"numpy"``: exact, a float32 matrix product — used when ``faiss`` is not installed (small indexes);
- ``"flat"``: exact, ``faiss.IndexFlatIP`` — below ``exact_below`` rows (default :data:`EXACT_BELOW`);
  same rows and (to float32 rounding) the same scores as ``"numpy"``;
- ``"ivf"``: approximate, ``faiss.IndexIVFFlat`` (inverted lists over a k-means coarse quantiser, trained
  with 10 iterations on at most 64 rows per list) — the
  automatic choice above the threshold, because it builds in seconds on a laptop even for a million rows;
  ``nprobe`` (lists visited per query) is calibrated at build time so that the recall@10 against exact
  search reaches ``target_recall`` on held-out queries both near the data and in random directions
  (:meth:`VectorIndex.calibrate`); the measured values are recorded. When that takes
  more than a quarter of the lists (data without structure, e.g. uniformly random directions), ``"auto"``
  keeps exact ``"flat"`` search instead and records why;
- ``"hnsw"``: approximate, ``faiss.IndexHNSWFlat`` (graph search; only when asked for: its build time grows
  quickly with the number of rows).

Positions stay contiguous: :meth:`add` appends rows at the end, :meth:`remove` deletes rows and the rows
after them move up, as in a list. Approximate indexes are persisted with :meth:`save` (one ``.npz``
holding the serialised faiss index and its row labels, written atomically); exact ones are rebuilt from the
vectors, which costs one pass over them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.fileio import atomic_open

__all__ = ["EXACT_BELOW", "KINDS", "VectorIndex", "VectorIndexError", "faiss_available", "normalise",
           "recall_at_k"]

#: Rows from which ``kind="auto"`` switches from exact to approximate search.
EXACT_BELOW = 100_000
KINDS = ("auto", "numpy", "flat", "ivf", "hnsw")
_APPROXIMATE = ("ivf", "hnsw")


class VectorIndexError(ValueError):
    """A vector index cannot be built, read or searched; the message names the file or the setting."""


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package (``pip install "kikimimi[serve]"``) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise VectorIndexError('this vector index kind needs faiss: pip install "kikimimi[serve]"') from exc
    return faiss


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, ``[N, D]`` float32 C-contiguous (all-zero rows stay zero)."""
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k, for row arrays ``[Q, ≥k]``."""
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k) if hits else 1.0


def _exact_topk(base: np.ndarray, queries: np.ndarray, k: int, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product with numpy, in blocks of rows (bounded memory); best first."""
    q, n = queries.shape[0], base.shape[0]
    k_eff = min(k, n)
    best_s = np.full((q, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((q, 0), dtype=np.int64)
    for start in range(0, n, block):
        scores = queries @ base[start:start + block].T  # [Q, b]
        take = min(k_eff, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < scores.shape[1] else \
            np.broadcast_to(np.arange(scores.shape[1]), (q, scores.shape[1]))
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        # best first; equal scores: the lower row first (the same order as faiss' flat index)
        order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k_eff]
        best_s = np.take_along_axis(cand_s, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    return best_s.astype(np.float32), best_i


def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[1] >= k:
        return scores[:, :k], rows[:, :k]
    extra = k - scores.shape[1]
    return (np.concatenate([scores, np.full((scores.shape[0], extra), -np.inf, np.float32)], axis=1),
            np.concatenate([rows, np.full((rows.shape[0], extra), -1, np.int64)], axis=1))


class VectorIndex:
    """Unit vectors ``[N, D]`` searched by inner product; see the module docstring for the kinds.

    Build with :meth:`build`; ``kind`` is the kind in use (never ``"auto"``), ``dim`` the vector size.
    """

    def __init__(self, dim: int, kind: str, *, params: dict[str, Any] | None = None) -> None:
        if kind not in KINDS or kind == "auto":
            raise VectorIndexError(f"unknown vector index kind {kind!r}; expected one of {KINDS[1:]}")
        self.dim = int(dim)
        self.kind = kind
        self.params: dict[str, Any] = dict(params or {})
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)  # "numpy" only
        self._faiss: Any = None  # "flat": IndexFlatIP; "ivf": IndexIVFFlat; "hnsw": IndexHNSWFlat in IndexIDMap2
        self._labels = np.zeros(0, dtype=np.int64)  # position → faiss label (approximate kinds)
        self._next_label = 0
        self._position: np.ndarray = np.zeros(0, dtype=np.int64)  # label → position (-1: removed)

    # ------------------------------------------------------------------ building
    @classmethod
    def choose_kind(cls, n_rows: int, kind: str = "auto", exact_below: int = EXACT_BELOW) -> str:
        """The kind ``kind="auto"`` resolves to for ``n_rows`` rows (and whether faiss is installed)."""
        if kind not in KINDS:
            raise VectorIndexError(f"unknown vector index kind {kind!r}; expected one of {KINDS}")
        if kind != "auto":
            return kind
        if not faiss_available():
            return "numpy"
        return "flat" if n_rows < exact_below else "ivf"

    @classmethod
    def build(cls, vectors: np.ndarray, *, kind: str = "auto", exact_below: int = EXACT_BELOW,
              target_recall: float = 0.95, nlist: int | None = None, hnsw_m: int = 32, seed: int = 0,
              trained_from: VectorIndex | None = None) -> VectorIndex:
        """Index ``vectors`` ``[N, D]`` (normalised here).

        Args:
            kind: ``"auto"`` (exact below ``exact_below`` rows, else ``"ivf"``; ``"numpy"`` without faiss) or
                one of :data:`KINDS`.
            target_recall: the recall@10 the approximate kinds are calibrated to reach (``nprobe`` / ``efSearch``).
            nlist: IVF lists (default ``4·sqrt(N)``, 16..65536).
            seed: seeds k-means and the calibration queries.
            trained_from: an IVF index of the same dimension whose coarse quantiser is reused (no k-means)
                when it was trained on at least a quarter of ``N`` rows.
        """
        base = normalise(vectors) if len(vectors) else np.zeros((0, np.asarray(vectors).shape[-1]), np.float32)
        n, dim = base.shape
        chosen = cls.choose_kind(n, kind, exact_below)
        if chosen in _APPROXIMATE and n < 2:
            chosen = "flat"
        index = cls(dim, chosen)
        if kind != "auto":
            reason = f"kind {chosen!r} requested"
        elif chosen == "numpy":
            reason = "faiss not installed (exact numpy search)"
        else:
            reason = f"{n} rows {'<' if chosen == 'flat' else '>='} exact_below={exact_below}"
        index.params["reason"] = reason
        index.params["exact_below"] = int(exact_below)
        if chosen == "numpy":
            index._matrix = base
            return index
        faiss = _faiss()
        if chosen == "flat":
            index._faiss = faiss.IndexFlatIP(dim)
            index._faiss.add(base)
            return index
        if chosen == "ivf":
            reuse = (trained_from is not None and trained_from.kind == "ivf" and trained_from.dim == dim
                     and trained_from.params.get("trained_rows", 0) * 4 >= n)
            if reuse:
                inner = faiss.clone_index(trained_from._faiss)
                inner.reset()
                index.params.update({k: trained_from.params[k] for k in ("nlist", "trained_rows")})
            else:
                lists = int(nlist or min(65536, max(16, round(4 * math.sqrt(n)))))
                lists = max(1, min(lists, n // 39 if n >= 39 * 16 else max(1, n // 8)))
                quantizer = faiss.IndexFlatIP(dim)
                inner = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
                rng = np.random.default_rng(seed)
                sample = base if n <= lists * 64 else base[np.sort(rng.choice(n, lists * 64, replace=False))]
                inner.cp.seed = int(seed)
                inner.cp.niter = 10
                inner.train(sample)
                index.params.update({"nlist": lists, "trained_rows": int(sample.shape[0])})
            inner.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by label
        else:  # hnsw (no ids of its own: wrapped in IndexIDMap2)
            inner = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
            index.params["M"] = int(hnsw_m)
        index._faiss = inner if chosen == "ivf" else faiss.IndexIDMap2(inner)
        index.add(base)
        index.calibrate(target_recall, seed=seed)
        if kind == "auto" and not index.pays_off():
            # data where the top 10 are spread over most lists (nearly uniform directions): exact search
            # reads the same vectors without the list overhead
            visited = f"nprobe {index.params['nprobe']} of {index.params['nlist']} lists"
            flat = cls.build(base, kind="flat", exact_below=exact_below)
            flat.params["reason"] = (f"{n} rows >= exact_below={exact_below}, but IVF needed {visited} for "
                                     f"recall@10 >= {target_recall}: exact search is as fast")
            return flat
        return index

    def pays_off(self) -> bool:
        """False for an IVF index whose calibrated ``nprobe`` visits more than a quarter of its lists (then
        exact search costs about the same); True for every other index."""
        if self.kind != "ivf":
            return True
        return int(self.params.get("nprobe", 1)) * 4 <= int(self.params.get("nlist", 1))

    @property
    def size(self) -> int:
        """Number of rows."""
        if self.kind == "numpy":
            return int(self._matrix.shape[0])
        return int(self._faiss.ntotal)

    def __len__(self) -> int:
        return self.size

    @property
    def exact(self) -> bool:
        """Whether results equal exact inner-product search."""
        return self.kind not in _APPROXIMATE

    def describe(self) -> dict[str, Any]:
        """What was built and why, JSON-ready (``kind``, ``rows``, ``dim``, ``library``, parameters,
        calibration)."""
        library = "numpy"
        if self.kind != "numpy":
            library = f"faiss {_faiss().__version__}"
        return {"kind": self.kind, "exact": self.exact, "rows": self.size, "dim": self.dim, "library": library,
                **self.params}

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``[M, D]`` (normalised here) at positions ``N..N+M-1``."""
        new = normalise(vectors) if len(vectors) else np.zeros((0, self.dim), np.float32)
        if new.shape[1] != self.dim:
            raise VectorIndexError(f"cannot add {new.shape[1]}-d vectors to a {self.dim}-d index")
        if self.kind == "numpy":
            self._matrix = np.concatenate([self._matrix, new]) if self._matrix.size else new
            return
        if self.kind == "flat":
            self._faiss.add(new)
            return
        labels = np.arange(self._next_label, self._next_label + new.shape[0], dtype=np.int64)
        self._faiss.add_with_ids(new, labels)
        self._next_label += new.shape[0]
        self._labels = np.concatenate([self._labels, labels])
        self._reposition()

    def remove(self, rows: Sequence[int] | np.ndarray) -> None:
        """Delete the rows at these positions; later rows move up (positions stay ``0..N-1``)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            return
        if rows[0] < 0 or rows[-1] >= self.size:
            raise VectorIndexError(f"cannot remove rows {rows.tolist()[:5]}: the index has {self.size}")
        faiss = None if self.kind == "numpy" else _faiss()
        if self.kind == "numpy":
            self._matrix = np.delete(self._matrix, rows, axis=0)
        elif self.kind == "flat":
            self._faiss.remove_ids(faiss.IDSelectorBatch(rows))  # a flat index renumbers like a list
        else:
            gone = self._labels[rows]
            if self.kind == "hnsw":  # HNSW graphs cannot delete: rebuild from the stored vectors
                keep = np.delete(self._labels, rows)
                kept = self._faiss.reconstruct_batch(keep) if keep.size else np.zeros((0, self.dim), np.float32)
                inner = faiss.IndexHNSWFlat(self.dim, int(self.params.get("M", 32)), faiss.METRIC_INNER_PRODUCT)
                inner.hnsw.efConstruction = 80
                self._faiss = faiss.IndexIDMap2(inner)
                self._labels, self._next_label = np.zeros(0, np.int64), 0
                self.add(kept)
                self._apply_search_params()
                return
            self._faiss.remove_ids(faiss.IDSelectorArray(gone))  # the hashtable direct map needs an array
            self._labels = np.delete(self._labels, rows)
            self._reposition()

    def _reposition(self) -> None:
        pos = np.full(self._next_label, -1, dtype=np.int64)
        pos[self._labels] = np.arange(self._labels.size)
        self._position = pos

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows for each query ``[Q, D]`` (or ``[D]``), best first.

        Returns ``(scores [Q, k] float32 cosine, rows [Q, k] int64)``; missing places are ``(-inf, -1)``.
        """
        q = normalise(queries)
        if q.shape[1] != self.dim:
            raise VectorIndexError(f"query has {q.shape[1]} dims but the index holds {self.dim}-d vectors")
        k = max(0, int(k))
        if k == 0 or self.size == 0:
            return _pad(np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64), k)
        if self.kind == "numpy":
            return _pad(*_exact_topk(self._matrix, q, k), k)
        scores, labels = self._faiss.search(q, min(k, self.size))
        labels = labels.astype(np.int64)
        if self.kind in _APPROXIMATE:
            ok = labels >= 0
            labels = np.where(ok, self._position[np.where(ok, labels, 0)], -1)
        scores = np.where(labels >= 0, scores, -np.inf).astype(np.float32)
        return _pad(scores, labels, k)

    def _apply_search_params(self) -> None:
        if self.kind == "ivf":
            self._faiss.nprobe = int(self.params.get("nprobe", 1))
        elif self.kind == "hnsw":
            _faiss().downcast_index(self._faiss.index).hnsw.efSearch = int(self.params.get("efSearch", 16))

    def vectors(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The stored unit vectors at ``rows`` (all when None), ``[M, D]``."""
        idx = np.arange(self.size) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.kind == "numpy":
            return self._matrix[idx]
        if self.kind == "flat":
            return self._faiss.reconstruct_batch(idx) if idx.size else np.zeros((0, self.dim), np.float32)
        return self._faiss.reconstruct_batch(self._labels[idx]) if idx.size else np.zeros((0, self.dim), np.float32)

    def calibrate(self, target_recall: float = 0.95, *, n_queries: int = 200, k: int = 10, seed: int = 0) -> float:
        """Choose the smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose recall@``k`` against exact search
        reaches ``target_recall`` on two sets of held-out queries, record it and return the lower recall.

        ``near``: stored rows plus Gaussian noise 1.5 times their norm (cosine ≈ 0.55 to their row), the way a
        new sound sits among the data; ``random``: uniformly random directions, the way a query from another
        modality (text) can sit far from every stored row. Exact kinds return 1.0.
        """
        if self.exact:
            return 1.0
        rng = np.random.default_rng(seed + 1)
        n = self.size
        picks = rng.choice(n, min(n_queries, n), replace=False)
        base = self.vectors(picks)
        sets = {"near": normalise(base + 1.5 * normalise(rng.standard_normal(base.shape).astype(np.float32))),
                "random": normalise(rng.standard_normal(base.shape).astype(np.float32))}
        truth = {name: self._exact_truth(q, k) for name, q in sets.items()}
        if self.kind == "ivf":
            nlist = int(self.params["nlist"])
            steps = sorted({min(nlist, s) for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, nlist)})
            name = "nprobe"
        else:
            steps = [16, 32, 64, 128, 256, 512, 1024]
            name = "efSearch"
        recalls: dict[str, float] = {}
        for value in steps:
            self.params[name] = int(value)
            self._apply_search_params()
            recalls = {s: recall_at_k(self.search(q, k)[1], truth[s], k) for s, q in sets.items()}
            if min(recalls.values()) >= target_recall:
                break
        low = min(recalls.values())
        self.params["calibration"] = {"queries": int(len(picks)), "k": int(k), "target_recall": float(target_recall),
                                      f"recall_at_{k}": round(low, 4),
                                      **{f"recall_{s}": round(r, 4) for s, r in recalls.items()}}
        return low

    def _exact_truth(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Exact top-``k`` rows of ``queries`` over the stored vectors (in blocks)."""
        best_s = np.full((queries.shape[0], 0), -np.inf, np.float32)
        best_i = np.zeros((queries.shape[0], 0), np.int64)
        block = 65536
        for start in range(0, self.size, block):
            rows = np.arange(start, min(self.size, start + block))
            s, i = _exact_topk(self.vectors(rows), queries, k)
            cand_s, cand_i = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i + start], axis=1)
            order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
        return best_i

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write an approximate index to ``path`` (``.npz``: faiss bytes + row labels), atomically.

        Exact kinds have nothing to save (rebuilt from the vectors by :meth:`from_saved`)."""
        if self.exact:
            raise VectorIndexError("exact indexes are rebuilt from the vectors; nothing to save")
        data = _faiss().serialize_index(self._faiss)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, index=np.asarray(data, dtype=np.uint8), labels=self._labels,
                     next_label=np.asarray(self._next_label, dtype=np.int64))

    @classmethod
    def from_saved(cls, info: dict[str, Any], *, path: str | os.PathLike | None = None,
                   vectors: np.ndarray | None = None) -> VectorIndex:
        """Re-create an index described by ``info`` (:meth:`describe`): an approximate one from ``path``
        (written by :meth:`save`), an exact one from ``vectors`` ``[N, D]``.

        Raises:
            VectorIndexError: unknown kind, unreadable file, or a row count other than ``info["rows"]``.
        """
        kind = str(info.get("kind", ""))
        params = {k: v for k, v in info.items() if k not in ("kind", "exact", "rows", "dim", "library")}
        if kind not in KINDS or kind == "auto":
            raise VectorIndexError(f"unknown vector index kind {kind!r} in the manifest")
        if kind not in _APPROXIMATE:
            if vectors is None:
                raise VectorIndexError("an exact index is rebuilt from its vectors; none given")
            if kind == "flat" and not faiss_available():
                kind = "numpy"  # same results without faiss
            out = cls.build(vectors, kind=kind, exact_below=int(params.get("exact_below", EXACT_BELOW)))
            out.params.update(params)
            return out
        faiss = _faiss()
        try:
            with np.load(Path(path), allow_pickle=False) as z:  # type: ignore[arg-type]
                raw, labels, next_label = z["index"], z["labels"], int(z["next_label"])
            index = faiss.deserialize_index(raw)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise VectorIndexError(f"'{path}': unreadable vector index ({exc})") from exc
        out = cls(int(info.get("dim", index.d)), kind, params=params)
        out._faiss = index
        out._labels = labels.astype(np.int64)
        out._next_label = next_label
        out._reposition()
        out._apply_search_params()
        if out.size != int(info.get("rows", out.size)) or out._labels.size != out.size:
            raise VectorIndexError(f"'{path}': holds {out.size} rows, the manifest says {info.get('rows')}")
        return out
