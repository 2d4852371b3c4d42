"""How long DVC takes to decide there is nothing to do, on the project itself (run `make run` first).

    python benchmarks/bench_dvc.py [--rounds 5]

Times a no-op `dvc repro` and `dvc status` (goal: under 5 s), each as a fresh process, as a user runs
them. A no-op must not rehash the models: DVC's state database remembers each file's hash by inode,
size and mtime. The first round after a checkout may rehash, so it is reported on its own."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time

from common import ROOT, machine, pct


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    dvc = shutil.which("dvc") or "dvc"
    print(f"machine: {machine()}")
    for name, cmd in [("dvc repro (no-op)", [dvc, "repro"]), ("dvc status", [dvc, "status"])]:
        times = []
        for _ in range(args.rounds):
            seconds, out = timed(cmd)
            if name.startswith("dvc repro") and "Running stage" in out:
                raise SystemExit("the pipeline is not up to date: run `dvc repro` (or make run) first")
            times.append(seconds)
        print(f"{name:18s} first {times[0]:.2f} s, then p50 {pct(times[1:] or times, 50):.2f} s, "
              f"max {max(times):.2f} s over {args.rounds} runs")


if __name__ == "__main__":
    main()
