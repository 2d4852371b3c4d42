"""Peak memory and time of the DistiLLM-2 loss alone, forward + backward: the chunked
implementation (fsku/distill/losses.py) vs the direct full-tensor formulation, on the same inputs.

    python benchmarks/bench_loss.py [--vocab 262144] [--seq 512] [--batch 2] [--repeat 3]

Each variant runs in its own fresh process. Memory is the process's peak RSS above what it holds
once the inputs (student and teacher logits, fp32) exist, so it counts what the loss itself adds.
On a GPU (`--device cuda`) it is torch.cuda.max_memory_allocated above the same baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import ROOT, machine


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(variant: str, vocab: int, seq: int, batch: int, repeat: int, device: str) -> dict:
    import torch

    from fsku.distill.losses import IGNORE, dense_distill_loss, distill_loss

    torch.manual_seed(0)
    n = batch  # sequences: the first half chosen rows, the second half rejected rows
    student = torch.randn(n, seq, vocab, device=device) * 2
    teacher = torch.randn(n, seq, vocab, device=device) * 2
    targets = torch.randint(0, vocab, (n, seq), device=device)
    targets[:, : seq // 4] = IGNORE  # a prompt
    student.requires_grad_()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = rss_mb()
    times = []
    for _ in range(repeat):
        student.grad = None
        t = time.perf_counter()
        if variant == "chunked":
            loss = distill_loss(student, teacher, targets, batch // 2).loss
        else:
            loss = dense_distill_loss(student, teacher, targets, batch // 2)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        del loss
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else rss_mb()
    return {"variant": variant, "seconds": min(times), "peak_mb_above_inputs": peak - base,
            "inputs_mb": 2 * student.numel() * 4 / 2**20}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=262144)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=2, help="sequences, an even number (half chosen, half rejected)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", default=None)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.vocab, args.seq, args.batch, args.repeat, args.device)))
        return
    print(f"machine: {machine()}")
    print(f"vocab {args.vocab}, seq {args.seq}, batch {args.batch} sequences ({args.batch // 2} pair(s)), fp32 logits, "
          f"forward + backward, best of {args.repeat}, device {args.device}")
    res = {}
    for variant in ("dense", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--vocab", str(args.vocab), "--seq",
                              str(args.seq), "--batch", str(args.batch), "--repeat", str(args.repeat),
                              "--device", args.device], cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
            print(f"  {variant}: failed ({out.returncode}) {out.stderr[-500:]}")
            continue
        res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        r = res[variant]
        print(f"  {variant:8} {r['seconds']:7.2f} s   peak +{r['peak_mb_above_inputs']:8.0f} MB above the "
              f"{r['inputs_mb']:.0f} MB of inputs")
    if len(res) == 2:
        d, c = res["dense"], res["chunked"]
        print(f"\nchunked vs dense: {d['peak_mb_above_inputs'] / c['peak_mb_above_inputs']:.1f}x lower peak memory, "
              f"{c['seconds'] / d['seconds']:.2f}x the time")


if __name__ == "__main__":
    main()
