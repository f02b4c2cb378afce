"""Throughput of the durable task API against a warm server, 100 concurrent clients.

Reports, in one run:
- accepted submissions per second (POST /v1/tasks, a 4 s clip, 100 clients);
- GET /v1/tasks/{id} requests per second with p50 and p99 (wrk if installed, else httpx),
  and the same against a bare FastAPI app (uvicorn, one process) answering the same
  JSON, measured the same way in the same run: the ratio is what the service's
  layers (Serve proxy, auth, database read) cost on this machine;
- a cache-hit submission's latency against a full run of the same clip (ratio).

    python -m bench.tasks                    # starts its own service
    python -m bench.tasks --reads-only --seconds 10   # status reads + baseline only
    python -m bench.tasks --url http://127.0.0.1:8000 --key aipp_...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.overhead import DATA, REPO, machine, start_service, stop_service


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def submissions_per_s(
    url: str, headers: dict, clip: bytes, clients: int, per_client: int
) -> dict:
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=httpx.Limits(max_connections=clients)
    ) as http:

        async def one_client(i: int) -> list[str]:
            ids = []
            for j in range(per_client):
                resp = await http.post("/v1/tasks", files={"file": (f"b{i}-{j}.mp3", clip)})
                resp.raise_for_status()
                ids.append(resp.json()["id"])
            return ids

        t0 = time.perf_counter()
        batches = await asyncio.gather(*(one_client(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    ids = [i for b in batches for i in b]
    return {
        "accepted": len(ids),
        "wall_s": round(wall, 2),
        "per_s": round(len(ids) / wall, 1),
        "ids": ids,
    }


def status_reads_wrk(url: str, headers: dict, task_id: str, clients: int, seconds: int) -> dict:
    auth = headers.get("Authorization")
    cmd = [
        "wrk",
        "-t2",
        f"-c{clients}",
        f"-d{seconds}s",
        "--latency",
        *(["-H", f"Authorization: {auth}"] if auth else []),
        f"{url}/v1/tasks/{task_id}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def latency(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "tool": "wrk",
        "rps": round(rps, 1),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


async def status_reads_httpx(
    url: str, headers: dict, task_id: str, clients: int, seconds: int
) -> dict:
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=httpx.Limits(max_connections=clients)
    ) as http:
        deadline = time.perf_counter() + seconds

        async def reader() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                resp = await http.get(f"/v1/tasks/{task_id}")
                latencies.append((time.perf_counter() - t) * 1000)
                errors += resp.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {
        "tool": "httpx",
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "errors": errors,
    }


BARE_APP = """
import json, os
from fastapi import FastAPI
from fastapi.responses import Response

BODY = open(os.environ["BENCH_BODY"], "rb").read()
app = FastAPI()

@app.get("/v1/tasks/{task_id}")
async def get_task(task_id: str) -> Response:
    return Response(BODY, media_type="application/json")
"""


def start_bare_app(body: bytes) -> tuple[str, subprocess.Popen]:
    """A bare FastAPI app on uvicorn answering ``body`` for GET /v1/tasks/{id}."""
    import socket
    import sys

    tmp = Path(tempfile.mkdtemp(prefix="aipp-bare-"))
    (tmp / "bare_app.py").write_text(BARE_APP)
    (tmp / "body.json").write_bytes(body)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=tmp,
        env={**os.environ, "BENCH_BODY": str(tmp / "body.json")},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/v1/tasks/x", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return url, proc


def status_reads(url: str, headers: dict, task_id: str, clients: int, seconds: int) -> dict:
    if shutil.which("wrk"):
        return status_reads_wrk(url, headers, task_id, clients, seconds)
    return asyncio.run(status_reads_httpx(url, headers, task_id, clients, seconds))


def reads_against_baseline(
    url: str, headers: dict, task_id: str, clients: int, seconds: int
) -> dict:
    """The service's status reads and a bare FastAPI app's, same JSON, same tool, same run."""
    body = httpx.get(f"{url}/v1/tasks/{task_id}", headers=headers, timeout=30).content
    service = status_reads(url, headers, task_id, clients, seconds)
    bare_url, proc = start_bare_app(body)
    try:
        bare = status_reads(bare_url, {}, task_id, clients, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "service": service,
        "bare_fastapi": bare,
        "rps_ratio_service_over_bare": round(service["rps"] / bare["rps"], 3)
        if bare["rps"]
        else None,
        "body_bytes": len(body),
    }


def cache_ratio(url: str, headers: dict, runs: int) -> dict:
    # A clip no earlier run has cached: jfk.flac plus a unique trailing tag (FLAC ignores it).
    clip = (DATA / "jfk.flac").read_bytes() + uuid.uuid4().bytes
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        t0 = time.perf_counter()
        http.post("/v1/summarize", files={"file": ("fresh.flac", clip)}).raise_for_status()
        full = time.perf_counter() - t0
        hits = []
        for _ in range(runs):
            t0 = time.perf_counter()
            resp = http.post("/v1/tasks", files={"file": ("again.flac", clip)})
            hits.append(time.perf_counter() - t0)
            assert resp.json()["cached"], resp.text
    hit = statistics.median(hits)
    return {
        "full_run_s": round(full, 3),
        "cache_hit_median_s": round(hit, 4),
        "ratio": round(full / hit, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--key", help="API key when the service requires one.")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-client", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument(
        "--reads-only", action="store_true", help="Only status reads and their baseline."
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tasks.json")
    args = parser.parse_args()

    # The benchmark must measure the API, not the limiter.
    os.environ.setdefault("AIPP_RATE_LIMIT_PER_S", "100000")
    os.environ.setdefault("AIPP_RATE_LIMIT_BURST", "100000")
    handle = None
    url = args.url
    if url is None:
        url, handle = start_service(Path(tempfile.mkdtemp(prefix="aipp-bench-")))
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    results: dict = {"machine": machine(), "clients": args.clients}
    try:
        clip = (DATA / "hotwords.mp3").read_bytes()
        if args.reads_only:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
                created = http.post("/v1/tasks", files={"file": ("reads.mp3", clip)})
                created.raise_for_status()
                task_id = created.json()["id"]
        else:
            subs = asyncio.run(submissions_per_s(url, headers, clip, args.clients, args.per_client))
            task_id = subs.pop("ids")[0]
            results["submissions"] = subs
        results["status_reads"] = reads_against_baseline(
            url, headers, task_id, args.clients, args.seconds
        )
        if not args.reads_only:
            results["cache"] = cache_ratio(url, headers, runs=20)
    finally:
        if handle is not None:
            stop_service(handle)
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
