"""Where a pipeline run's time goes: runs a command (default ``dvc repro``), passes its output
through, and prints each stage's wall time, from its "Running stage" line to the next stage's line
(or the end). Stages DVC skipped or restored from the run-cache are listed with their few seconds.

    python benchmarks/stage_times.py [--json out.json] [-- dvc repro ...]
    benchmarks/as_avx2 python benchmarks/stage_times.py      # as on a CPU without AVX-512
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

from common import ROOT, machine

MARK = re.compile(r"(Running stage|Stage) '([^']+)'( didn't change| is cached)?")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--json", default=None, help="also write the times here")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (default: dvc repro)")
    args = p.parse_args()
    cmd = [c for c in args.cmd if c != "--"] or [sys.executable, "-m", "dvc", "repro"]
    start = time.perf_counter()
    marks: list[tuple[str, str, float]] = []  # (stage, how, when)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        m = MARK.search(line)
        if m:
            how = ("ran" if m.group(1) == "Running stage" else "skipped" if m.group(3) == " didn't change"
                   else "restored")
            marks.append((m.group(2), how, time.perf_counter() - start))
    code = proc.wait()
    end = time.perf_counter() - start
    rows = [{"stage": s, "how": how, "seconds": round((marks[i + 1][2] if i + 1 < len(marks) else end) - t, 1)}
            for i, (s, how, t) in enumerate(marks)]
    print(f"\n{machine()}\n`{' '.join(cmd)}`: {end / 60:.1f} min, exit {code}")
    for r in rows:
        print(f"  {r['stage']:24s} {r['how']:8s} {r['seconds']:7.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine(), "cmd": cmd, "total_s": round(end, 1), "exit": code, "stages": rows}, f,
                      indent=1)
    sys.exit(code)


if __name__ == "__main__":
    main()
