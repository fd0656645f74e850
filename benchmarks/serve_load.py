"""`skinsage serve` under hostile load, on loopback only: a bounded load script.

Starts the server as its own process (`python -m skinsage serve`) on 127.0.0.1 and measures:
  1. large-pixel uploads: REQUESTS PNGs of --megapixels MP (a few hundred KB each, a flat colour)
     posted by CONCURRENCY threads at once; status counts, p50/p95/max latency, and the server
     process's peak RSS (VmHWM from /proc, so nothing between samples is missed);
  2. a 1 GiB upload, with Content-Length declared and again chunked (no length), streamed in 1 MiB
     blocks over a raw socket: bytes the client could send before the server answered or closed,
     and the peak size of upload files the server spooled to its temp dir;
  3. a 10 GB Content-Length with no body: how long until the server answers or closes.
Every wait is bounded (--timeout); nothing leaves loopback.

    python benchmarks/serve_load.py --model models/model.keras [--requests 15 --concurrency 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GIB = 1 << 30
CHUNK = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=15)
    parser.add_argument("--megapixels", type=float, default=81.0)
    parser.add_argument("--upload-bytes", type=int, default=GIB)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any one wait may take")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve_load."))
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp)}  # the server's spooled uploads land here: measurable
    server = subprocess.Popen([sys.executable, "-m", "skinsage", "-q", "serve", "--model", args.model,
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(port, server, args.timeout)
        base_rss = rss_kib(server.pid)
        png = large_png(args.megapixels)
        figures = {"model": args.model, "baseline_rss_mib": base_rss / 1024,
                   "large_pixels": large_pixel_run(port, server.pid, png, args) if args.requests else None,
                   "big_upload": big_upload(port, server.pid, tmp, args.upload_bytes, args.timeout),
                   "big_chunked_upload": big_upload(port, server.pid, tmp, args.upload_bytes,
                                                    args.timeout, chunked=True),
                   "declared_10gb": declared_only(port, 10 * 10**9, min(args.timeout, 30))}
        figures["server_alive"] = server.poll() is None
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(port: int, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def proc_field(pid: int, name: str, fname: str = "status") -> int:
    for line in Path(f"/proc/{pid}/{fname}").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def rss_kib(pid: int) -> int:
    return proc_field(pid, "VmRSS")


def large_png(megapixels: float) -> bytes:
    """A flat-colour RGB PNG of about `megapixels` MP written by hand (compresses to ~KBs per MP;
    building it with Pillow would itself take the memory we are measuring)."""
    import struct

    side = int((megapixels * 1e6) ** 0.5)
    row = b"\x00" + b"\x80\x40\x20" * side
    compressor, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, content_type: str, timeout: float) -> tuple[int, float]:
    import http.client

    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/api/explain", body=body, headers={
            "Content-Type": content_type, "Host": f"127.0.0.1:{port}"})
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0  # reset or timed out
    finally:
        connection.close()
    return status, time.perf_counter() - start


def large_pixel_run(port: int, pid: int, png: bytes, args) -> dict:
    body, content_type = multipart("big.png", png)
    peak, stop = [rss_kib(pid)], threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(rss_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(lambda _: post(port, body, content_type, args.timeout),
                                range(args.requests)))
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    latencies = sorted(seconds for _, seconds in results)
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"requests": args.requests, "concurrency": args.concurrency,
            "megapixels": args.megapixels, "upload_kib": round(len(png) / 1024),
            "statuses": statuses, "wall_s": round(wall, 2),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[max(0, int(round(0.95 * len(latencies))) - 1)], 3),
            "max_s": round(latencies[-1], 3),
            "peak_rss_mib_sampled": round(max(peak) / 1024),
            "peak_rss_mib_hwm": round(proc_field(pid, "VmHWM") / 1024),
            "rss_after_mib": round(rss_kib(pid) / 1024)}


def big_upload(port: int, pid: int, tmp: Path, size: int, timeout: float, chunked: bool = False) -> dict:
    """Stream a `size`-byte upload (Content-Length declared, or chunked with no length); stop at the
    server's answer or close (or after `size`). `client_sent_bytes` is what the server's socket
    accepted: what the server read plus the kernel's loopback buffers (a few MB)."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"huge.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + size + len(tail)
    sent, answer, peak_tmp = 0, b"", 0
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall((f"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"{framing}\r\n\r\n").encode() + (frame(head) if chunked else head))
        sock.settimeout(0.0)
        block = frame(b"\0" * CHUNK) if chunked else b"\0" * CHUNK
        while sent < size and time.perf_counter() - start < timeout:
            try:
                answer = sock.recv(65536)
                break  # the server answered (or closed: b"") before the body was all sent
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                sock.settimeout(1.0)
                sock.sendall(block)  # whole blocks: a chunked body must stay well-framed
                sent += CHUNK
                sock.settimeout(0.0)
            except (socket.timeout, BlockingIOError):
                sock.settimeout(0.0)
                continue
            except OSError:  # the server closed the connection
                break
            if sent % (64 * CHUNK) == 0:
                peak_tmp = max(peak_tmp, temp_bytes(pid, tmp))
        peak_tmp = max(peak_tmp, temp_bytes(pid, tmp))
        sock.settimeout(5)
        if not answer:
            try:
                if sent >= size:
                    sock.sendall(frame(tail) + b"0\r\n\r\n" if chunked else tail)
                answer = sock.recv(65536)
            except OSError:
                pass
    seconds = time.perf_counter() - start
    time.sleep(0.5)
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
    return {"body_bytes": length, "chunked": chunked, "client_sent_bytes": sent,
            "peak_spooled_temp_bytes": peak_tmp, "status": status, "seconds": round(seconds, 2)}


def frame(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def declared_only(port: int, declared: int, timeout: float) -> dict:
    """Headers declaring `declared` bytes and no body: the answer (or close) and how long it took."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall((f"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Content-Type: multipart/form-data; boundary=x\r\n"
                      f"Content-Length: {declared}\r\n\r\n").encode())
        try:
            answer = sock.recv(65536)
        except OSError:
            answer = b""
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
    return {"declared_bytes": declared, "status": status, "seconds": round(time.perf_counter() - start, 2)}


def temp_bytes(pid: int, folder: Path) -> int:
    """Bytes in the files the server holds open under its TMPDIR (a spooled upload is unlinked at
    once, so only its open descriptor shows it)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith(str(folder)):
                total += os.stat(fd).st_size
        except OSError:
            pass
    return total


if __name__ == "__main__":
    main()
