"""Generation throughput of the default teacher: vLLM (CPU build) vs transformers batched vs
transformers one prompt at a time, on the same prompts, in one run.

    python benchmarks/bench_generation.py [--prompts 16] [--max-tokens 32] [--batch 8]

Needs `models/teacher` and `data/gen/prompts.jsonl` (`make run`). Greedy decoding; tokens/s counts
generated tokens over generation time (model start-up reported apart).
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    print(f"machine: {machine()}")
    model = str(ROOT / "models/teacher")
    cfg = GenConfig(batch_size=args.batch)
    sp = SamplingConfig(max_tokens=args.max_tokens)
    t = time.perf_counter()
    hf = TransformersBackend(model, cfg)
    print(f"transformers start-up {time.perf_counter() - t:.1f} s")
    prompts = [format_prompt(hf.tokenizer, r["prompt"]) for r in read_jsonl(ROOT / "data/gen/prompts.jsonl")]
    prompts = prompts[: args.prompts]
    rows = {}
    rows["transformers, one at a time"] = timed(hf, prompts, sp, 1)
    rows[f"transformers, batch {args.batch}"] = timed(hf, prompts, sp, args.batch)
    del hf
    try:
        from fsku.gen.vllm_backend import VLLMBackend

        t = time.perf_counter()
        vb = VLLMBackend(model, cfg)
        print(f"vLLM start-up {time.perf_counter() - t:.1f} s")
        rows[f"vLLM, batch {args.batch}"] = timed(vb, prompts, sp, args.batch)
        rows["vLLM, all prompts at once"] = timed(vb, prompts, sp, len(prompts))
    except ImportError as e:
        print(f"vLLM not available: {e}")
    base = rows["transformers, one at a time"]
    base_tps = base[0] / base[1]
    print(f"\n{len(prompts)} prompts, {args.max_tokens} new tokens each, greedy")
    for name, (tok, sec) in rows.items():
        print(f"  {name:28} {tok:5d} tokens {sec:7.1f} s {tok / sec:7.1f} tok/s  x{tok / sec / base_tps:.1f}")


if __name__ == "__main__":
    main()
