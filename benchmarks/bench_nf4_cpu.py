"""The nf4 student on CPU two ways, side by side in one run: bitsandbytes' own CPU kernels against
the same weights dequantized once into dense bf16 layers (what ``load_for_inference`` does on CPU).
Times forward passes over real eval prompts and compares the two models' next-token distributions.

    python benchmarks/bench_nf4_cpu.py [--model models/quantized] [--prompts 8] [--repeats 2]

Run after ``dvc repro quantize`` (it reads ``models/quantized`` and ``data/gen/prompts.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "models/quantized"))
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common import machine

    from fsku.gen.format import format_prompt
    from fsku.io import read_jsonl
    from fsku.models.load import dequantize_4bit_layers

    tok = AutoTokenizer.from_pretrained(args.model)
    texts = [format_prompt(tok, r["prompt"]) for r in read_jsonl(ROOT / "data/gen/prompts.jsonl")[: args.prompts]]
    batches = [tok(t, return_tensors="pt").input_ids for t in texts]
    models = {"bitsandbytes": AutoModelForCausalLM.from_pretrained(args.model, device_map="cpu").eval()}
    models["dequantized"] = dequantize_4bit_layers(
        AutoModelForCausalLM.from_pretrained(args.model, device_map="cpu").eval())
    times, last = {}, {}
    for name, model in models.items():
        with torch.no_grad():
            model(input_ids=batches[0][:, :16])  # warm-up (bitsandbytes repacks its weights here)
            start = time.perf_counter()
            for _ in range(args.repeats):
                last[name] = [torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1) for ids in batches]
            times[name] = (time.perf_counter() - start) / (args.repeats * len(batches))
    a, b = last["bitsandbytes"], last["dequantized"]
    same_top = sum(int(x.argmax()) == int(y.argmax()) for x, y in zip(a, b))
    kl = sum(float((x.exp() * (x - y)).sum()) for x, y in zip(a, b)) / len(a)
    tokens = sum(int(ids.shape[1]) for ids in batches) / len(batches)
    print(json.dumps({"machine": machine(), "model": args.model, "prompts": len(batches), "mean_tokens": round(tokens),
                      "s_per_forward": {k: round(v, 3) for k, v in times.items()},
                      "speedup": round(times["bitsandbytes"] / times["dequantized"], 2),
                      "same_next_token": f"{same_top}/{len(a)}", "mean_kl_next_token": round(kl, 6)}))


if __name__ == "__main__":
    main()
