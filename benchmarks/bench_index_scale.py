"""Vector index at scale: exact vs IVF vs HNSW vs scalar-quantised HNSW on synthetic clustered vectors.

For ``--rows`` unit vectors of ``--dim`` dimensions drawn around ``--centres`` random centres (cosine ≈ 0.86
to their centre: closer to how embeddings of real sounds fill the space than uniform directions), each kind
of :class:`kikimimi.inference.vector_index.VectorIndex` is built the way ``kikimimi index`` builds it
(HNSW / IVF calibrated to recall@10 >= ``--target``; build time includes that calibration) and measured on
``--queries`` held-out queries of three sorts, against exact search over the same vectors:

- ``near``: a stored vector plus noise 1.5 times its norm (cosine ≈ 0.55 to it): a new sound among the others;
- ``text``: a stored vector plus noise :data:`~kikimimi.inference.vector_index.TEXT_QUERY_NOISE` (2.0) times its
  norm (cosine ≈ 0.45 to it): as far as a CLAP model's text queries sit from the closest sound they describe
  (measured, see :meth:`VectorIndex.calibrate`); the calibration aims at these two;
- ``uniform``: a uniformly random direction, near-ties to every stored row: a worst case (reported, not a target).

``--from DIR --recalibrate`` regenerates the run's vectors from its seed, calibrates the saved graph again with
the current rule and measures the three sorts on new queries (the saved query sets are from the rule of its build).

Printed per kind: build seconds, search effort chosen, recall@10 per sort, single-query latency p50 /
p95 / p99 in ms and queries/s with one search thread (query embedding excluded), queries/s of a batch with
all threads, and memory: the serialised index size (measured) per row and per million rows (extrapolated
linearly from this size, said so), the estimate the manifest records, and the process's RSS growth while the
index was built; for the approximate kinds, recall, p50 and p99 per sort of query at a quarter, half, one and two
times the calibrated search effort. Every run prints the CPU model, its vector extensions and faiss' SIMD
level. Ratios are against exact search measured in the same process.

The Milvus backend (:class:`kikimimi.inference.milvus_index.MilvusIndex`, ``pip install "kikimimi[milvus]"``)
is measured with ``--kinds milvus`` (its HNSW index, ``M`` 32, ``efConstruction`` 128, searched with ``ef``
:data:`MILVUS_EF`, the backend's default, and swept around it) and ``milvus_flat`` (exact), in a Milvus Lite
database in a temporary folder: build seconds (create + insert + flush + the background index build + the first
search), recall@10, single-query latency through the client (the gRPC round trip included, as a caller sees
it), batch queries/s, the database's size on disk per row, and the RSS growth of this process and its children.

Measuring at 1M rows in two steps (the build takes long; the query phase wants a quiet machine): ``--save DIR``
writes each faiss index built (``<kind>.npz`` by :meth:`VectorIndex.save` and ``<kind>.json``, its description
with the build's seconds and RSS growth), the query sets and their exact top-10 (``queries.npz``) and the run's
settings (``run.json``) to ``DIR``; ``--from DIR`` reads them back and runs only the query phase (recall,
latency, batch, sweep) of the saved kinds, reporting the build figures recorded at ``--save`` time. The base
vectors are not saved (the graph holds them; the ground truth is saved with the queries).

Usage: python benchmarks/bench_index_scale.py [--rows 100000] [--dim 768] [--kinds flat ivf hnsw hnsw_sq milvus]
           [--queries 200] [--json OUT] [--save DIR | --from DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402

from kikimimi.fileio import atomic_open, atomic_write_json  # noqa: E402
from kikimimi.inference.vector_index import (  # noqa: E402
    TEXT_QUERY_NOISE,
    VectorIndex,
    _exact_topk,
    estimate_bytes,
    normalise,
    recall_at_k,
)

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> str:
    """The vector extensions the CPU reports (``/proc/cpuinfo`` flags), in a fixed order."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in VECTOR_FLAGS if f in have) or "none of " + " ".join(VECTOR_FLAGS)
    except OSError:
        pass
    return "unknown"


