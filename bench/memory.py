"""Memory of `mailbeacon serve` under a long tracking load: RSS must stay flat.

    python bench/memory.py [--hits 1000000] [--recording journal]

Runs wrk against the pixel in 10-second rounds until `--hits` hits were answered and
prints the server's resident memory after each round. After warm-up (caches of user
agents, addresses, composers fill up) the figure should stop growing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from pathlib import Path

from tracking import free_port, start_mailbeacon, tracking_paths, wrk


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def children(pid: int) -> list[int]:
    """Child processes (in journal mode: the journal loader)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=1_000_000)
    parser.add_argument("--recording", choices=("commit", "journal"), default="journal")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mb-mem-"))
    port = free_port()
    proc, db_file = start_mailbeacon(folder, port, args.recording)
    try:
        pixels, _ = tracking_paths(port, db_file, 100)
        print(f"start: {rss_mb(proc.pid):.1f} MB")
        done, round_no = 0, 0
        while done < args.hits:
            result = wrk(f"http://127.0.0.1:{port}", 10, 64, pixels)
            done += int(result["requests"])
            round_no += 1
            loaders = sum(rss_mb(child) for child in children(proc.pid))
            print(f"round {round_no:3d}: {done:>9} hits, {result['rps']:8.0f} req/s, "
                  f"RSS {rss_mb(proc.pid):7.1f} MB (+ loader {loaders:6.1f} MB)", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{os.cpu_count()} cores, recording={args.recording}")


if __name__ == "__main__":
    main()
