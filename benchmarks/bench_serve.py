"""Load on `kikimimi serve` over loopback, and exact-vs-approximate recall of its vector index.

For each index size (``--sizes``, default 10 000 and 1 000 000 random unit vectors of ``--dim`` dimensions)
it builds the vector index the server would choose (``kind="auto"``: exact faiss flat below
``--exact-below`` rows, HNSW above, calibrated to recall@10 >= 0.95), serves it with uvicorn on 127.0.0.1 and
runs ``--clients`` concurrent HTTP clients (a separate process, so they do not share the server's GIL) for
``--seconds`` seconds of requests drawn from ``--mix``: ``GET /api/search`` text queries, ``GET /api/similar``
(search by example of an indexed file) and ``GET /api/tags`` (its zero-shot tags). Printed per run: build
seconds, requests/s, latency p50/p95/p99 (ms) overall and per endpoint, status counts (503 = queue full), the
server's resident memory sampled during the load (first, last, growth %) and its peak, and recall@10 of the
index against exact search, for two kinds of queries:

- ``uniform``: random unit vectors (the worst case for any ANN: in high dimension all points are about
  equally far, so an inverted-file index must visit most lists to find the true top 10);
- ``near``: a stored vector plus noise 1.5 times its norm (cosine ≈ 0.55), like a real query near sounds.

``--data clustered`` draws the index around 1000 random centres instead (how embeddings of real sounds
fill the space), where approximate search pays off. The text side of these runs is a stand-in that hashes
the query to a vector (no model time), so the figures are the server and the index. ``--model CKPT`` adds a
run with that CLAP checkpoint's own text encoder over a ``--model-rows`` index of the model's dimension: the
end-to-end latency of a text query.

End-to-end text-query latency (``text_e2e`` in every row; ``--text-queries`` of them, 0 = skip): one client in
another process sends ``GET /api/search?q=…&top=10`` one after the other over loopback, first ``--text-queries``
texts the server has never seen (``cache_miss``: the text embedding is computed, so it is included — the hash
stand-in costs microseconds, a real ``--model`` its encoder time), then the same texts again (``cache_hit``: the
server's text-embedding cache answers, so only HTTP, the search and the answer are timed). p50/p95/p99 in ms.

``--index-from DIR`` serves the HNSW index that ``benchmarks/bench_index_scale.py --kinds hnsw --save DIR`` built
(e.g. 1M × 768: ``--rows 1000000``) instead of building one per ``--sizes``, and measures its recall on the query
sets saved with it: the 1M figures without the build.

Usage: python benchmarks/bench_serve.py [--sizes 10000 1000000] [--dim 768] [--clients 4] [--seconds 10]
           [--mix text similar tags] [--model CKPT] [--text-queries 200] [--index-from DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import socket
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from kikimimi.inference.search import SearchIndex
from kikimimi.inference.vector_index import EXACT_BELOW, VectorIndex, normalise, recall_at_k

WORDS = ("dog bark cat meow rain thunder car horn siren bird song piano guitar speech laughter door knock water "
         "wind engine train bell clock alarm baby crowd applause drum violin engine footsteps glass").split()


class HashText:
    """Text → a fixed random unit vector per query string (crc32 seed): the index is what is measured."""

    sample_rate = 16000

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode_text(self, texts):
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])
        return out.astype(np.float32)

    def encode_audio(self, audio, sample_rate=None, batch_size=8):  # not used by text search
        raise RuntimeError("the benchmark stand-in has no audio side")


DATA = "uniform"  # set from --data


def random_chunks(n: int, dim: int, seed: int, chunk: int = 100_000):
    """Unit vectors ``[<=chunk, dim]`` float32, the same for a given seed each time they are generated:
    uniform directions, or (``--data clustered``) points around 1000 random centres (cosine ≈ 0.86 to their
    centre), closer to how embeddings of real sounds fill the space."""
    centres = np.random.default_rng([seed, 10**6]).standard_normal((1000, dim), dtype=np.float32)
    for i, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, i])
        x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        if DATA == "clustered":
            x = centres[rng.integers(0, len(centres), len(x))] + 0.6 * x
        yield start, normalise(x)


def build_index(n: int, dim: int, seed: int, exact_below: int) -> tuple[VectorIndex, float]:
    """The index ``kind="auto"`` gives for ``n`` rows, filled chunk by chunk (bounded extra memory)."""
    t = time.perf_counter()
    chunks = random_chunks(n, dim, seed)
    _, first = next(chunks)
    if n < exact_below:
        index = VectorIndex.build(first, exact_below=exact_below)
    else:  # the kind auto picks for the full size (HNSW, or its quantised variant), filled chunk by chunk
        kind = VectorIndex.choose_kind(n, "auto", exact_below, dim=dim)
        index = VectorIndex.build(first, kind=kind, exact_below=exact_below)
    for _, part in chunks:
        index.add(part)
    if not index.exact:
        index.calibrate(0.95)
        index.params["reason"] = f"{n} rows >= exact_below={exact_below}"
    return index, time.perf_counter() - t


def exact_truth(n: int, dim: int, seed: int, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Exact top-k rows by brute force over the regenerated vectors; also the seconds it took per query."""
    t = time.perf_counter()
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start, part in random_chunks(n, dim, seed):
        s = queries @ part.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        cs = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        ci = np.concatenate([best_i, top + start], 1)
        order = np.argsort(-cs, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cs, order, 1), np.take_along_axis(ci, order, 1)
    return best_i, (time.perf_counter() - t) / len(queries)


