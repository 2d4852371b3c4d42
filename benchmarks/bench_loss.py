"""Peak memory and time of the distillation loss alone, forward + backward, from the models' last
hidden states and LM heads (what a trainer has before any logits exist):

- ``dense``: logits ``h @ W.T`` for both models, then the direct full-tensor formulation with
  autograd (``dense_distill_loss``, as the reference implementation writes it);
- ``chunked``: the same full logits, then the chunked loss (``distill_loss``: analytic gradient a
  chunk of positions at a time), the pipeline's loss before ``train.fused_loss``;
- ``fused``: ``fused_distill_loss``: hidden states and heads in, a chunk of logits at a time;
- ``fused_jsd`` and ``trl_jsd``: the generalised JSD (beta 0.5) through ours and through the pinned
  TRL's ``DistillationTrainer`` loss (``_chunked_divergence_loss``, also from hidden states): the
  same divergence on both, so the two implementations compare directly.

    python benchmarks/bench_loss.py [--vocab 262144] [--seq 512] [--batch 2] [--hidden 640]
                                    [--teacher-hidden 640] [--repeat 2] [--variants dense chunked fused ...]

Each variant runs in its own fresh process. Memory is the process's peak RSS above what it holds
once the inputs (hidden states and head weights, fp32) exist, so it counts what the loss itself adds;
the heads are frozen (LoRA's case), the student's hidden states take the gradient. The rows'
responses fill the positions but for padding at the end of the second half's rows. On a GPU
(``--device cuda``) memory is torch.cuda.max_memory_allocated above the same baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import ROOT, machine

VARIANTS = ("dense", "chunked", "fused", "fused_jsd", "trl_jsd")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(variant: str, vocab: int, seq: int, batch: int, hidden: int, t_hidden: int, repeat: int,
          device: str) -> dict:
    import torch

    from fsku.distill.fused import fused_distill_loss
    from fsku.distill.head import Head
    from fsku.distill.losses import IGNORE, dense_distill_loss, distill_loss

    torch.manual_seed(0)
    n = batch  # sequences: the first half chosen rows, the second half rejected rows
    h = torch.randn(n, seq, hidden, device=device)
    w = torch.randn(vocab, hidden, device=device) / hidden ** 0.5 * 2
    ht = torch.randn(n, seq, t_hidden, device=device)
    wt = torch.randn(vocab, t_hidden, device=device) / t_hidden ** 0.5 * 2
    targets = torch.randint(0, vocab, (n, seq), device=device)
    targets[n // 2:, seq - seq // 8:] = IGNORE  # padding after the shorter answers
    h.requires_grad_()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = rss_mb()

    def loss():
        if variant in ("dense", "chunked"):
            z = h @ w.T
            with torch.no_grad():
                zt = ht @ wt.T
            if variant == "dense":
                return dense_distill_loss(z, zt, targets, n // 2)
            return distill_loss(z, zt, targets, n // 2).loss
        if variant in ("fused", "fused_jsd"):
            kind = "distillm2" if variant == "fused" else "jsd"
            return fused_distill_loss(h, Head(w), ht, Head(wt), targets, n // 2, loss=kind).loss
        from trl.trainer.distillation_trainer import _chunked_divergence_loss

        mask = (targets != IGNORE).long()  # TRL's beta 0.5 is the JSD with the teacher's weight 0.5, as ours
        return _chunked_divergence_loss(h, ht, w, wt, mask, beta=0.5)[0]

    times = []
    for _ in range(repeat):
        h.grad = None
        t = time.perf_counter()
        value = loss()
        value.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        del value
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else rss_mb()
    inputs = sum(x.numel() for x in (h, w, ht, wt)) * 4 / 2**20
    return {"variant": variant, "seconds": min(times), "peak_mb_above_inputs": peak - base, "inputs_mb": inputs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=262144)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=2, help="sequences, an even number (half chosen, half rejected)")
    p.add_argument("--hidden", type=int, default=640, help="student hidden size (Gemma 3 270M: 640)")
    p.add_argument("--teacher-hidden", type=int, default=640)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--child", default=None)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.vocab, args.seq, args.batch, args.hidden, args.teacher_hidden,
                               args.repeat, args.device)))
        return
    print(f"machine: {machine()}")
    print(f"vocab {args.vocab}, seq {args.seq}, batch {args.batch} sequences ({args.batch // 2} pair(s)), hidden "
          f"{args.hidden} (teacher {args.teacher_hidden}), fp32, forward + backward, best of {args.repeat}, "
          f"device {args.device}")
    res = {}
    for variant in args.variants:
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--vocab", str(args.vocab), "--seq",
                              str(args.seq), "--batch", str(args.batch), "--hidden", str(args.hidden),
                              "--teacher-hidden", str(args.teacher_hidden), "--repeat", str(args.repeat),
                              "--device", args.device], cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
            why = "killed (out of memory)" if out.returncode in (-9, 137) else out.stderr.strip()[-300:]
            print(f"  {variant:9} failed ({out.returncode}): {why}")
            continue
        res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        r = res[variant]
        print(f"  {variant:9} {r['seconds']:7.2f} s   peak +{r['peak_mb_above_inputs']:8.0f} MB above the "
              f"{r['inputs_mb']:.0f} MB of inputs")
    for a, b in (("fused", "dense"), ("fused", "chunked"), ("fused_jsd", "trl_jsd")):
        if a in res and b in res:
            x, y = res[a], res[b]
            print(f"{a} vs {b}: {y['peak_mb_above_inputs'] / max(x['peak_mb_above_inputs'], 1):.1f}x lower peak "
                  f"memory, {x['seconds'] / y['seconds']:.2f}x the time")


if __name__ == "__main__":
    main()
