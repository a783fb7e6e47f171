"""Benchmark: how fast the emulator serves, with no latency and no quota limit.

Two measurements, each against a fresh emulator subprocess (its GIL is then separate
from the client's, and its caches are cold, as they are for a sync that fetches every
message once):

1. 200 concurrent messages.get (format=full): 200 client threads, each on its own
   keep-alive connection, wait on a barrier and fire together.
2. Batch throughput: every message of the mailbox fetched once in 50-part batch requests
   sent one after the other on one keep-alive connection, for messages.get format=full,
   messages.get format=raw and threads.get format=full (every thread once; a thread
   delivers all its messages). Reported as messages served per second.

Prints one JSON line:
{"requests": 200, "seconds": ..., "requests_per_second": ..., "failures": 0,
 "batch": {"parts": 50, "messages_get_full": {"messages", "requests", "failed", "seconds",
 "messages_per_second", "server_cpu_seconds", "messages_per_server_cpu_second"},
 "messages_get_raw": {...}, "threads_get_full": {...}}}
(the server CPU figures need Linux's /proc; on a shared machine they vary less than wall time)

    .venv/bin/python bench/bench_emulator.py [--requests 200] [--format full]
        [--mailbox-size 5000] [--batch-size 50] [--in-process] [--skip-batches]
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMAIL = "bench@example.com"


# No quota and no concurrency limit: the benchmark measures serving, not refusing.
NO_LIMITS = ["--quota-user-per-minute", "1000000000", "--quota-project-per-minute", "1000000000"]
NO_LIMITS += ["--concurrent-requests-per-user", "100000"]


def start_subprocess(count: int) -> tuple[subprocess.Popen[str], dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "gmail_emulator", "--port", "0", "--mailbox", f"{EMAIL}:{count}"]
    proc = subprocess.Popen(
        [*cli, *NO_LIMITS], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    return proc, json.loads(proc.stdout.readline())


def start_in_process(count: int) -> tuple[object, dict]:
    sys.path.insert(0, str(ROOT))
    from gmail_emulator import Emulator, EmulatorConfig

    emu = Emulator(
        EmulatorConfig(
            quota_user_per_minute=10**9,
            quota_project_per_minute=10**9,
            concurrent_requests_per_user=10**6,
        )
    )
    mb = emu.add_mailbox(EMAIL, count=count)
    url = emu.start()
    return emu, {"base_url": url, "mailboxes": [{"access_token": mb.access_token}]}


def list_ids(host: str, port: int, token: str, n: int) -> list[str]:
    conn = http.client.HTTPConnection(host, port)
    conn.request(
        "GET",
        f"/gmail/v1/users/me/messages?maxResults={min(n, 500)}&alt=json",
        headers={"Authorization": f"Bearer {token}"},
    )
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
        conn.request(
            "GET",
            f"/gmail/v1/users/me/messages/{msg_id}?format={fmt}&alt=json",
            headers={"Authorization": f"Bearer {token}"},
        )
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


def all_message_ids(host: str, port: int, token: str) -> list[str]:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    ids: list[str] = []
    page_token = ""
    while True:
        query = "maxResults=500&includeSpamTrash=true&alt=json"
        if page_token:
            query += "&pageToken=" + page_token
        conn.request(
            "GET",
            f"/gmail/v1/users/me/messages?{query}",
            headers={"Authorization": f"Bearer {token}"},
        )
        page = json.loads(conn.getresponse().read())
        ids += [m["id"] for m in page.get("messages", [])]
        page_token = page.get("nextPageToken", "")
        if not page_token:
            conn.close()
            return ids


def thread_sizes(base_url: str, email: str) -> dict[str, int]:
    """Messages per thread, from the control API's snapshot."""
    with urllib.request.urlopen(f"{base_url}_emulator/v1/mailboxes/{email}/snapshot") as resp:
        snapshot = json.loads(resp.read())
    sizes: dict[str, int] = {}
    for message in snapshot["messages"].values():
        sizes[message["threadId"]] = sizes.get(message["threadId"], 0) + 1
    return sizes