def rss_mb() -> float:
    """Resident memory of this process now, MB (NaN where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def tree_rss_mb() -> float:
    """Resident memory of this process and its direct children (an embedded database may run as one), MB."""
    total, me = rss_mb(), str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == me:
                for line in (stat.parent / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except (OSError, IndexError):
            continue
    return total


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


#: the HNSW search breadth the Milvus rows are measured at (swept at a quarter, half, one and two times it)
MILVUS_EF = 256


def bench_milvus(kind: str, base: np.ndarray, sets: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                 sweep: bool) -> dict:
    """One row of results for the Milvus backend (``kind`` ``"milvus"``: HNSW, ``"milvus_flat"``: exact) on
    ``base`` ``[N, D]``, in a Milvus Lite database in a temporary folder."""
    import tempfile

    from kikimimi.inference.milvus_index import MilvusIndex, MilvusSettings

    n, dim = base.shape
    settings = MilvusSettings(index_type="FLAT" if kind == "milvus_flat" else "HNSW", ef_search=MILVUS_EF)
    with tempfile.TemporaryDirectory(prefix="bench_milvus_") as tmp:
        db_path = Path(tmp) / "bench.db"
        rss0 = tree_rss_mb()
        t = time.perf_counter()
        db = MilvusIndex.create(str(db_path), dim=dim, model="bench", identity=None, root="/bench",
                                settings=settings)
        ids: list[int] = []
        for start in range(0, n, 8192):
            part = base[start:start + 8192]
            ids += db.add_files([({"key": f"f{start + i}.wav", "path": f"/bench/f{start + i}.wav",
                                   "duration_s": 1.0}, part[i:i + 1], [[0.0, 1.0]], ()) for i in range(len(part))])
        print(f"# {kind}: {n} rows inserted in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        db.flush()  # seals the rows into segments, as `kikimimi index --db` does at the end
        db.wait_for_index()  # the vector index is built in the background: until then searches are exact
        db.search_vectors(base[:1], 10)
        build_s = time.perf_counter() - t
        print(f"# {kind}: first search after {build_s:.1f} s", file=sys.stderr, flush=True)
        row_of = np.full(max(ids) + 1 if ids else 1, -1, np.int64) if max(ids) < 50 * n else None
        lookup = {i: r for r, i in enumerate(ids)} if row_of is None else None
        if row_of is not None:
            row_of[np.asarray(ids)] = np.arange(n)

        def rows(queries: np.ndarray) -> np.ndarray:
            hits = db.search_vectors(queries, 10)
            out = np.full((len(queries), 10), -1, np.int64)
            for qi, hs in enumerate(hits):
                got = [h.row for h in hs]
                out[qi, :len(got)] = row_of[got] if row_of is not None else [lookup[g] for g in got]
            return out

        def single_ms(queries: np.ndarray) -> np.ndarray:
            out = np.empty(len(queries))
            for i, q in enumerate(queries):
                t0 = time.perf_counter()
                db.search_vectors(q[None], 10)
                out[i] = 1000 * (time.perf_counter() - t0)
            return out

        recall = {name: round(recall_at_k(rows(q), truth[name]), 4) for name, q in sets.items()}
        lat = np.concatenate([single_ms(q) for q in sets.values()])
        every = np.concatenate(list(sets.values()))
        t = time.perf_counter()
        db.search_vectors(every, 10)
        batch_qps = len(every) / (time.perf_counter() - t)
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        disk = folder_bytes(db_path)
        row = {"kind": kind, "rows": n, "dim": dim, "build_s": round(build_s, 1), "index_type": settings.index_type,
               **({"ef": MILVUS_EF, "M": settings.hnsw_m, "efConstruction": settings.ef_construction}
                  if kind == "milvus" else {}),
               "recall_at_10": recall, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
               "qps_1_thread": round(1000 / lat.mean(), 1), "qps_batch": round(batch_qps, 1),
               "disk_bytes_per_row": round(disk / n, 1), "rss_growth_mb": round(tree_rss_mb() - rss0, 1)}
        if sweep and kind == "milvus":
            out = {}
            for ef in (MILVUS_EF // 4, MILVUS_EF // 2, MILVUS_EF, MILVUS_EF * 2):
                db.settings = MilvusSettings(index_type="HNSW", ef_search=ef)
                out[ef] = {s: {"recall_at_10": round(recall_at_k(rows(q), truth[s]), 4),
                               "p50_ms": round(float(np.median(single_ms(q[:100]))), 3)} for s, q in sets.items()}
            row["sweep_ef"] = out
        db.close()
    return row


def clustered(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    """``[n, dim]`` unit float32 vectors around ``centres`` fixed random centres (drawn in chunks)."""
    c = np.random.default_rng([seed, 1]).standard_normal((centres, dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    for i, start in enumerate(range(0, n, 50_000)):
        rng = np.random.default_rng([seed, 2, i])
        m = min(50_000, n - start)
        out[start:start + m] = normalise(c[rng.integers(0, centres, m)] + 0.6 * rng.standard_normal((m, dim),
                                                                                                    np.float32))
    return out


def latencies_ms(index: VectorIndex, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Milliseconds of each single-query search, one after the other."""
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        index.search(q[None], k)
        out[i] = 1000 * (time.perf_counter() - t)
    return out