def synthetic_search_index(index: VectorIndex, model_id: str, vectors: bool = False) -> SearchIndex:
    """A SearchIndex over ``index`` whose entries are named clips; its embeddings are the index's vectors with
    ``vectors`` (search by example and tags of an indexed file need them), else a zero-size view."""
    n = index.size
    entries = [{"key": f"clip{i:07d}.wav", "path": f"/nonexistent/clip{i:07d}.wav", "size": 0, "mtime_ns": 0,
                "duration_s": 10.0, "segments": [[0.0, 10.0]]} for i in range(n)]
    emb = index.vectors() if vectors else np.broadcast_to(np.zeros(1, np.float32), (n, index.dim))
    out = SearchIndex("/nonexistent", model_id, index.dim, entries, emb)
    out._vectors = index
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(app) -> tuple[object, str]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           limit_concurrency=256))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def _request(rng: random.Random, endpoint: str, n_keys: int) -> tuple[str, dict]:
    """The path and parameters of one request to ``endpoint`` (``text``, ``similar`` or ``tags``)."""
    if endpoint == "text":
        return "/api/search", {"q": " ".join(rng.choice(WORDS) for _ in range(3)) + f" {rng.randrange(10**6)}",
                               "top": 10}
    key = f"clip{rng.randrange(n_keys):07d}.wav"
    if endpoint == "similar":
        return "/api/similar", {"key": key, "top": 10}
    return "/api/tags", {"key": key, "labels": ",".join(rng.sample(WORDS, 8))}


def _client_process(url: str, clients: int, seconds: float, seed: int, out, mix: tuple[str, ...] = ("text",),
                    n_keys: int = 1) -> None:
    """Run ``clients`` threads of back-to-back requests for ``seconds``, each to an endpoint of ``mix`` drawn at
    random; put ``{endpoint: (latencies ms of 200 answers, statuses)}`` on ``out``."""
    import httpx

    stop_at = time.monotonic() + seconds
    lat: dict[str, list[float]] = {e: [] for e in mix}
    statuses: dict[str, dict[int, int]] = {e: {} for e in mix}
    lock = threading.Lock()

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < stop_at:
                endpoint = rng.choice(mix)
                path, params = _request(rng, endpoint, n_keys)
                t = time.perf_counter()
                r = c.get(path, params=params)
                ms = 1000 * (time.perf_counter() - t)
                with lock:
                    statuses[endpoint][r.status_code] = statuses[endpoint].get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        lat[endpoint].append(ms)
                    elif r.status_code == 503:
                        time.sleep(float(r.headers.get("retry-after", "1")) / 10)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out.put({e: (lat[e], statuses[e]) for e in mix})


