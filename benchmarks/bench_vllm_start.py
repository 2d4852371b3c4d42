"""What starting vLLM's CPU engine costs, by setting: each variant starts the engine for the
default teacher in a fresh process, generates once (8 prompts, 16 tokens) and exits.

    python benchmarks/bench_vllm_start.py [--variants default no_mp kv1] [--runs 1]

The engine gets ``GenConfig()``'s defaults (batch 8; params.yaml's ``gen.batch_size`` is 32).
Variants: ``default`` (vLLM's own: the engine core in a spawned process; the generation stages
now set ``no_mp`` on CPU themselves), ``no_mp`` (VLLM_ENABLE_V1_MULTIPROCESSING=0: the
engine core in the calling process, no spawned interpreter), ``kv1`` (VLLM_CPU_KVCACHE_SPACE=1: a
1 GiB KV cache instead of the default). Needs `models/teacher` (`make run`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, machine

VARIANTS = {"default": {}, "no_mp": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}, "kv1": {"VLLM_CPU_KVCACHE_SPACE": "1"}}

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, ".")
from fsku.gen.config import GenConfig, SamplingConfig
from fsku.gen.vllm_backend import VLLMBackend
t1 = time.perf_counter()
b = VLLMBackend("models/teacher", GenConfig())
t2 = time.perf_counter()
b.generate(["질문: 전자금융거래의 접근매체는 무엇인가? 답:"] * 8, SamplingConfig(max_tokens=16), seed=0)
t3 = time.perf_counter()
print("RESULT " + json.dumps({"import_s": t1 - t0, "engine_s": t2 - t1, "first_call_s": t3 - t2}))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    print(f"machine: {machine()}")
    for name in args.variants:
        for _ in range(args.runs):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True,
                                 env={**os.environ, **VARIANTS[name]})
            wall = time.perf_counter() - t
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{name}: failed\n{out.stderr[-2000:]}")
                continue
            r = json.loads(line[7:])
            print(f"{name:8s} process {wall:6.1f} s  imports {r['import_s']:5.1f} s  "
                  f"engine start {r['engine_s']:5.1f} s"
                  f"  first call {r['first_call_s']:5.1f} s")


if __name__ == "__main__":
    main()
