"""Memory of each `mailbeacon serve` process under a long tracking load.

    python bench/memory.py [--hits 1000000] [--recording journal commit]
                           [--http-processes 2] [--seconds 10]

For each recording mode given, starts `mailbeacon serve` (SQLite in a temp folder) with
`--http-processes` HTTP processes, sends one message to 100 recipients, and prints the
resident memory (VmRSS, from /proc) of every process it runs: serve itself, the further
HTTP processes, the journal loader. Then runs wrk against the recipients' pixels in
rounds of `--seconds` until `--hits` hits were answered, printing each process's RSS
after every round, and at the end each one's RSS before the load and after it. After
warm-up (the bounded caches of user agents and addresses fill up) no figure should
grow. Needs wrk (`apt-get install -y wrk`).

Targets (issue 14): an extra HTTP process <= 90 MB, the first <= 220 MB, flat after
1 M hits. A process that enriches no hit (journal mode: the HTTP processes only append
to the journal, the loader enriches) does not load the geo data (about 110 MB).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from tracking import free_port, start_mailbeacon, tracking_paths, wrk


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def processes(serve: int) -> dict[str, int]:
    """serve and its children, named by what they run."""
    named = {"serve": serve}
    for child in sorted(children(serve)):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"http-process" in argv:
            named[f"http process {sum(n.startswith('http') for n in named) + 2}"] = child
        elif b"load-journal" in argv:
            named["journal loader"] = child
    return named


def settled(serve: int, expected: int, timeout: float = 60.0) -> dict[str, int]:
    """The processes once all `expected` run and their memory has stopped moving (a
    process that enriches loads its geo data in the background at start)."""
    deadline = time.monotonic() + timeout
    named, last = processes(serve), -1.0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        named = processes(serve)
        total = sum(rss_mb(pid) for pid in named.values())
        if len(named) >= expected and abs(total - last) < 0.5:
            break
        last = total
    return named


def run(recording: str, hits: int, http_processes: int, seconds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="mb-mem-"))
    port = free_port()
    proc, db_file = start_mailbeacon(folder, port, recording, http_processes)
    try:
        pixels, _ = tracking_paths(port, db_file, 100)
        expected = http_processes + (1 if recording == "journal" else 0)
        named = settled(proc.pid, expected)
        before = {name: rss_mb(pid) for name, pid in named.items()}
        print(f"recording={recording}, {http_processes} HTTP process(es): "
              + ", ".join(f"{name} (pid {pid})" for name, pid in named.items()))
        print("  before the load: " + ", ".join(f"{n} {mb:.1f} MB" for n, mb in before.items()))
        done, round_no, peak = 0, 0, dict(before)
        while done < hits:
            result = wrk(f"http://127.0.0.1:{port}", seconds, 64, pixels)
            done += int(result["requests"])
            round_no += 1
            now = {name: rss_mb(pid) for name, pid in named.items()}
            peak = {name: max(peak[name], now[name]) for name in now}
            print(f"  round {round_no:3d}: {done:>9} hits, {result['rps']:7.0f} req/s, "
                  + ", ".join(f"{n} {mb:.1f}" for n, mb in now.items()) + " MB", flush=True)
        after = {name: rss_mb(pid) for name, pid in named.items()}
        print(f"  after {done} hits:")
        for name in named:
            print(f"    {name:16} {before[name]:7.1f} MB before, {after[name]:7.1f} MB after "
                  f"({after[name] - before[name]:+.1f}), peak {peak[name]:.1f} MB")
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=1_000_000,
                        help="hits to answer in each recording mode")
    parser.add_argument("--recording", nargs="+", choices=("journal", "commit"),
                        default=["journal", "commit"])
    parser.add_argument("--http-processes", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10, help="length of a wrk round")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, SQLite, loopback")
    for recording in args.recording:
        run(recording, args.hits, args.http_processes, args.seconds)


if __name__ == "__main__":
    main()