def batch_body(targets: list[str], boundary: str) -> bytes:
    parts = [
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <bench+{i}>\r\n\r\n"
        f"GET {target} HTTP/1.1\r\n\r\n"
        for i, target in enumerate(targets)
    ]
    return ("\r\n".join(parts) + f"\r\n--{boundary}--\r\n").encode()


def run_batches(
    host: str, port: int, token: str, targets: list[str], size: int
) -> tuple[float, int]:
    """Send `targets` as `size`-part batches on one connection; (seconds, failed parts)."""
    boundary = "bench_boundary"
    bodies = [batch_body(targets[i : i + size], boundary) for i in range(0, len(targets), size)]
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/mixed; boundary={boundary}",
    }
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.connect()
    failed = 0
    started = time.perf_counter()
    for body, first in zip(bodies, range(0, len(targets), size), strict=True):
        conn.request("POST", "/batch/gmail/v1", body=body, headers=headers)
        answer = conn.getresponse().read()
        failed += len(targets[first : first + size]) - answer.count(b"HTTP/1.1 200 OK")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, failed


def measure_batches(start_server, parts: int) -> dict[str, dict[str, float]]:
    """messages.get full/raw and threads.get full, each on a fresh (cold) emulator."""
    out: dict[str, dict[str, float]] = {}
    for name in ("messages_get_full", "messages_get_raw", "threads_get_full"):
        server, info = start_server()
        try:
            url = urllib.parse.urlsplit(info["base_url"])
            token = info["mailboxes"][0]["access_token"]
            if name == "threads_get_full":
                sizes = thread_sizes(info["base_url"], EMAIL)
                targets = [f"/gmail/v1/users/me/threads/{t}?format=full&alt=json" for t in sizes]
                messages = sum(sizes.values())
            else:
                fmt = name.rsplit("_", 1)[1]
                ids = all_message_ids(url.hostname, url.port, token)
                targets = [f"/gmail/v1/users/me/messages/{i}?format={fmt}&alt=json" for i in ids]
                messages = len(ids)
            cpu_before = server_cpu_seconds(server)
            elapsed, failed = run_batches(url.hostname, url.port, token, targets, parts)
            cpu = server_cpu_seconds(server) - cpu_before
        finally:
            stop_server(server)
        out[name] = {
            "messages": messages,
            "requests": len(targets),
            "failed": failed,
            "seconds": round(elapsed, 3),
            "messages_per_second": round(messages / elapsed, 1),
        }
        if cpu > 0:  # a subprocess on Linux: CPU time is steadier than wall time on a busy box
            out[name]["server_cpu_seconds"] = round(cpu, 3)
            out[name]["messages_per_server_cpu_second"] = round(messages / cpu, 1)
    return out


def server_cpu_seconds(server: object) -> float:
    """User + system CPU seconds of the emulator subprocess (0 in-process or off Linux)."""
    if not isinstance(server, subprocess.Popen):
        return 0.0
    try:
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(server: object) -> None:
    if isinstance(server, subprocess.Popen):
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
    else:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--format", default="full")
    parser.add_argument("--mailbox-size", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--skip-batches", action="store_true")
    args = parser.parse_args()
    starter = start_in_process if args.in_process else start_subprocess

    def start_server() -> tuple[object, dict]:
        return starter(args.mailbox_size)

    server, info = start_server()
    try:
        url = urllib.parse.urlsplit(info["base_url"])
        token = info["mailboxes"][0]["access_token"]
        ids = list_ids(url.hostname, url.port, token, args.requests)
        run(url.hostname, url.port, token, ids[:20], args.format)  # warm up
        elapsed, failures = run(url.hostname, url.port, token, ids, args.format)
    finally:
        stop_server(server)
    result: dict[str, object] = {
        "requests": args.requests,
        "seconds": round(elapsed, 4),
        "requests_per_second": round(args.requests / elapsed, 1),
        "failures": failures,
    }
    if not args.skip_batches:
        result["batch"] = {
            "parts": args.batch_size,
            **measure_batches(start_server, args.batch_size),
        }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
