"""Benchmark: 200 concurrent messages.get (format=full) against the emulator.

The emulator runs as a subprocess (its GIL is then separate from the client's), with no
latency and no quota limit; 200 client threads, each on its own keep-alive connection,
wait on a barrier and fire together. Prints one JSON line:
{"requests": 200, "seconds": ..., "requests_per_second": ...}

    .venv/bin/python bench/bench_emulator.py [--requests 200] [--format full] [--in-process]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_subprocess(count: int) -> tuple[subprocess.Popen[str], dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gmail_emulator", "--port", "0", "--mailbox",
         f"bench@example.com:{count}", "--quota-user-per-minute", "1000000000",
         "--quota-project-per-minute", "1000000000", "--concurrent-requests-per-user", "100000"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    return proc, json.loads(proc.stdout.readline())


def start_in_process(count: int) -> tuple[object, dict]:
    sys.path.insert(0, str(ROOT))
    from gmail_emulator import Emulator, EmulatorConfig

    emu = Emulator(EmulatorConfig(quota_user_per_minute=10**9, quota_project_per_minute=10**9,
                                  concurrent_requests_per_user=10**6))
    mb = emu.add_mailbox("bench@example.com", count=count)
    url = emu.start()
    return emu, {"base_url": url, "mailboxes": [{"access_token": mb.access_token}]}


def list_ids(host: str, port: int, token: str, n: int) -> list[str]:
    conn = http.client.HTTPConnection(host, port)
    conn.request("GET", f"/gmail/v1/users/me/messages?maxResults={min(n, 500)}&alt=json",
                 headers={"Authorization": f"Bearer {token}"})
    ids = [m["id"] for m in json.loads(conn.getresponse().read())["messages"]]
    conn.close()
    return (ids * (n // len(ids) + 1))[:n]


def run(host: str, port: int, token: str, ids: list[str], fmt: str) -> tuple[float, int]:
    barrier = threading.Barrier(len(ids) + 1)
    failures = []
    conns = [http.client.HTTPConnection(host, port, timeout=30) for _ in ids]
    for conn in conns:
        conn.connect()

    def one(conn: http.client.HTTPConnection, msg_id: str) -> None:
        barrier.wait()
        conn.request("GET", f"/gmail/v1/users/me/messages/{msg_id}?format={fmt}&alt=json",
                     headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            failures.append(resp.status)

    threads = [threading.Thread(target=one, args=(c, i)) for c, i in zip(conns, ids, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return elapsed, len(failures)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--format", default="full")
    parser.add_argument("--mailbox-size", type=int, default=5000)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    server, info = (start_in_process if args.in_process else start_subprocess)(args.mailbox_size)
    try:
        url = urllib.parse.urlsplit(info["base_url"])
        token = info["mailboxes"][0]["access_token"]
        ids = list_ids(url.hostname, url.port, token, args.requests)
        run(url.hostname, url.port, token, ids[:20], args.format)  # warm up
        elapsed, failures = run(url.hostname, url.port, token, ids, args.format)
    finally:
        if isinstance(server, subprocess.Popen):
            server.terminate()
            server.wait(timeout=10)
            server.stdout.close()
        else:
            server.stop()
    print(json.dumps({"requests": args.requests, "seconds": round(elapsed, 4),
                      "requests_per_second": round(args.requests / elapsed, 1),
                      "failures": failures}), flush=True)


if __name__ == "__main__":
    main()
