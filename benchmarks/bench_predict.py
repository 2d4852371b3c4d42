"""`predict` on the embedded default: the quantized model against the merged one, side by side on
the same questions in one run, with the projection to the competition's 515 questions in 270 minutes.

    python benchmarks/bench_predict.py [--test data/raw/test.csv] [--mcq-mode option_pmi|option|loglik|generate]

Needs `make run` (models/merged, models/quantized, models/index). Uses params.yaml's `predict`
section with the resume cache off; model loading is reported apart from answering.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from common import ROOT, machine

from fsku.config import load_section
from fsku.gen.config import GenConfig, PromptsConfig
from fsku.predict.config import PredictConfig
from fsku.predict.run import load_retriever, predict_file
from fsku.retrieval.config import IndexConfig

BUDGET_MIN, COMPETITION_QUESTIONS = 270, 515


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--test", default=str(ROOT / "data/raw/test.csv"))
    p.add_argument("--mcq-mode", default=None, choices=["option_pmi", "option", "loglik", "generate"])
    args = p.parse_args()
    params = ROOT / "params.yaml"
    cfg = replace(load_section(PredictConfig, "predict", params), cache=False)
    if args.mcq_mode:
        cfg = replace(cfg, mcq_mode=args.mcq_mode)
    gen, prompts = load_section(GenConfig, "gen", params), load_section(PromptsConfig, "prompts", params)
    search = load_retriever(ROOT / "models/index", load_section(IndexConfig, "index", params))
    print(machine())
    print(f"mcq_mode {cfg.mcq_mode}, open max_tokens {cfg.max_tokens}, batch {cfg.batch_size}, backend {cfg.backend}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("merged", "quantized"):
            rows[name] = predict_file(ROOT / "models" / name, args.test, Path(tmp) / f"{name}.csv", cfg, gen,
                                      prompts, search)
    print("| model | load s | p50 s/question | p95 s/question | questions/min | 515 questions (min) | within 270 min |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s in rows.items():
        print(f"| {name} | {s['load_s']} | {s['latency_p50_s']} | {s['latency_p95_s']} | {s['questions_per_min']} | "
              f"{s['projected_515_min']} | {'yes' if s['projected_515_min'] <= BUDGET_MIN else 'no'} |")
    m, q = rows["merged"], rows["quantized"]
    print(f"quantized / merged questions per minute: {q['questions_per_min'] / m['questions_per_min']:.2f}x")


if __name__ == "__main__":
    main()