def _summary(lat: list[float], statuses: dict[int, int], seconds: float) -> dict:
    lat_a = np.asarray(lat) if lat else np.zeros(1)
    return {"queries": len(lat), "qps": round(len(lat) / seconds, 1),
            "p50_ms": round(float(np.percentile(lat_a, 50)), 2), "p95_ms": round(float(np.percentile(lat_a, 95)), 2),
            "p99_ms": round(float(np.percentile(lat_a, 99)), 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def load_run(app, clients: int, seconds: float, seed: int, mix: tuple[str, ...] = ("text",), n_keys: int = 1) -> dict:
    """Serve ``app`` on loopback and load it from another process (:func:`_client_process`); per endpoint and
    overall: requests, requests/s, p50/p95/p99 ms of the 200 answers, statuses; and the server's resident
    memory (this process) sampled every 0.5 s during the run: first sample, last, and the growth in per cent."""
    server, url = serve_in_thread(app)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_client_process, args=(url, clients, seconds, seed, queue, tuple(mix), n_keys))
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            samples.append(current_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    t = time.perf_counter()
    proc.start()
    sampler.start()
    per = queue.get(timeout=seconds + 300)
    proc.join()
    done.set()
    wall = time.perf_counter() - t
    server.should_exit = True
    every = [ms for lat, _ in per.values() for ms in lat]
    total: dict[int, int] = {}
    for _, st in per.values():
        for code, count in st.items():
            total[code] = total.get(code, 0) + count
    out = {"clients": clients, "seconds": round(wall, 2), "mix": list(mix), **_summary(every, total, seconds),
           "endpoints": {e: _summary(lat, st, seconds) for e, (lat, st) in per.items()}}
    if len(samples) >= 2:
        out["server_rss_mb"] = {"first": round(samples[0], 1), "last": round(samples[-1], 1),
                                "max": round(max(samples), 1),
                                "growth_pct": round(100 * (samples[-1] - samples[0]) / samples[0], 1)}
    return out


def _text_latency_process(url: str, texts: list[str], out) -> None:
    """Send each text query once, then each again, one at a time; put ``(first pass ms, second pass ms, statuses)``
    on ``out``."""
    import httpx

    passes: list[list[float]] = [[], []]
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=60) as c:
        for ms in passes:
            for text in texts:
                t = time.perf_counter()
                r = c.get("/api/search", params={"q": text, "top": 10})
                ms.append(1000 * (time.perf_counter() - t))
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    out.put((passes[0], passes[1], statuses))


def text_latency(app, n: int, seed: int) -> dict:
    """End-to-end latency of ``n`` sequential text queries through ``app`` served on loopback (module docstring):
    ``cache_miss`` (text embedding included) and ``cache_hit`` (served from the text-embedding cache)."""
    rng = random.Random(seed + 7)
    texts = [" ".join(rng.choice(WORDS) for _ in range(3)) + f" e2e {i}" for i in range(n)]
    server, url = serve_in_thread(app)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_text_latency_process, args=(url, texts, queue))
    proc.start()
    miss, hit, statuses = queue.get(timeout=600)
    proc.join()
    server.should_exit = True

    def pct(ms: list[float]) -> dict:
        p50, p95, p99 = np.percentile(np.asarray(ms), [50, 95, 99])
        return {"queries": len(ms), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
                "p99_ms": round(float(p99), 2)}

    return {"cache_miss": {**pct(miss), "text_embedding": "included"},
            "cache_hit": {**pct(hit), "text_embedding": "excluded (served from the server's cache)"},
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def saved_index(folder: Path) -> tuple[VectorIndex, dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The HNSW index, its build record and the query sets with their exact top-10 that
    ``bench_index_scale.py --save`` wrote into ``folder``."""
    try:
        built = json.loads((folder / "hnsw.json").read_text())
        index = VectorIndex.from_saved(built["describe"], path=folder / "hnsw.npz")
        with np.load(folder / "queries.npz", allow_pickle=False) as z:
            sets = {n[len("queries_"):]: z[n] for n in z.files if n.startswith("queries_")}
            truth = {n[len("truth_"):]: z[n] for n in z.files if n.startswith("truth_")}
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"'{folder}': no HNSW index saved by bench_index_scale.py --kinds hnsw --save ({exc})") \
            from None
    return index, built, sets, truth


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="the server's embedding/search threads")
    parser.add_argument("--queue-limit", type=int, default=16)
    parser.add_argument("--exact-below", type=int, default=EXACT_BELOW)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--model", help="a CLAP checkpoint: adds an end-to-end text-query run with its encoder")
    parser.add_argument("--model-rows", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("uniform", "clustered"), default="uniform")
    parser.add_argument("--text-queries", type=int, default=200,
                        help="sequential text queries of the end-to-end latency (each twice: cache miss, hit; 0: skip)")
    parser.add_argument("--index-from", metavar="DIR", type=Path,
                        help="serve the HNSW index bench_index_scale.py --save wrote here instead of --sizes")
    parser.add_argument("--mix", nargs="+", choices=("text", "similar", "tags"), default=["text", "similar", "tags"],
                        help="endpoints the clients call, drawn at random: text search, search by example and "
                             "zero-shot tags of an indexed file")
    args = parser.parse_args()
    global DATA
    DATA = args.data
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from kikimimi.apps.serve.app import ServeSettings, create_app

    settings = ServeSettings(workers=args.workers, queue_limit=args.queue_limit, max_top=100)
    results = []
    from _common import cpu_model
    from bench_index_scale import cpu_flags

    what = f"index from {args.index_from}" if args.index_from else f"{args.data} data, dim {args.dim}"
    print(f"# bench_serve: {what}, {args.clients} clients × {args.seconds:g} s, "
          f"server workers {args.workers}, queue {args.queue_limit}, cores {os.cpu_count()}", flush=True)
    print(f"# CPU: {cpu_model()}; vector extensions: {cpu_flags()}; load average {os.getloadavg()[0]:.2f}",
          flush=True)
    if args.index_from is not None:
        rss0 = current_rss_mb()
        t = time.perf_counter()
        index, built, sets, truth = saved_index(args.index_from)
        load_s = time.perf_counter() - t
        recall = {name: round(recall_at_k(index.search(q, 10)[1], truth[name], 10), 4) for name, q in sets.items()}
        by_key = bool({"similar", "tags"} & set(args.mix))
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(HashText(index.dim), tmp, settings=settings,
                             index=synthetic_search_index(index, "hash", vectors=by_key))
            e2e = text_latency(app, args.text_queries, args.seed) if args.text_queries else None
            load = load_run(app, args.clients, args.seconds, args.seed, tuple(args.mix), index.size)
        row = {"rows": index.size, "dim": index.dim, "index_from": str(args.index_from),
               "vector_index": {k: v for k, v in index.describe().items() if k != "library"},
               "build_s": built.get("build_s"), "load_s": round(load_s, 1), "recall": recall, "text_e2e": e2e,
               "load": load, "index_rss_mb": round(current_rss_mb() - rss0, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
        args.sizes = []
    for n in args.sizes:
        rss0 = current_rss_mb()
        index, build_s = build_index(n, args.dim, args.seed, args.exact_below)
        info = index.describe()
        rng = np.random.default_rng(args.seed + 99)
        uniform = normalise(rng.standard_normal((args.recall_queries, args.dim), dtype=np.float32))
        picks = rng.choice(n, args.recall_queries, replace=False)
        near = normalise(index.vectors(np.sort(picks)) + 1.5 * uniform)
        recall = {}
        for name, q in (("uniform", uniform), ("near", near)):
            truth, exact_s = exact_truth(n, args.dim, args.seed, q, 10)
            t = time.perf_counter()
            found = index.search(q, 10)[1]
            ann_s = (time.perf_counter() - t) / len(q)
            recall[name] = {"recall_at_10": round(recall_at_k(found, truth, 10), 4),
                            "index_ms_per_query": round(1000 * ann_s, 3),
                            "numpy_brute_force_ms_per_query": round(1000 * exact_s, 3)}
        rss_index = current_rss_mb() - rss0
        with tempfile.TemporaryDirectory() as tmp:
            by_key = bool({"similar", "tags"} & set(args.mix))
            app = create_app(HashText(args.dim), tmp, settings=settings,
                             index=synthetic_search_index(index, "hash", vectors=by_key))
            e2e = text_latency(app, args.text_queries, args.seed) if args.text_queries else None
            load = load_run(app, args.clients, args.seconds, args.seed, tuple(args.mix), n)
        row = {"rows": n, "dim": args.dim, "data": args.data,
               "vector_index": {k: v for k, v in info.items() if k != "library"},
               "build_s": round(build_s, 1), "recall": recall, "text_e2e": e2e, "load": load,
               "index_rss_mb": round(rss_index, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
        del app, index

    if args.model:
        from kikimimi.inference.clap import load_clap

        model = load_clap(args.model, device=args.device)
        model.encode_text(["warm up"])
        index, build_s = build_index(args.model_rows, model.embedding_dim, args.seed, args.exact_below)
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(model, tmp, settings=settings, index=synthetic_search_index(index, args.model))
            e2e = text_latency(app, args.text_queries, args.seed) if args.text_queries else None
            load = load_run(app, args.clients, args.seconds, args.seed)
        row = {"rows": args.model_rows, "dim": model.embedding_dim, "model": args.model,
               "text_encoder": model.text_encoder_description(), "vector_index": index.kind, "text_e2e": e2e,
               "load": load,
               "peak_rss_mb": round(peak_rss_mb(), 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
