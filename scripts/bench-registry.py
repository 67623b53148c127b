#!/usr/bin/env python3
"""Benchmark the registry at size (issue 11) and print the BENCHMARKS.md table rows.

    scripts/bench-registry.py N [--backend sqlite|postgres] [--bin target/release/icpgate]
                              [--dir /tmp/icpgate-bench] [--pg-url postgres://postgres@127.0.0.1:5432]

With N filings from scripts/gen-filings.py (generated once into --dir): a fresh
registry, then `icpgate registry import` (wall time, peak RSS); `icpgate serve` on
it (time until /readyz answers 200, RSS then); admin writes (20 filings submitted,
passed and approved: 60 writes, median and worst); pages of GET /v1/filings
(limit=100: the first, one in the middle, one filtered by status; median of 5 each,
the slowest shown); `icpgate registry export` (wall time, peak RSS, lines).
PostgreSQL runs in a database of its own (`icpgate_bench`, dropped and created with
psql). Build first: `cargo build --release`. A benchmark, not a test: numbers move
with whatever else runs on the machine.
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

TOKEN = "bench-admin-token-0123456789abcdef-0123456789"
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def timed(args, env=None):
    """Run args to the end: (seconds, peak RSS MiB, stdout+stderr)."""
    start = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mib(proc.pid))
        time.sleep(0.05)
    out = proc.stdout.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (" ".join(args), out[-2000:]))
    return time.time() - start, peak, out


def api(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}
    data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
    conn.request(method, path, body=data, headers=headers)
    reply = conn.getresponse()
    raw = reply.read()
    conn.close()
    return reply.status, json.loads(raw) if raw else None


def ready(port, proc, limit_s):
    start = time.time()
    while time.time() - start < limit_s:
        if proc.poll() is not None:
            sys.exit("icpgate serve exited with %s" % proc.returncode)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return time.time() - start
        except OSError:
            pass
        time.sleep(0.01)
    sys.exit("not ready within %d s" % limit_s)


def fresh_registry(args, work):
    if args.backend == "sqlite":
        path = os.path.join(work, "registry-%d.db" % args.n)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        return {"backend": "\"sqlite\"", "path": json.dumps(path)}
    for sql in ("DROP DATABASE IF EXISTS icpgate_bench", "CREATE DATABASE icpgate_bench"):
        subprocess.run(["psql", args.pg_url + "/postgres", "-qc", sql], check=True)
    return {"backend": "\"postgres\"", "url": json.dumps(args.pg_url + "/icpgate_bench")}


def write_config(work, registry, http_port, admin_port):
    lines = ["[listen]", "http = \"127.0.0.1:%d\"" % http_port,
             "admin = \"127.0.0.1:%d\"" % admin_port, "", "[registry]"]
    lines += ["%s = %s" % kv for kv in registry.items()]
    lines += ["", "[upstreams.storefront]", "servers = [\"127.0.0.1:9\"]", ""]
    path = os.path.join(work, "bench.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def admin_writes(port):
    """60 admin writes on the running gate: seconds each."""
    took = []
    entity = {"name": "杭州示例科技有限公司", "type": "enterprise",
              "certificate_number": "91330100MA27XXXX1X", "province": "浙"}
    website = {"name": "示例旺铺", "owner": {"name": "张三", "phone": "13800000000",
                                          "email": "ops@example.cn"}}
    stamp = int(time.time())
    for i in range(20):
        submission = {"domains": ["bench-%d-%02d.cn" % (stamp, i)], "product": "storefront",
                      "kind": "new", "entity": entity, "website": website}
        steps = [("/v1/filings", submission)]
        for path, body in steps:
            t = time.time()
            status, filing = api(port, "POST", path, body)
            took.append(time.time() - t)
            if status != 201:
                sys.exit("submit: %s %s" % (status, filing))
        fid = filing["id"]
        for step, body in (("initial-review", {"approve": True}),
                           ("authority-review", {"approve": True,
                                                 "icp_number": "浙ICP备%08d号-1" % (90000000 + i)})):
            t = time.time()
            status, answer = api(port, "POST", "/v1/filings/%d/%s" % (fid, step), body)
            took.append(time.time() - t)
            if status != 200:
                sys.exit("%s: %s %s" % (step, status, answer))
    return took


def page_times(port, n):
    """The slowest median of 5 over three kinds of page of 100."""
    worst = 0.0
    for path in ("/v1/filings?limit=100", "/v1/filings?limit=100&after=%d" % (n // 2),
                 "/v1/filings?limit=100&status=initial_review&after=%d" % (n // 2)):
        took = []
        for _ in range(5):
            t = time.time()
            status, page = api(port, "GET", path)
            took.append(time.time() - t)
            if status != 200 or len(page["filings"]) != 100:
                sys.exit("%s: %s" % (path, status))
        worst = max(worst, statistics.median(took))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "icpgate"))
    parser.add_argument("--dir", default="/tmp/icpgate-bench")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    work = args.dir
    os.makedirs(work, exist_ok=True)
    filings = os.path.join(work, "filings-%d.jsonl" % args.n)
    if not os.path.exists(filings):
        with open(filings + ".part", "w") as out:
            subprocess.run([sys.executable, os.path.join(HERE, "gen-filings.py"), str(args.n)],
                           stdout=out, check=True)
        os.rename(filings + ".part", filings)

    http_port, admin_port = free_port(), free_port()
    config = write_config(work, fresh_registry(args, work), http_port, admin_port)
    env = dict(os.environ, ICPGATE_ADMIN_TOKEN=TOKEN, RUST_LOG="warn")
    imported, import_rss, _ = timed([args.bin, "registry", "import", "--config", config, filings], env)

    proc = subprocess.Popen([args.bin, "serve", "--config", config], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = ready(admin_port, proc, 600)
        start_rss = rss_mib(proc.pid)
        writes = admin_writes(admin_port)
        page = page_times(admin_port, args.n)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    out = os.path.join(work, "export-%d.jsonl" % args.n)
    exported, export_rss, _ = timed([args.bin, "registry", "export", "--config", config, out], env)
    with open(out, "rb") as f:
        lines = sum(1 for _ in f)

    print("| %s, %d filings | value |" % (args.backend, args.n))
    print("|---|---|")
    print("| `registry import` | %.1f s (peak RSS %.0f MiB) |" % (imported, import_rss))
    print("| `serve`: ports open and `/readyz` 200 | %.2f s |" % start)
    print("| RSS after start | %.0f MiB |" % start_rss)
    print("| admin write (submit, review step), 60 writes | median %.1f ms, max %.1f ms |"
          % (statistics.median(writes) * 1000, max(writes) * 1000))
    print("| a page of `GET /v1/filings?limit=100` | %.1f ms |" % (page * 1000))
    print("| `registry export` | %.1f s (peak RSS %.0f MiB, %d lines) |" % (exported, export_rss, lines))


if __name__ == "__main__":
    main()
