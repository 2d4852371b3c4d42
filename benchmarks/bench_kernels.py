"""What pinning the CPU kernels costs (fsku/kernels.py): the same model work in fresh processes under
the portable choice (AVX2 for ATen, MKL and oneDNN: what every stage runs with) and under the
libraries' own (``FSKU_CPU_KERNELS=native``: AVX-512 where the CPU has it). On an AVX2-only CPU the
two are the same kernels, so the ratio is about 1 there by construction.

    python benchmarks/bench_kernels.py [--model models/student_init] [--tokens 512] [--repeat 3]

Work, per variant: forward passes without gradients (what eval, predict and the teacher's logits
do) over 4 rows, and forward + backward over 2 rows (a training step without the optimiser), each
the median of ``--repeat`` after one warm-up. Needs `make run` first (the student model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import ROOT, machine


def child(model: str, tokens: int, repeat: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(model)
    ids = torch.randint(10, 200_000, (4, tokens))

    def timed(fn) -> float:
        fn()
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    def forward():
        with torch.no_grad():
            m(input_ids=ids).logits.float().sum()

    def train():
        m.zero_grad(set_to_none=True)
        m(input_ids=ids[:2]).logits.float().logsumexp(-1).mean().backward()

    m.eval()
    fwd = timed(forward)
    m.train()
    step = timed(train)
    return {"capability": torch.backends.cpu.get_cpu_capability(), "forward_s": round(fwd, 3),
            "train_s": round(step, 3), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(ROOT / "models/student_init"))
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.tokens, args.repeat)))
        return
    results = {}
    for name in ("portable", "native"):
        path = os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])
        env = {**os.environ, "FSKU_CPU_KERNELS": name, "PYTHONPATH": path}
        # what stages/__init__.py does before a stage loads torch, in the child's own environment
        code = ("import runpy, sys; from fsku.kernels import pin_cpu_kernels; pin_cpu_kernels(); "
                f"sys.argv = [{__file__!r}, '--child', '--model', {args.model!r}, '--tokens', '{args.tokens}', "
                f"'--repeat', '{args.repeat}']; runpy.run_path({__file__!r}, run_name='__main__')")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(machine())
    print(f"model {args.model}, {args.tokens} tokens a row; median of {args.repeat} after a warm-up\n")
    print("| kernels | ATen capability | forward, 4 rows (s) | forward + backward, 2 rows (s) |")
    print("| --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['capability']} | {r['forward_s']} | {r['train_s']} |")
    print(f"| portable / native | | {results['portable']['forward_s'] / results['native']['forward_s']:.2f} "
          f"| {results['portable']['train_s'] / results['native']['train_s']:.2f} |")


if __name__ == "__main__":
    main()
