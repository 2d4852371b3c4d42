"""Stage `quantize`: models/merged -> models/quantized, and what it cost (metrics/quantize.json).
Quality (perplexity, KL to the merged model) is measured as `evaluate` and `predict` load the model
(on CPU, 4-bit weights dequantized once: fsku.models.load.dequantize_4bit_layers); memory and
per-token latency as stored, on the quantization library's own kernels."""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from fsku.config import load_section
from fsku.distill.examples import load_examples
from fsku.distill.quality import answer_quality
from fsku.io import write_json
from fsku.models.load import load_for_inference
from fsku.quantize import QuantConfig, dir_bytes, quantize, token_latency
from fsku.stage import parser, paths, run

LATENCY_PROMPT = "전자금융거래에서 접근매체를 분실한 이용자가 해야 할 일을 설명하세요."


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--model", default=P["merged"])
    p.add_argument("--pairs", default=P["pairs"])
    p.add_argument("--out", default=P["quantized"])
    p.add_argument("--metrics", default=P["metrics"]["quantize"])
    args = p.parse_args()
    cfg = load_section(QuantConfig, "quant", args.params)
    merged, tokenizer = load_for_inference(args.model)
    train = load_examples(Path(args.pairs) / "train.jsonl", tokenizer)
    quantize(args.model, args.out, cfg, [e["prompt"] + e["chosen"] for e in train])
    quantized, _ = load_for_inference(args.out)  # scored as later stages will load it
    # the footprint and kernels of the quantized model itself: on a GPU that is what evaluate loads
    stored = quantized if torch.cuda.is_available() else AutoModelForCausalLM.from_pretrained(
        args.out, device_map="cpu").eval()
    test = load_examples(Path(args.pairs) / "test.jsonl", tokenizer)
    test = test[: cfg.eval_examples] if cfg.eval_examples else test
    q = answer_quality(quantized, merged, test, tokenizer, max_length=4096)
    sizes = {"merged": dir_bytes(args.model), "quantized": dir_bytes(args.out)}
    memory = {"merged": merged.get_memory_footprint(), "quantized": stored.get_memory_footprint()}
    models = {"merged": merged, "quantized": stored}
    if any(type(m).__name__ == "Linear4bit" for m in stored.modules()) and stored is not quantized:
        models["quantized_as_scored"] = quantized  # CPU: the same weights, dequantized
    latency = {name: token_latency(m, tokenizer, LATENCY_PROMPT, cfg.latency_tokens) for name, m in models.items()}
    metrics = {
        "method": cfg.method,
        "size_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()},
        "size_ratio": round(sizes["quantized"] / sizes["merged"], 4),
        "memory_mb": {k: round(v / 2**20, 1) for k, v in memory.items()},
        "memory_ratio": round(memory["quantized"] / memory["merged"], 4),
        "ms_per_token": {k: round(1000 * v, 2) for k, v in latency.items()},
        "ppl": {"merged": q["teacher_ppl"], "quantized": q["student_ppl"]},
        "ppl_change_pct": round(100 * (q["student_ppl"] / q["teacher_ppl"] - 1), 3),
        "kl_merged_to_quantized": q["kl"],
        "eval_tokens": q["tokens"],
    }
    write_json(args.metrics, metrics)
    print(metrics)


if __name__ == "__main__":
    run(main)
