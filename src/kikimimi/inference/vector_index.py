"""A store of unit vectors searched by inner product (= cosine): exact below a size, approximate above it.

:class:`VectorIndex` holds ``[N, D]`` float32 rows (normalised on the way in) and answers
``search(queries [Q, D], k) -> (scores [Q, k], rows [Q, k])`` with row positions ``0..N-1`` (``-1`` pads a
result shorter than ``k``). The kind is chosen once, when the index is built, and recorded by
:meth:`VectorIndex.describe` (the search index keeps it in its manifest):

- ``"numpy"``: exact, a float32 matrix product — used when ``faiss`` is not installed (small indexes);
- ``"flat"``: exact, ``faiss.IndexFlatIP`` — below ``exact_below`` rows (default :data:`EXACT_BELOW`);
  same rows and (to float32 rounding) the same scores as ``"numpy"``;
- ``"hnsw"``: approximate, ``faiss.IndexHNSWFlat`` (a navigable small-world graph over the float32 vectors,
  ``M`` links per node) — the automatic choice above the threshold;
- ``"hnsw_sq"``: approximate, ``faiss.IndexHNSWSQ`` (the same graph over 8-bit scalar-quantised vectors: about
  a quarter of the memory) — the automatic choice when the float32 graph would take more than
  ``memory_budget`` bytes (default: a quarter of the machine's RAM, :func:`default_memory_budget`);
- ``"ivf"``: approximate, ``faiss.IndexIVFFlat`` (inverted lists over a k-means coarse quantiser, trained
  with 10 iterations on at most 64 rows per list) — only when asked for.

The search effort of the approximate kinds (``efSearch`` for HNSW, ``nprobe`` for IVF) is calibrated at build
time (:meth:`VectorIndex.calibrate`): the smallest value whose recall@10 against exact search reaches
``target_recall`` on held-out queries both near the data (a new sound among the others) and as far from it as a
CLAP model's text queries sit from the sounds they describe (measured; uniformly random directions are recorded
as a worst case but do not set it); the value and the measured recalls are recorded. When an HNSW index built
with ``kind="auto"`` cannot reach the target, exact ``"flat"`` search is kept and the reason recorded.

Positions stay contiguous: :meth:`add` appends rows at the end, :meth:`remove` deletes rows and the rows
after them move up, as in a list; :meth:`rearrange` applies a whole update at once (rows kept from the
current index in a new order, new rows embedded since). Nothing is rebuilt: IVF removes vectors from its
lists; an HNSW graph cannot remove a node, so a removed row becomes a *tombstone* — still in the graph (it
keeps the graph connected) but never returned — until :meth:`compact` rebuilds the graph from the live rows
(the search index does it when tombstones pass a quarter of the graph, :data:`COMPACT_ABOVE`).

Approximate indexes are persisted with :meth:`save` (one ``.npz`` holding the serialised faiss index and
its row labels, written atomically); exact ones are rebuilt from the vectors, which costs one pass over them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.fileio import atomic_open

__all__ = ["COMPACT_ABOVE", "EXACT_BELOW", "KINDS", "VectorIndex", "VectorIndexError", "default_memory_budget",
           "estimate_bytes", "faiss_available", "normalise", "recall_at_k"]

#: Rows from which ``kind="auto"`` switches from exact to approximate search.
EXACT_BELOW = 100_000
KINDS = ("auto", "numpy", "flat", "hnsw", "hnsw_sq", "ivf")
_APPROXIMATE = ("ivf", "hnsw", "hnsw_sq")
_GRAPH = ("hnsw", "hnsw_sq")
#: Fraction of tombstones (removed rows still in an HNSW graph) above which an update compacts the graph.
COMPACT_ABOVE = 0.25
#: ``efSearch`` values tried by the calibration, smallest first (finer above 1024, where each step costs
#: milliseconds at a million rows).
EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1280, 1536, 1792, 2048)
#: HNSW defaults: links per node and the breadth of the build search.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
#: Noise of the calibration's text-like queries, times the row's norm: cosine 1 / sqrt(1 + 2.0²) ≈ 0.45 to the row,
#: the median top-1 cosine measured for real CLAP text queries (:meth:`VectorIndex.calibrate`).
TEXT_QUERY_NOISE = 2.0


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
    """Mean over queries of |found[:k] ∩ truth[:k]| / |truth[:k]|, for row arrays ``[Q, ≤k]`` (``-1`` entries
    are padding: an index of fewer than ``k`` rows is complete when it returns them all)."""
    out = []
    for f, t in zip(found, truth, strict=True):
        want = set(t[:k].tolist()) - {-1}
        out.append(len(set(f[:k].tolist()) & want) / len(want) if want else 1.0)
    return float(np.mean(out)) if out else 1.0


def default_memory_budget() -> int:
    """Bytes an automatically chosen vector index may take: a quarter of the machine's physical memory
    (``KIKIMIMI_VECTOR_MEMORY_MB`` overrides it)."""
    env = os.environ.get("KIKIMIMI_VECTOR_MEMORY_MB")
    if env:
        try:
            return int(float(env) * 1024 * 1024)
        except ValueError:
            raise VectorIndexError(f"KIKIMIMI_VECTOR_MEMORY_MB={env!r}: not a number of megabytes") from None
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 4
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 4 * 1024**3


def estimate_bytes(kind: str, rows: int, dim: int, *, m: int = HNSW_M, nlist: int = 0) -> int:
    """Memory a vector index of ``rows`` × ``dim`` takes, in bytes (the vectors or codes plus the graph links
    or list ids; measured sizes agree within a few per cent, see ``benchmarks/bench_index_scale.py``)."""
    if kind in ("numpy", "flat"):
        return 4 * dim * rows
    if kind == "hnsw":  # float32 vector + 2·M level-0 links (int32) + upper levels and offsets
        return rows * (4 * dim + 8 * m + 16)
    if kind == "hnsw_sq":  # one byte per dimension instead of four
        return rows * (dim + 8 * m + 16) + 8 * dim
    if kind == "ivf":  # vector + its label in a list, the centroids, the label hash map
        return rows * (4 * dim + 8 + 16) + 4 * dim * nlist
    raise VectorIndexError(f"unknown vector index kind {kind!r}; expected one of {KINDS[1:]}")


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


#: describe() keys computed from the index, never read back as parameters
_DERIVED = ("kind", "exact", "rows", "dim", "library", "tombstones", "memory_bytes")


class VectorIndex:
    """Unit vectors ``[N, D]`` searched by inner product; see the module docstring for the kinds.

    Build with :meth:`build`; ``kind`` is the kind in use (never ``"auto"``), ``dim`` the vector size.
    Searching is safe from several threads at once; changes (:meth:`add`, :meth:`remove`, :meth:`rearrange`,
    :meth:`compact`) are not, and must not run while another thread searches.
    """

    def __init__(self, dim: int, kind: str, *, params: dict[str, Any] | None = None) -> None:
        if kind not in KINDS or kind == "auto":
            raise VectorIndexError(f"unknown vector index kind {kind!r}; expected one of {KINDS[1:]}")
        self.dim = int(dim)
        self.kind = kind
        self.params: dict[str, Any] = dict(params or {})
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)  # "numpy" only
        # "flat": IndexFlatIP; "ivf": IndexIVFFlat (labels given with add_with_ids); "hnsw" / "hnsw_sq":
        # IndexHNSWFlat / IndexHNSWSQ (a row's label is its node number in the graph, 0..ntotal-1)
        self._faiss: Any = None
        self._keep_alive: Any = None  # the owner of _faiss when it was unwrapped from an older layout
        self._labels = np.zeros(0, dtype=np.int64)  # position → label (approximate kinds)
        self._next_label = 0
        self._position: np.ndarray = np.zeros(0, dtype=np.int64)  # label → position (-1: removed)
        self._selector: tuple[np.ndarray, Any] | None = None  # live-label bitmap and its IDSelectorBitmap

    # ------------------------------------------------------------------ building
    @classmethod
    def choose_kind(cls, n_rows: int, kind: str = "auto", exact_below: int = EXACT_BELOW, *, dim: int = 0,
                    memory_budget: int | None = None, hnsw_m: int = HNSW_M) -> str:
        """The kind ``kind="auto"`` resolves to for ``n_rows`` rows of ``dim`` dimensions: ``"numpy"`` without
        faiss, ``"flat"`` below ``exact_below`` rows, else ``"hnsw"``, or ``"hnsw_sq"`` when the float32 graph
        would take more than ``memory_budget`` bytes (default :func:`default_memory_budget`)."""
        if kind not in KINDS:
            raise VectorIndexError(f"unknown vector index kind {kind!r}; expected one of {KINDS}")
        if kind != "auto":
            return kind
        if not faiss_available():
            return "numpy"
        if n_rows < exact_below:
            return "flat"
        budget = default_memory_budget() if memory_budget is None else int(memory_budget)
        return "hnsw" if estimate_bytes("hnsw", n_rows, dim, m=hnsw_m) <= budget else "hnsw_sq"

    @classmethod
    def build(cls, vectors: np.ndarray, *, kind: str = "auto", exact_below: int = EXACT_BELOW,
              target_recall: float = 0.95, nlist: int | None = None, hnsw_m: int = HNSW_M,
              ef_construction: int = HNSW_EF_CONSTRUCTION, memory_budget: int | None = None, seed: int = 0,
              trained_from: VectorIndex | None = None) -> VectorIndex:
        """Index ``vectors`` ``[N, D]`` (normalised here).

        Args:
            kind: ``"auto"`` (:meth:`choose_kind`) or one of :data:`KINDS`.
            target_recall: the recall@10 the approximate kinds are calibrated to reach (``efSearch`` / ``nprobe``).
            nlist: IVF lists (default ``4·sqrt(N)``, 16..65536).
            hnsw_m, ef_construction: HNSW links per node and build breadth.
            memory_budget: bytes above which ``"auto"`` takes the scalar-quantised graph.
            seed: seeds k-means and the calibration queries.
            trained_from: an IVF index of the same dimension whose coarse quantiser is reused (no k-means)
                when it was trained on at least a quarter of ``N`` rows.
        """
        base = normalise(vectors) if len(vectors) else np.zeros((0, np.asarray(vectors).shape[-1]), np.float32)
        n, dim = base.shape
        chosen = cls.choose_kind(n, kind, exact_below, dim=dim, memory_budget=memory_budget, hnsw_m=hnsw_m)
        if chosen in _APPROXIMATE and n < 2:
            chosen = "flat"
        index = cls(dim, chosen)
        if kind != "auto":
            reason = f"kind {chosen!r} requested"
        elif chosen == "numpy":
            reason = "faiss not installed (exact numpy search)"
        else:
            reason = f"{n} rows {'<' if chosen == 'flat' else '>='} exact_below={exact_below}"
            if chosen == "hnsw_sq":
                budget = default_memory_budget() if memory_budget is None else int(memory_budget)
                reason += (f"; a float32 graph would take {estimate_bytes('hnsw', n, dim, m=hnsw_m) / 2**20:.0f} MB, "
                           f"over the memory budget of {budget / 2**20:.0f} MB: 8-bit scalar-quantised vectors")
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
            index._faiss = index._new_ivf(base, nlist, seed, trained_from)
        else:
            index.params.update({"M": int(hnsw_m), "efConstruction": int(ef_construction)})
            index._faiss = index._new_graph(base, seed)
        index.add(base)
        low = index.calibrate(target_recall, seed=seed, reference=base)
        if kind == "auto" and chosen in _GRAPH and low < target_recall:
            flat = cls.build(base, kind="flat", exact_below=exact_below)
            flat.params["reason"] = (f"{n} rows >= exact_below={exact_below}, but HNSW reached recall@10 {low:.3f} < "
                                     f"{target_recall} even at efSearch {index.params['efSearch']}: exact search")
            return flat
        return index

    def _new_ivf(self, base: np.ndarray, nlist: int | None, seed: int, trained_from: VectorIndex | None) -> Any:
        """An empty trained IVF index for ``base`` (or ``trained_from``'s quantiser when it fits)."""
        faiss = _faiss()
        n, dim = base.shape
        reuse = (trained_from is not None and trained_from.kind == "ivf" and trained_from.dim == dim
                 and trained_from.params.get("trained_rows", 0) * 4 >= n)
        if reuse:
            inner = faiss.clone_index(trained_from._faiss)
            inner.reset()
            self.params.update({k: trained_from.params[k] for k in ("nlist", "trained_rows")})
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
            self.params.update({"nlist": lists, "trained_rows": int(sample.shape[0])})
        inner.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by label
        return inner

    def _new_graph(self, sample: np.ndarray, seed: int = 0) -> Any:
        """An empty HNSW graph of this index's kind and parameters; the scalar quantiser (``hnsw_sq``) learns
        each dimension's range from ``sample`` ``[S, D]`` (at most 100 000 rows of it)."""
        faiss = _faiss()
        m = int(self.params.get("M", HNSW_M))
        if self.kind == "hnsw":
            graph = faiss.IndexHNSWFlat(self.dim, m, faiss.METRIC_INNER_PRODUCT)
        else:
            graph = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
            if sample.shape[0] > 100_000:
                picks = np.sort(np.random.default_rng(seed).choice(sample.shape[0], 100_000, replace=False))
                sample = sample[picks]
            graph.train(normalise(sample) if sample.size else np.zeros((1, self.dim), np.float32))
        graph.hnsw.efConstruction = int(self.params.get("efConstruction", HNSW_EF_CONSTRUCTION))
        return graph

    def pays_off(self) -> bool:
        """False for an IVF index whose calibrated ``nprobe`` visits more than a quarter of its lists (then
        exact search costs about the same); True for every other index."""
        if self.kind != "ivf":
            return True
        return int(self.params.get("nprobe", 1)) * 4 <= int(self.params.get("nlist", 1))

    @property
    def size(self) -> int:
        """Number of rows (tombstones not counted)."""
        if self.kind == "numpy":
            return int(self._matrix.shape[0])
        if self.kind == "flat":
            return int(self._faiss.ntotal)
        return int(self._labels.size)

    def __len__(self) -> int:
        return self.size

    @property
    def tombstones(self) -> int:
        """Removed rows still in an HNSW graph (never returned; dropped by :meth:`compact`); 0 for other kinds."""
        return int(self._faiss.ntotal) - self.size if self.kind in _GRAPH else 0

    @property
    def exact(self) -> bool:
        """Whether results equal exact inner-product search."""
        return self.kind not in _APPROXIMATE

    def describe(self) -> dict[str, Any]:
        """What was built and why, JSON-ready (``kind``, ``rows``, ``dim``, ``library``, parameters,
        calibration, ``memory_bytes`` estimated by :func:`estimate_bytes`, ``tombstones`` of a graph)."""
        library = "numpy"
        if self.kind != "numpy":
            library = f"faiss {_faiss().__version__}"
        stored = self.size + self.tombstones
        out = {"kind": self.kind, "exact": self.exact, "rows": self.size, "dim": self.dim, "library": library,
               **self.params,
               "memory_bytes": estimate_bytes(self.kind, stored, self.dim, m=int(self.params.get("M", HNSW_M)),
                                              nlist=int(self.params.get("nlist", 0)))}
        if self.kind in _GRAPH:
            out["tombstones"] = self.tombstones
        return out

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``[M, D]`` (normalised here) at positions ``N..N+M-1``; nothing is rebuilt."""
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
        self._insert(new, labels)
        self._labels = np.concatenate([self._labels, labels])
        self._reposition()

    def _insert(self, new: np.ndarray, labels: np.ndarray) -> None:
        """Put unit rows ``new`` into the faiss index under ``labels`` (the next ones, in order)."""
        if new.shape[0] == 0:
            return
        if self.kind in _GRAPH:
            if int(self._faiss.ntotal) != self._next_label:  # a graph's labels are its node numbers
                raise VectorIndexError(f"graph holds {self._faiss.ntotal} nodes but {self._next_label} labels")
            self._faiss.add(new)
        else:
            self._faiss.add_with_ids(new, labels)
        self._next_label += new.shape[0]

    def remove(self, rows: Sequence[int] | np.ndarray) -> None:
        """Delete the rows at these positions; later rows move up (positions stay ``0..N-1``). An HNSW graph
        keeps them as tombstones (:meth:`compact` drops them)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            return
        if rows[0] < 0 or rows[-1] >= self.size:
            raise VectorIndexError(f"cannot remove rows {rows.tolist()[:5]}: the index has {self.size}")
        if self.kind == "numpy":
            self._matrix = np.delete(self._matrix, rows, axis=0)
        elif self.kind == "flat":
            self._faiss.remove_ids(_faiss().IDSelectorBatch(rows))  # a flat index renumbers like a list
        else:
            if self.kind == "ivf":  # the hashtable direct map needs an array selector
                self._faiss.remove_ids(_faiss().IDSelectorArray(self._labels[rows]))
            self._labels = np.delete(self._labels, rows)
            self._reposition()

    def rearrange(self, sources: Sequence[int] | np.ndarray, vectors: np.ndarray) -> dict[str, int]:
        """Apply an update at once: row ``p`` becomes the current row ``sources[p]`` where that is ``>= 0``,
        else the new vector ``vectors[p]``; current rows that ``sources`` does not name are removed.

        ``vectors`` ``[R, D]`` are the rows of the result in order (e.g. a memory-mapped embeddings file); only
        the new ones are read, except by the exact kinds, which are rebuilt from all of them. Nothing is
        re-added: returns ``{"kept", "added", "removed"}`` row counts.
        """
        src = np.asarray(sources, dtype=np.int64).reshape(-1)
        if vectors.shape[0] != src.size or (vectors.ndim == 2 and src.size and vectors.shape[1] != self.dim):
            raise VectorIndexError(f"rearrange: {src.size} sources but vectors of shape {tuple(vectors.shape)} "
                                   f"for a {self.dim}-d index")
        keep = src >= 0
        kept = src[keep]
        if kept.size and (int(kept.max()) >= self.size or np.unique(kept).size != kept.size):
            raise VectorIndexError(f"rearrange: sources must name distinct rows below {self.size}")
        counts = {"kept": int(kept.size), "added": int((~keep).sum()), "removed": self.size - int(kept.size)}
        if self.exact:
            fresh = np.zeros((0, self.dim), np.float32)
            if self.kind == "numpy":
                self._matrix = fresh
            else:
                self._faiss.reset()
            for start in range(0, src.size, 65536):
                self.add(np.asarray(vectors[start:start + 65536]))
            return counts
        new_rows = np.flatnonzero(~keep)
        labels = np.empty(src.size, dtype=np.int64)
        labels[keep] = self._labels[kept]
        if self.kind == "ivf":
            gone = np.setdiff1d(self._labels, labels[keep])
            if gone.size:
                self._faiss.remove_ids(_faiss().IDSelectorArray(gone))
        for start in range(0, new_rows.size, 65536):
            part = new_rows[start:start + 65536]
            fresh_labels = np.arange(self._next_label, self._next_label + part.size, dtype=np.int64)
            self._insert(normalise(np.asarray(vectors[part])), fresh_labels)
            labels[part] = fresh_labels
        self._labels = labels
        self._reposition()
        return counts

    def compact(self, reference: np.ndarray | None = None) -> int:
        """Rebuild an HNSW graph from its live rows, dropping the tombstones; returns how many were dropped
        (0 for other kinds, which remove rows at once). ``reference`` ``[N, D]``: the rows in position order
        (e.g. the float32 embeddings, so a scalar-quantised graph is rebuilt from the originals)."""
        if self.kind not in _GRAPH or self.tombstones == 0:
            return 0
        dropped = self.tombstones
        source = self.vectors() if reference is None else reference
        if source.shape[0] != self.size:
            raise VectorIndexError(f"compact: {source.shape[0]} reference rows for {self.size} rows")
        self._faiss = self._new_graph(np.asarray(source[:100_000]))  # the quantiser's ranges: a sample
        self._keep_alive = None
        self._labels, self._next_label = np.zeros(0, np.int64), 0
        for start in range(0, source.shape[0], 65536):
            self.add(np.asarray(source[start:start + 65536]))
        self._apply_search_params()
        self.params["compactions"] = int(self.params.get("compactions", 0)) + 1
        return dropped

    def _reposition(self) -> None:
        pos = np.full(self._next_label, -1, dtype=np.int64)
        pos[self._labels] = np.arange(self._labels.size)
        self._position = pos
        self._selector = None
        if self.kind in _GRAPH and self._labels.size < self._next_label:  # tombstones: search the live rows only
            faiss = _faiss()
            bits = np.packbits(pos >= 0, bitorder="little")
            self._selector = (bits, faiss.IDSelectorBitmap(self._next_label, faiss.swig_ptr(bits)))

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
        if self.kind in _GRAPH:
            params = _faiss().SearchParametersHNSW()
            params.efSearch = int(self.params.get("efSearch", 16))
            selector = self._selector
            if selector is not None:
                params.sel = selector[1]
            scores, labels = self._faiss.search(q, min(k, self.size), params=params)
        else:
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
        elif self.kind in _GRAPH:
            self._faiss.hnsw.efSearch = int(self.params.get("efSearch", 16))

    def vectors(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The stored unit vectors at ``rows`` (all when None), ``[M, D]`` (decoded: approximate for
        ``hnsw_sq``)."""
        idx = np.arange(self.size) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.kind == "numpy":
            return self._matrix[idx]
        if idx.size == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.kind == "flat":
            return self._faiss.reconstruct_batch(idx)
        return self._faiss.reconstruct_batch(self._labels[idx])

    def calibrate(self, target_recall: float = 0.95, *, n_queries: int = 200, k: int = 10, seed: int = 0,
                  reference: np.ndarray | None = None) -> float:
        """Choose the smallest ``efSearch`` (HNSW) or ``nprobe`` (IVF) whose recall@``k`` against exact search
        reaches ``target_recall`` on two sets of held-out queries, record it and return the lower recall.

        ``near``: stored rows plus Gaussian noise 1.5 times their norm (cosine ≈ 0.55 to their row), the way a
        new sound sits among the data; ``text``: noise :data:`TEXT_QUERY_NOISE` times their norm (cosine ≈ 0.45
        to their row): a text query of a CLAP model sits this far from the closest sound it describes (measured
        with ``open-clap-tiny``: median top-1 cosine 0.44 of 50 label prompts over 1,300 open-suite clips, against
        0.54 for the ``near`` queries and 0.17 for uniformly random directions). Uniformly random directions,
        near-ties to every stored row, are a worst case no graph answers cheaply; their recall at the chosen
        effort is recorded (``recall_uniform``) but does not set it. The exact answers are computed over
        ``reference`` ``[N, D]`` (the original rows in position order, not necessarily normalised) when given,
        else over the stored vectors. Exact kinds return 1.0.
        """
        if self.exact:
            return 1.0
        rng = np.random.default_rng(seed + 1)
        n = self.size
        picks = np.sort(rng.choice(n, min(n_queries, n), replace=False))
        base = normalise(np.asarray(reference[picks])) if reference is not None else self.vectors(picks)
        sets = {"near": normalise(base + 1.5 * normalise(rng.standard_normal(base.shape).astype(np.float32))),
                "text": normalise(base + TEXT_QUERY_NOISE
                                  * normalise(rng.standard_normal(base.shape).astype(np.float32)))}
        uniform = normalise(rng.standard_normal(base.shape).astype(np.float32))
        truth = self._exact_truth(np.concatenate([*sets.values(), uniform]), k, reference)
        m = len(picks)
        truth_of = {"near": truth[:m], "text": truth[m:2 * m]}
        if self.kind == "ivf":
            nlist = int(self.params["nlist"])
            steps = sorted({min(nlist, s) for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, nlist)})
            name = "nprobe"
        else:
            steps = list(EF_STEPS)
            name = "efSearch"
        recalls: dict[str, float] = {}
        for value in steps:
            self.params[name] = int(value)
            self._apply_search_params()
            recalls = {s: recall_at_k(self.search(q, k)[1], truth_of[s], k) for s, q in sets.items()}
            if min(recalls.values()) >= target_recall:
                break
        low = min(recalls.values())
        recall_uniform = recall_at_k(self.search(uniform, k)[1], truth[2 * m:], k)
        self.params["calibration"] = {"queries": int(len(picks)), "k": int(k), "target_recall": float(target_recall),
                                      f"recall_at_{k}": round(low, 4),
                                      **{f"recall_{s}": round(r, 4) for s, r in recalls.items()},
                                      "recall_uniform": round(recall_uniform, 4),
                                      "reached": bool(low >= target_recall)}
        return low

    def _exact_truth(self, queries: np.ndarray, k: int, reference: np.ndarray | None = None) -> np.ndarray:
        """Exact top-``k`` rows of ``queries`` over ``reference`` (normalised per block) or the stored vectors."""
        best_s = np.full((queries.shape[0], 0), -np.inf, np.float32)
        best_i = np.zeros((queries.shape[0], 0), np.int64)
        block = 65536
        for start in range(0, self.size, block):
            stop = min(self.size, start + block)
            rows = normalise(np.asarray(reference[start:stop])) if reference is not None else \
                self.vectors(np.arange(start, stop))
            s, i = _exact_topk(rows, queries, k)
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
        params = {k: v for k, v in info.items() if k not in _DERIVED}
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
            del raw
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise VectorIndexError(f"'{path}': unreadable vector index ({exc})") from exc
        out = cls(int(info.get("dim", index.d)), kind, params=params)
        if kind in _GRAPH and isinstance(index, faiss.IndexIDMap2):  # the layout of kikimimi before 0.x: unwrap
            ids = faiss.vector_to_array(index.id_map)
            if not np.array_equal(ids, np.arange(ids.size)):
                raise VectorIndexError(f"'{path}': an HNSW index of an older layout; rebuild it (--rebuild)")
            out._keep_alive, index = index, faiss.downcast_index(index.index)
        expected = faiss.IndexIVF if kind == "ivf" else faiss.IndexHNSW
        if not isinstance(index, expected):
            raise VectorIndexError(f"'{path}': holds a {type(index).__name__}, the manifest says {kind!r}")
        out._faiss = index
        out._labels = labels.astype(np.int64)
        out._next_label = next_label
        if (kind in _GRAPH and int(index.ntotal) != next_label) or out._labels.size > next_label or \
                (out._labels.size and int(out._labels.max()) >= next_label):
            raise VectorIndexError(f"'{path}': its row labels do not match its {index.ntotal} vectors")
        out._reposition()
        out._apply_search_params()
        if out.size != int(info.get("rows", out.size)):
            raise VectorIndexError(f"'{path}': holds {out.size} rows, the manifest says {info.get('rows')}")
        return out