#: the files ``--save`` writes besides one ``<kind>.npz`` + ``<kind>.json`` per faiss kind
RUN_FILE, QUERY_FILE = "run.json", "queries.npz"


def measure(kind: str, index: VectorIndex, sets: dict[str, np.ndarray], truth: dict[str, np.ndarray],
            sweep: bool, exact_p50: float | None) -> dict:
    """The query phase of one faiss ``index``: recall@10 per query set, single-query latency (ms, one search
    thread), batch queries/s (all threads) and, with ``sweep``, recall, p50 and p99 around the calibrated effort."""
    import faiss

    threads = faiss.omp_get_max_threads()
    info = index.describe()
    recall = {n: round(recall_at_k(index.search(q, 10)[1], truth[n]), 4) for n, q in sets.items()}
    faiss.omp_set_num_threads(1)
    lat = np.concatenate([latencies_ms(index, q) for q in sets.values()])
    faiss.omp_set_num_threads(threads)
    every = np.concatenate(list(sets.values()))
    t = time.perf_counter()
    index.search(every, 10)
    batch_qps = len(every) / (time.perf_counter() - t)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    effort = {k: info[k] for k in ("efSearch", "nprobe", "nlist", "M", "efConstruction") if k in info}
    row = {"kind": kind, **effort, "calibrated_recall": (info.get("calibration") or {}).get("recall_at_10"),
           "recall_at_10": recall, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
           "qps_1_thread": round(1000 / lat.mean(), 1), f"qps_batch_{threads}_threads": round(batch_qps, 1)}
    if exact_p50 is not None:
        row["p50_speedup_vs_exact"] = round(exact_p50 / p50, 1)
    if sweep and kind in ("hnsw", "hnsw_sq", "ivf"):  # the trade-off around the calibrated effort
        name = "nprobe" if kind == "ivf" else "efSearch"
        chosen, out = index.params[name], {}
        faiss.omp_set_num_threads(1)
        for value in sorted({max(1, chosen // 4), max(1, chosen // 2), chosen, chosen * 2}):
            index.params[name] = value
            index._apply_search_params()
            out[value] = {}
            for s, q in sets.items():
                lat_s = latencies_ms(index, q)
                out[value][s] = {"recall_at_10": round(recall_at_k(index.search(q, 10)[1], truth[s]), 4),
                                 "p50_ms": round(float(np.percentile(lat_s, 50)), 3),
                                 "p99_ms": round(float(np.percentile(lat_s, 99)), 3)}
        faiss.omp_set_num_threads(threads)
        index.params[name] = chosen
        index._apply_search_params()
        row[f"sweep_{name}"] = out
    return row


def query_sets(base: np.ndarray, queries: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``queries`` held-out queries of each sort (module docstring: ``near``, ``text``, ``uniform``) around the rows
    of ``base`` ``[N, D]``, and their exact top-10 rows."""
    rows, dim = base.shape
    rng = np.random.default_rng([seed, 3])
    picks = rng.choice(rows, queries, replace=False)

    def around(noise: float) -> np.ndarray:
        return normalise(base[picks] + noise * normalise(rng.standard_normal((queries, dim), np.float32)))

    sets = {"near": around(1.5), "text": around(TEXT_QUERY_NOISE),
            "uniform": normalise(rng.standard_normal((queries, dim), np.float32))}
    return sets, {name: _exact_topk(base, q, 10)[1] for name, q in sets.items()}


def emit(results: list[dict], row: dict, json_path: str | None) -> None:
    """Print one measured ``row`` as a JSON line and rewrite ``json_path`` (if given) with every row so far, so a
    run stopped part-way keeps what it measured."""
    results.append(row)
    print(json.dumps(row), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")


def save_queries(folder: Path, run: dict, sets: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> None:
    """Write the run's settings and its query sets with their exact top-10 rows into ``folder`` (``--save``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / QUERY_FILE, "wb") as fh:
        np.savez(fh, **{f"queries_{n}": q for n, q in sets.items()}, **{f"truth_{n}": t for n, t in truth.items()})
    atomic_write_json(folder / RUN_FILE, run)


def load_saved(folder: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The settings, query sets and exact top-10 rows ``--save`` wrote into ``folder``; exits with one line when
    they are missing or unreadable."""
    try:
        run = json.loads((folder / RUN_FILE).read_text())
        with np.load(folder / QUERY_FILE, allow_pickle=False) as z:
            sets = {n[len("queries_"):]: z[n] for n in z.files if n.startswith("queries_")}
            truth = {n[len("truth_"):]: z[n] for n in z.files if n.startswith("truth_")}
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"'{folder}': not a folder written by --save ({exc})") from None
    return run, sets, truth


def saved_index_bytes(path: Path) -> int:
    """Bytes of the serialised faiss index inside a ``.npz`` written by :meth:`VectorIndex.save` (its ``index``
    member less the 128-byte ``.npy`` header), read from the zip directory without loading it."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.getinfo("index.npy").file_size - 128


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", default=None,
                        choices=("numpy", "flat", "ivf", "hnsw", "hnsw_sq", "milvus", "milvus_flat"),
                        help="default: flat ivf hnsw hnsw_sq (with --from: every kind saved)")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries of each sort")
    parser.add_argument("--target", type=float, default=0.95, help="recall@10 the calibration aims at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sweep", dest="sweep", action="store_false",
                        help="skip the recall/latency sweep around the calibrated search effort")
    parser.add_argument("--json", help="also write the results here")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--save", metavar="DIR", type=Path,
                       help="also save each faiss index built and the query sets here (for --from)")
    where.add_argument("--from", dest="load", metavar="DIR", type=Path,
                       help="run only the query phase on the indexes and queries --save wrote here")
    parser.add_argument("--recalibrate", action="store_true",
                        help="with --from: rebuild the vectors from the run's seed, calibrate the saved index again "
                             "with the current rule and measure new queries of every sort")
    args = parser.parse_args()
    if args.recalibrate and args.load is None:
        parser.error("--recalibrate needs --from DIR")

    import faiss

    if args.load is not None:
        run, sets, truth = load_saved(args.load)
        saved = [k for k in run["kinds"] if (args.load / f"{k}.npz").is_file() or k in ("flat", "numpy")]
        kinds = args.kinds or saved
        if missing := [k for k in kinds if k not in saved]:
            raise SystemExit(f"'{args.load}': no saved index of kind {', '.join(missing)} (saved: "
                             f"{', '.join(saved) or 'none'})")
        if any(k in ("flat", "numpy") for k in kinds):
            raise SystemExit(f"'{args.load}': exact kinds are not saved (they need the base vectors); "
                             "run them without --from")
        rows, dim, centres, queries = run["rows"], run["dim"], run["centres"], run["queries"]
        base = clustered(rows, dim, centres, run["seed"]) if args.recalibrate else None
        if base is not None:
            sets, truth = query_sets(base, queries, run["seed"] + 1)  # new draws, not the saved ones
    else:
        kinds = args.kinds or ["flat", "ivf", "hnsw", "hnsw_sq"]
        rows, dim, centres, queries = args.rows, args.dim, args.centres, args.queries
    print(f"# bench_index_scale: {rows} × {dim} clustered ({centres} centres), "
          f"{queries} queries of each sort, target recall@10 {args.target}"
          + (f"; query phase only, indexes read from {args.load}" if args.load else "")
          + (f"; saving the indexes to {args.save}" if args.save else ""))
    print(f"# CPU: {cpu_model()}; {os.cpu_count()} cores; vector extensions: {cpu_flags()}")
    print(f"# faiss {faiss.__version__} ({faiss.get_compile_options().strip()}), "
          f"{faiss.omp_get_max_threads()} OpenMP threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    if any(k.startswith("milvus") for k in kinds):
        from importlib import metadata

        print(f"# pymilvus {metadata.version('pymilvus')}, milvus-lite {metadata.version('milvus-lite')} "
              "(Milvus Lite, embedded)", flush=True)
    results, exact_p50 = [], None
    if args.load is not None:
        for kind in kinds:
            built = json.loads((args.load / f"{kind}.json").read_text())
            rss0 = rss_mb()
            t = time.perf_counter()
            index = VectorIndex.from_saved(built["describe"], path=args.load / f"{kind}.npz")
            load_s = time.perf_counter() - t
            if base is not None:
                t = time.perf_counter()
                index.calibrate(run.get("target", args.target), reference=base)
                print(f"# {kind}: calibrated again in {time.perf_counter() - t:.1f} s: "
                      f"{json.dumps(index.describe().get('calibration'))}", file=sys.stderr, flush=True)
            row = {"kind": kind, "rows": rows, "dim": dim, "build_s": built["build_s"],
                   "load_s": round(load_s, 1), "rss_after_load_mb": round(rss_mb() - rss0, 1),
                   **{k: built[k] for k in ("index_bytes_per_row", "mb_per_million_rows_extrapolated",
                                            "rss_growth_mb") if k in built},
                   **measure(kind, index, sets, truth, args.sweep, None)}
            emit(results, row, args.json)
            del index
        return 0
    base = clustered(rows, dim, centres, args.seed)
    sets, truth = query_sets(base, queries, args.seed)
    if args.save is not None:
        save_queries(args.save, {"rows": rows, "dim": dim, "centres": centres, "queries": queries,
                                 "seed": args.seed, "target": args.target, "cpu": cpu_model(),
                                 "kinds": [k for k in kinds if k in ("ivf", "hnsw", "hnsw_sq")]}, sets, truth)
    for kind in kinds:
        if kind.startswith("milvus"):
            row = bench_milvus(kind, base, sets, truth, args.sweep)
            if exact_p50 is not None:
                row["p50_ratio_to_faiss_exact"] = round(row["p50_ms"] / exact_p50, 2)
            emit(results, row, args.json)
            continue
        rss0 = rss_mb()
        t = time.perf_counter()
        index = VectorIndex.build(base, kind=kind, target_recall=args.target, seed=args.seed)
        build_s = time.perf_counter() - t
        rss_growth = rss_mb() - rss0
        print(f"# {kind}: built in {build_s:.1f} s, RSS +{rss_growth:.0f} MB", file=sys.stderr, flush=True)
        info = index.describe()
        if args.save is not None and not index.exact:
            index.save(args.save / f"{kind}.npz")  # measured from the file: no second copy of the graph in RAM
            size = saved_index_bytes(args.save / f"{kind}.npz")
        else:
            size = len(faiss.serialize_index(index._faiss)) if index._faiss is not None else base.nbytes
        build = {"rows": rows, "dim": dim, "build_s": round(build_s, 1),
                 "index_bytes_per_row": round(size / rows, 1),
                 "mb_per_million_rows_extrapolated": round(size / rows * 1e6 / 2**20, 1),
                 "estimate_bytes_per_row": round(estimate_bytes(kind, rows, dim, m=int(info.get("M", 32)),
                                                                nlist=int(info.get("nlist", 0))) / rows, 1),
                 "rss_growth_mb": round(rss_growth, 1)}
        if args.save is not None and not index.exact:
            atomic_write_json(args.save / f"{kind}.json", {**build, "describe": info})
            print(f"# {kind}: saved to {args.save / f'{kind}.npz'}", file=sys.stderr, flush=True)
        row = measure(kind, index, sets, truth, args.sweep, exact_p50)
        row = {"kind": kind, **build, **row}
        exact_p50 = row["p50_ms"] if kind in ("flat", "numpy") and exact_p50 is None else exact_p50
        emit(results, row, args.json)
        del index
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
