"""Tracking endpoints against the machine's physical limit: nginx's empty_gif.

    python bench/tracking.py [--seconds 10] [--connections 64] [--rounds 2]
                             [--recording commit|journal] [--http-processes N]
                             [--recipients 100]

Installs nothing: needs nginx and wrk (`apt-get install -y nginx wrk`; .ci/run does not
run benchmarks). Starts nginx serving empty_gif and `mailbeacon serve` (SQLite in a temp
folder, durable recording on), sends one message to --recipients addresses, then
alternates wrk runs against nginx /o/, mailbeacon /o/<token> (the recipients' pixels in
turn) and /c/<token> (their click redirects in turn), and prints req/s, p50/p99 latency
and each one's ratio to nginx measured in the same run. Afterwards it counts the stored
events: every acknowledged hit must be in the database (in journal mode it first waits
for the loader to catch up, and prints how long that took).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

KEY = "key-bench-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def api(port: int, path: str, fields: list[tuple[str, str]]) -> dict[str, object]:
    auth = base64.b64encode(f"api:{KEY}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=urlencode(fields).encode(),
                                 headers={"authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def start_nginx(folder: Path, port: int) -> subprocess.Popen[bytes]:
    conf = folder / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder};
    proxy_temp_path {folder};
    fastcgi_temp_path {folder};
    uwsgi_temp_path {folder};
    scgi_temp_path {folder};
    server {{
        listen 127.0.0.1:{port};
        location /o/ {{ empty_gif; }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def start_mailbeacon(folder: Path, port: int, recording: str = "commit",
                     http_processes: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    db = folder / "bench.db"
    env = {**os.environ, "MAILBEACON_API_KEY": KEY, "MAILBEACON_RECORDING": recording,
           "MAILBEACON_DATABASE_URL": f"sqlite:///{db}", "MAILBEACON_LOG_LEVEL": "warning",
           "MAILBEACON_HTTP_PROCESSES": str(http_processes)}
    proc = subprocess.Popen([sys.executable, "-m", "mailbeacon", "serve", "--http",
                             f"127.0.0.1:{port}"], env=env, cwd=folder,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, str(db)


def tracking_paths(port: int, db_file: str, recipients: int = 1) -> tuple[list[str], list[str]]:
    """Send one message to `recipients` addresses through mailbeacon; their pixel and
    click paths, read back from the local outbox (no relay is configured)."""
    api(port, "/v3/domains", [("name", "example.com")])
    api(port, "/v3/example.com/messages", [
        ("from", "shop@example.com"), ("subject", "bench"),
        ("html", '<p><a href="https://shop.example.net/sale">sale</a></p>'),
        *[("to", f"reader{i}@example.org") for i in range(recipients)]])
    for _ in range(300):
        with sqlite3.connect(db_file) as conn:
            rows = conn.execute("SELECT data FROM local_outbox").fetchall()
        if len(rows) == recipients:
            break
        time.sleep(0.1)
    pixels, clicks = [], []
    for (data,) in rows:
        body = data.decode("utf-8", "replace").replace("=\r\n", "").replace("=3D", "=")
        pixels.append(re.search(r"/o/[a-z0-9]+", body).group(0))  # type: ignore[union-attr]
        clicks.append(re.search(r'/c/[a-z0-9]+(?=">)', body).group(0))  # type: ignore[union-attr]
    return pixels, clicks


def wrk(url: str, seconds: int, connections: int,
        paths: list[str] | None = None) -> dict[str, float]:
    """wrk against `url`, or against its host asking for `paths` in turn (a Lua script:
    give every target the same script, so that wrk's own cost is the same for each)."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if paths:
            listed = ", ".join(f'"{p}"' for p in paths)
            script.write(f"local paths = {{{listed}}}\nlocal i = 0\n"
                         "request = function()\n  i = i % #paths + 1\n"
                         '  return wrk.format("GET", paths[i])\nend\n')
            script.flush()
            command += ["-s", script.name]
        out = subprocess.run([*command, url], capture_output=True, text=True,
                             check=True).stdout

    def millis(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": millis("50"), "p99": millis("99"), "requests": total,
            "bad": int(bad.group(1)) if bad else 0, "errors": 1.0 if errors else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--recording", choices=("commit", "journal"), default="commit",
                        help="mailbeacon's recording mode (see README)")
    parser.add_argument("--http-processes", type=int, default=1,
                        help="MAILBEACON_HTTP_PROCESSES of mailbeacon")
    parser.add_argument("--recipients", type=int, default=100,
                        help="recipients of the tracked message: wrk asks for each one's "
                             "pixel or link in turn")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y nginx wrk")
    folder = Path(tempfile.mkdtemp(prefix="mb-bench-"))
    nginx_port, mb_port = free_port(), free_port()
    nginx = start_nginx(folder, nginx_port)
    mb, db_file = start_mailbeacon(folder, mb_port, args.recording, args.http_processes)
    try:
        pixels, clicks = tracking_paths(mb_port, db_file, args.recipients)
        # nginx answers empty_gif for any /o/ path: it gets the pixel paths, the same script.
        targets = {"nginx empty_gif": (f"http://127.0.0.1:{nginx_port}", pixels),
                   "mailbeacon /o/": (f"http://127.0.0.1:{mb_port}", pixels),
                   "mailbeacon /c/": (f"http://127.0.0.1:{mb_port}", clicks)}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        acknowledged = {"opened": 0, "clicked": 0}
        for _ in range(args.rounds):
            for name, (url, paths) in targets.items():
                result = wrk(url, args.seconds, args.connections, paths)
                results[name].append(result)
                if name != "nginx empty_gif":
                    kind = "opened" if "/o/" in name else "clicked"
                    acknowledged[kind] += int(result["requests"] - result["bad"])
        if args.http_processes > 1:
            time.sleep(1.5)  # let the extra processes' journal files close
        load_ended = time.monotonic()
        while time.monotonic() - load_ended < 900:  # journal mode: until it is loaded
            if not any((folder / "mailbeacon-spool").glob("hits-*")):
                break
            time.sleep(0.1)
        caught_up = time.monotonic() - load_ended
        time.sleep(1)
        with sqlite3.connect(db_file) as conn:
            stored = dict(conn.execute(
                "SELECT event, count(*) FROM events WHERE event IN ('opened', 'clicked') "
                "GROUP BY event").fetchall())
    finally:
        mb.terminate()
        nginx.terminate()
        mb.wait(10)
        nginx.wait(10)
    base = statistics.median(r["rps"] for r in results["nginx empty_gif"])
    print(f"\n{args.connections} connections, {args.seconds} s x {args.rounds} rounds, "
          f"wrk -t2, {os.cpu_count()} cores, recording={args.recording}, "
          f"{args.http_processes} HTTP process(es)")
    print(f"{'target':<18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x nginx':>9}")
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        print(f"{name:<18}{rps:>10.0f}{statistics.median(r['p50'] for r in runs):>9.2f}"
              f"{statistics.median(r['p99'] for r in runs):>9.2f}{rps / base:>9.3f}")
    print("\nacknowledged vs stored (clicks also store an implied first open):")
    for kind in ("opened", "clicked"):
        print(f"  {kind}: acknowledged {acknowledged[kind]}, stored {stored.get(kind, 0)}")
    # wrk may count a request whose answer arrived as it stopped; never fewer stored.
    ok = stored.get("clicked", 0) >= acknowledged["clicked"] and \
        stored.get("opened", 0) >= acknowledged["opened"]
    print("every acknowledged hit stored:", "yes" if ok else "NO")
    if args.recording == "journal":
        print(f"journal loaded {caught_up:.1f} s after the load ended")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
