"""Generation throughput of the default teacher: vLLM (CPU build) vs transformers batched vs
transformers one prompt at a time, on the same prompts, in one run.

    python benchmarks/bench_generation.py [--prompts 32] [--max-tokens 32] [--batch N]

Needs `models/teacher` and `data/gen/prompts.jsonl` (`make run`). Greedy decoding; tokens/s counts
generated tokens over generation time (model start-up and one warm-up call reported apart).
``--batch`` defaults to ``gen.batch_size`` in params.yaml, the batch the pipeline runs with.
"""

from __future__ import annotations

import argparse
import time

from common import ROOT, machine

from fsku.gen.backends import TransformersBackend
from fsku.gen.config import GenConfig, SamplingConfig
from fsku.gen.format import format_prompt
from fsku.io import read_jsonl


def timed(backend, prompts, sp, batch):
    tokens, t = 0, time.perf_counter()
    for i in range(0, len(prompts), batch):
        tokens += sum(r["n_tokens"] for r in backend.generate(prompts[i:i + batch], sp, seed=0))
    return tokens, time.perf_counter() - t


def warm(backend, prompts, sp) -> None:
    """One short call first, so one-off costs (allocations, kernel selection) are not timed."""
    t = time.perf_counter()
    backend.generate(prompts[:2], SamplingConfig(max_tokens=2), seed=0)
    print(f"{backend.name} warm-up {time.perf_counter() - t:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=None)
    args = p.parse_args()
    if args.batch is None:
        import yaml

        args.batch = yaml.safe_load((ROOT / "params.yaml").read_text())["gen"]["batch_size"]
    print(f"machine: {machine()}")
    model = str(ROOT / "models/teacher")
    cfg = GenConfig(batch_size=args.batch)
    sp = SamplingConfig(max_tokens=args.max_tokens)
    t = time.perf_counter()
    hf = TransformersBackend(model, cfg)
    print(f"transformers start-up {time.perf_counter() - t:.1f} s")
    prompts = [format_prompt(hf.tokenizer, r["prompt"]) for r in read_jsonl(ROOT / "data/gen/prompts.jsonl")]
    prompts = prompts[: args.prompts]
    warm(hf, prompts, sp)
    rows = {}
    rows["transformers, one at a time"] = timed(hf, prompts, sp, 1)
    rows[f"transformers, batch {args.batch}"] = timed(hf, prompts, sp, args.batch)
    del hf
    try:
        from fsku.gen.vllm_backend import VLLMBackend

        t = time.perf_counter()
        vb = VLLMBackend(model, cfg)
        print(f"vLLM start-up {time.perf_counter() - t:.1f} s")
        warm(vb, prompts, sp)
        for b in sorted({8, args.batch, len(prompts)}):
            rows[f"vLLM, batch {b}" + (" (default)" if b == args.batch else "")] = timed(vb, prompts, sp, b)
    except ImportError as e:
        print(f"vLLM not available: {e}")
    base = rows["transformers, one at a time"]
    base_tps = base[0] / base[1]
    print(f"\n{len(prompts)} prompts, {args.max_tokens} new tokens each, greedy")
    for name, (tok, sec) in rows.items():
        print(f"  {name:30} {tok:5d} tokens {sec:7.1f} s {tok / sec:7.1f} tok/s  x{tok / sec / base_tps:.1f}")


if __name__ == "__main__":
    main()
