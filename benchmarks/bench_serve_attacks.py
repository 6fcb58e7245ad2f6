"""The slow-client, idle-connection and memory-bomb attacks on `kikimimi serve`, at full size, over loopback.

Issue 25 found that 130 idle connections made every request — authorised ones included — a 503 for as long
as they stayed open (>= 150 s), and that a 400 KB FLAC (119 s, 8 channels, 384 kHz) cost +1.74 GB and 15.7 s
per request. This script serves a two-file index (a stand-in model: no model time) on 127.0.0.1 in this
process and measures, for the server as `kikimimi serve` ran it before (plain uvicorn,
``limit_concurrency=128``) and as it runs it now (:func:`kikimimi.apps.serve.server.server_config`):

- ``idle``: ``--idle`` (130) sockets that connect and send nothing (one sends half its headers), then
  ``--requests`` authorised requests: how many got 503, their latency, and after how long the server closed
  the idle sockets (it does not, before: the run gives up after ``--hold-s``);
- ``slow``: ``--slow`` (20) clients that send their headers and then one body byte a second: how long the
  server holds them (the body deadline ``--body-timeout-s``) and whether authorised requests are served meanwhile;
- ``bomb``: the 119-s 8-channel 384-kHz FLAC posted to ``/api/example`` (now refused on its header): status,
  time, and the process's peak resident memory before and after; posted cross-site too (403).

Prints one line per figure with the CPU model. ``--bomb-unbounded`` also posts the bomb to a server whose
decoded-size limit is lifted (the old behaviour: ≈ 1.7 GB and seconds per request; off by default).

Usage: python benchmarks/bench_serve_attacks.py [--idle 130] [--requests 20] [--slow 20] [--hold-s 20]
           [--body-timeout-s 5] [--header-timeout-s 5] [--bomb-unbounded]
"""

from __future__ import annotations

import argparse
import io
import resource
import socket
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
import uvicorn
from _common import cpu_model  # noqa: E402  (benchmarks/ is the script's folder)

from kikimimi.apps.serve.app import ServeSettings, create_app
from kikimimi.apps.serve.server import ConnectionLimits, server_config
from kikimimi.inference.search import update_index

TOKEN = "bench-token-0123456789abcdef"
SR = 16000


class StandIn:
    """A CLAP stand-in with no model time: audio → its level and spectral centroid bumps; text → a hash."""

    sample_rate = SR
    temperature_scale = 20.0

    def encode_audio(self, audio, sample_rate=None, batch_size=8):
        out = []
        for wave in audio:
            spec = np.abs(np.fft.rfft(np.asarray(wave, dtype=np.float32)))
            v = np.zeros(32, np.float32)
            v[int(np.argmax(spec)) % 32] = 1.0
            out.append(v + 0.01)
        return np.stack(out)

    def encode_text(self, texts):
        rng = [np.random.default_rng(zlib.crc32(t.encode())) for t in texts]
        return np.stack([r.standard_normal(32).astype(np.float32) for r in rng])




def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Served:
    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> tuple[str, int]:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return "127.0.0.1", self.server.servers[0].sockets[0].getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(timeout=30)


