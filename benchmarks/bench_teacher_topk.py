"""How much the cached teacher's top-k loses, on the real pairs and models: the distillation loss and
its gradient with the teacher cut to its k likeliest tokens (the rest of its mass one bucket, as
`train.teacher_logits: cached` trains), against the exact loss with the whole teacher distribution.

    python benchmarks/bench_teacher_topk.py error [--k 1 4 16 64 256 1024] [--pairs-limit 12] [--loss distillm2]
    python benchmarks/bench_teacher_topk.py train [--k 8 64 512]   # test-pair KL after a distill run per k

`error`: for each train pair (its chosen and rejected rows, as the trainer batches them), the
student's (models/student_sft) and the teacher's (models/teacher) last hidden states once, then the
fused loss exact and with the teacher's top-k (log-probs rounded to float16 as the cache stores
them) for every k: the loss's relative error, the cosine between the two gradients with respect to
the student's hidden states, and the share of the teacher's mass the k tokens hold. Needs `make run`
(or `dvc repro sft pairs`) first.

`train`: the `teacher_logits` stage at each k, then `distill` with `teacher_logits: cached`, and once
online, each from params.yaml's train section otherwise (seed, steps, learning rate); the test-pair
KL to the (full) teacher after training, per k.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from common import ROOT, machine


def error(ks: list[int], limit: int, loss: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fsku.distill.examples import load_examples
    from fsku.distill.fused import TopK, fused_distill_loss
    from fsku.distill.head import head_of
    from fsku.distill.teacher_cache import sequences
    from fsku.distill.trainer import last_hidden_state, response_targets

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(ROOT / "models/student_sft"))
    student = AutoModelForCausalLM.from_pretrained(str(ROOT / "models/student_sft")).eval()
    teacher = AutoModelForCausalLM.from_pretrained(str(ROOT / "models/teacher")).eval()
    head, t_head = head_of(student), head_of(teacher)
    seqs = sequences(tok, load_examples(ROOT / "data/pairs/train.jsonl", tok))[: 2 * limit]
    rows: dict[int, list[dict]] = {k: [] for k in ks}
    for b in range(0, len(seqs), 2):
        pair = seqs[b:b + 2]
        width = max(len(s) for s, _ in pair)
        ids = torch.tensor([s + [tok.pad_token_id or 0] * (width - len(s)) for s, _ in pair])
        attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in pair])
        comp = torch.tensor([[0] * n + [1] * (len(s) - n) + [0] * (width - len(s)) for s, n in pair])
        first, targets = response_targets(ids, comp)
        with torch.no_grad():
            hidden = last_hidden_state(student, ids, attn)[:, first:]
            t_hidden = last_hidden_state(teacher, ids, attn)[:, first:]
            t_lp = torch.log_softmax(t_head.logits(t_hidden, torch.float32)[0], -1)  # [2, T', V]: a pair at a time
        hidden = hidden.detach().requires_grad_()
        exact = fused_distill_loss(hidden, head, t_hidden, t_head, targets, 1, loss=loss)
        exact.loss.backward()
        g_exact, hidden.grad = hidden.grad.clone(), None
        mask = targets != -100
        for k in ks:
            val, top = t_lp.topk(k, -1)
            rest = torch.logsumexp(t_lp.scatter(-1, top, float("-inf")), -1)
            cut = TopK(top.int(), val.half().float(), rest)
            approx = fused_distill_loss(hidden, head, None, None, targets, 1, loss=loss, teacher_topk=cut)
            approx.loss.backward()
            g, hidden.grad = hidden.grad.clone(), None
            cos = torch.nn.functional.cosine_similarity(g[mask].flatten(), g_exact[mask].flatten(), dim=0)
            rows[k].append({"rel_error": abs(approx.loss.item() - exact.loss.item()) / abs(exact.loss.item()),
                            "signed": (approx.loss.item() - exact.loss.item()) / abs(exact.loss.item()),
                            "cos": cos.item(), "held": float((1 - rest.exp())[mask].mean())})
        del t_lp
    print(f"machine: {machine()}")
    print(f"loss {loss}, {len(seqs) // 2} train pairs (one pair a batch), models/student_sft against models/teacher; "
          "teacher top-k log-probs rounded to float16 as cached")
    print("| k | teacher mass in top k (mean) | loss error, relative (mean / max) | loss change (mean, signed) "
          "| gradient cosine (mean / min) |")
    print("| --- | --- | --- | --- | --- |")
    for k in ks:
        r = rows[k]
        print(f"| {k} | {statistics.mean(x['held'] for x in r):.4f} | {statistics.mean(x['rel_error'] for x in r):.4f} "
              f"/ {max(x['rel_error'] for x in r):.4f} | {statistics.mean(x['signed'] for x in r):+.4f} | "
              f"{statistics.mean(x['cos'] for x in r):.4f} / {min(x['cos'] for x in r):.4f} |")


def train(ks: list[int]) -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_topk_") as tmp:
        tmp = Path(tmp)
        for k in [None, *ks]:
            name = "online" if k is None else f"k{k}"
            params = {**base, "teacher_logits": {**base["teacher_logits"], "top_k": k or 1},
                      "train": {**base["train"], "fused_loss": True,
                                "teacher_logits": "online" if k is None else "cached"}}
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(params))
            if k is not None:
                subprocess.run([sys.executable, "-m", "stages.teacher_logits", "--params", str(tmp / f"{name}.yaml"),
                                "--out", str(tmp / f"{name}_logits"), "--metrics", str(tmp / f"{name}_logits.json")],
                               cwd=ROOT, check=True, capture_output=True)
            subprocess.run([sys.executable, "-m", "stages.distill", "--params", str(tmp / f"{name}.yaml"),
                            "--teacher-logits", str(tmp / f"{name}_logits"), "--out", str(tmp / f"{name}_model"),
                            "--checkpoints", str(tmp / f"{name}_ckpt"), "--log-dir", str(tmp / f"{name}_log"),
                            "--metrics", str(tmp / f"{name}.json")], cwd=ROOT, check=True, capture_output=True)
            m = json.loads((tmp / f"{name}.json").read_text())
            held = json.loads((tmp / f"{name}_logits.json").read_text())["mass_in_top_k_mean"] if k else 1.0
            results[name] = {**{x: m[x] for x in ("kl_before", "kl_after", "train_s", "peak_memory_mb")}, "held": held}
            print(name, results[name], flush=True)
    print(f"machine: {machine()}")
    print("| teacher | top-k mass (mean) | test KL before | test KL after | train s | peak MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['held']:.4f} | {r['kl_before']} | {r['kl_after']} | {r['train_s']} "
              f"| {r['peak_memory_mb']:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("error")
    e.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 64, 256, 1024])
    e.add_argument("--pairs-limit", type=int, default=12)
    e.add_argument("--loss", default="distillm2")
    t = sub.add_parser("train")
    t.add_argument("--k", type=int, nargs="+", default=[8, 64, 512])
    args = p.parse_args()
    if args.cmd == "error":
        error(args.k, args.pairs_limit, args.loss)
    else:
        train(args.k)


if __name__ == "__main__":
    main()