def request(addr, raw: bytes, timeout: float = 30.0) -> tuple[int, float]:
    t0 = time.perf_counter()
    with socket.create_connection(addr, timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:  # the server answered early and closed: read its answer
            pass
        head = b""
        while b"\r\n" not in head:
            try:
                part = s.recv(4096)
            except OSError:
                break
            if not part:
                break
            head += part
    return (int(head.split()[1]) if head else 0), time.perf_counter() - t0


def authorised_get(path: str = "/api/status") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\n\r\n").encode()


def closed_by_server(socks: list[socket.socket], hold_s: float) -> tuple[int, float]:
    """Wait up to ``hold_s`` for the server to close the sockets; (how many it closed, seconds until the last)."""
    t0, closed, last = time.monotonic(), 0, 0.0
    pending = list(socks)
    while pending and time.monotonic() - t0 < hold_s:
        for s in list(pending):
            s.settimeout(0.01)
            try:
                gone = s.recv(1) == b""
            except (TimeoutError, BlockingIOError):
                gone = False
            except OSError:
                gone = True
            if gone:
                closed, last = closed + 1, time.monotonic() - t0
                pending.remove(s)
        time.sleep(0.05)
    for s in socks:
        s.close()
    return closed, last


def attack_idle(name: str, config: uvicorn.Config, args) -> None:
    with Served(config) as addr:
        socks = [socket.create_connection(addr) for _ in range(args.idle)]
        socks[0].sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half the headers, never the rest
        time.sleep(0.3)
        answers = [request(addr, authorised_get()) for _ in range(args.requests)]
        codes = [c for c, _ in answers]
        lat = sorted(t for _, t in answers)
        closed, after = closed_by_server(socks, args.hold_s)
    print(f"idle  {name:9s}: {args.idle} idle sockets; {args.requests} authorised requests -> "
          f"{codes.count(200)} x 200, {codes.count(503)} x 503 (p50 {1000 * lat[len(lat) // 2]:.1f} ms); "
          f"idle sockets closed by the server: {closed}/{args.idle}"
          + (f" within {after:.1f} s" if closed else f" (none within {args.hold_s:g} s)"))


def attack_slow(name: str, config: uvicorn.Config, args) -> None:
    with Served(config) as addr:
        socks = []
        for _ in range(args.slow):
            s = socket.create_connection(addr)
            s.sendall(f"POST /api/similar HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n"
                      "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n".encode())
            socks.append(s)
        t0, cut, served = time.monotonic(), 0, []
        stop = t0 + args.hold_s
        alive = list(socks)
        while alive and time.monotonic() < stop:
            for s in list(alive):
                try:
                    s.sendall(b"x")
                    s.settimeout(0.001)
                    if s.recv(4096):  # an answer (408) came: the server cut it
                        raise ConnectionResetError
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    cut += 1
                    alive.remove(s)
            served.append(request(addr, authorised_get())[0])
            time.sleep(1.0)
        held = time.monotonic() - t0
        for s in socks:
            s.close()
    print(f"slow  {name:9s}: {args.slow} clients trickling 1 byte/s: {cut} cut by the server after {held:.1f} s; "
          f"authorised requests meanwhile: {served.count(200)}/{len(served)} x 200")


def bomb_bytes() -> bytes:
    buf = io.BytesIO()
    block = np.zeros((384_000, 8), dtype=np.int16)  # silence: FLAC stores it in a few kB a second
    with sf.SoundFile(buf, "w", samplerate=384_000, channels=8, format="FLAC", subtype="PCM_16") as f:
        for _ in range(119):
            f.write(block)
    return buf.getvalue()


def post_bomb(addr, data: bytes, origin: str | None = None) -> tuple[int, float]:
    boundary = "kikimimibench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bomb.flac\"\r\n"
            "Content-Type: audio/flac\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    extra = f"Origin: {origin}\r\n" if origin else ""
    head = (f"POST /api/example HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n{extra}"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    return request(addr, head + body, timeout=600)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--idle", type=int, default=130)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--slow", type=int, default=20)
    p.add_argument("--hold-s", type=float, default=20.0)
    p.add_argument("--header-timeout-s", type=float, default=5.0)
    p.add_argument("--body-timeout-s", type=float, default=5.0)
    p.add_argument("--bomb-unbounded", action="store_true")
    p.add_argument("--skip", nargs="*", default=[], choices=["idle", "slow", "bomb"])
    args = p.parse_args(argv)
    print(f"CPU: {cpu_model()}; Python {sys.version.split()[0]}; uvicorn {uvicorn.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib"
        lib.mkdir()
        t = np.arange(SR) / SR
        for f in (220, 660):
            sf.write(lib / f"t{f}.wav", 0.5 * np.sin(2 * np.pi * f * t), SR)
        update_index(StandIn(), lib, Path(tmp) / "index", model_id="stand-in")
        settings = ServeSettings(token=TOKEN, body_timeout_s=args.body_timeout_s)
        app = create_app(StandIn(), Path(tmp) / "index", settings=settings)
        before = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", limit_concurrency=128,
                                timeout_keep_alive=5)  # how `kikimimi serve` ran it before
        limits = ConnectionLimits(header_timeout_s=args.header_timeout_s)

        def now():
            return server_config(app, "127.0.0.1", 0, limits, log_level="critical")

        if "idle" not in args.skip:
            attack_idle("before", before, args)
            attack_idle("now", now(), args)
        if "slow" not in args.skip:
            attack_slow("now", now(), args)
        if "bomb" not in args.skip:
            t0 = time.perf_counter()
            data = bomb_bytes()
            print(f"bomb: {len(data) / 1e3:.0f} kB FLAC, 119 s x 8 channels x 384 kHz "
                  f"({119 * 384_000 * 8 / 1e6:.0f} M samples = {119 * 384_000 * 8 * 4 / 2**30:.2f} GiB as float32); "
                  f"made in {time.perf_counter() - t0:.1f} s")
            with Served(now()) as addr:
                rss0 = peak_rss_mb()
                code, took = post_bomb(addr, data)
                rss1 = peak_rss_mb()
                cross, _ = post_bomb(addr, data, origin="http://evil.example")
            print(f"bomb  now      : {code} in {1000 * took:.0f} ms; peak RSS {rss0:.0f} -> {rss1:.0f} MB "
                  f"(+{rss1 - rss0:.0f} MB); posted from another site: {cross}")
            if args.bomb_unbounded:
                loose = create_app(StandIn(), Path(tmp) / "index", settings=ServeSettings(
                    token=TOKEN, max_decoded_samples=10**12, max_upload_s=1e9))
                with Served(server_config(loose, "127.0.0.1", 0, limits, log_level="critical")) as addr:
                    rss0 = peak_rss_mb()
                    code, took = post_bomb(addr, data)
                    rss1 = peak_rss_mb()
                print(f"bomb  no limit : {code} in {took:.1f} s; peak RSS {rss0:.0f} -> {rss1:.0f} MB "
                      f"(+{rss1 - rss0:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
