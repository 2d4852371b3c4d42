"""Choice distillation (``sft.choices``) measured where the eval rows measure it: train ``sft`` with the
given params (its second phase on ``data/gen/teacher_choices.jsonl``), then score ``eval.csv``'s
multiple-choice questions as ``evaluate`` does (``eval.mcq_mode: loglik``, the default index and
prompts). Prints and writes accuracy and how the picks spread over the option numbers: a student that
answers one number to most questions has learnt a position, not the options.

    python benchmarks/bench_choices.py --params params.yaml --out /tmp/choices [--score-only DIR ...]

Run from the repository root after ``dvc repro teacher_choices`` (the phase on). CPU-heavy: 10-20 min.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def score(model_dir: str, params: str, questions: str = "data/raw/questions/eval.csv",
          mode: str = "loglik") -> list[dict]:
    """MCQ accuracy and pick spread of one model on ``questions``, as ``eval.mcq_mode`` scores it:
    ``loglik``, or ``text`` (``option`` and ``option_pmi`` from the same passes)."""
    from fsku.config import load_section
    from fsku.gen.backends import make_backend
    from fsku.gen.choice import best, option_scores, text_scores
    from fsku.gen.config import CONTEXT_KEYS, ENGINE_KEYS, SHOT_KEYS, GenConfig, PromptsConfig
    from fsku.predict.answer import prepare
    from fsku.predict.run import load_retriever
    from fsku.questions import load_answered
    from fsku.retrieval.config import SEARCH_KEYS, IndexConfig
    from fsku.stage import paths

    gen = load_section(GenConfig, "gen", params, ENGINE_KEYS)
    pc = load_section(PromptsConfig, "prompts", params, CONTEXT_KEYS + SHOT_KEYS)
    search = load_retriever(paths()["index"], load_section(IndexConfig, "index", params, SEARCH_KEYS))
    qs = [q for q in load_answered([questions]) if q.is_mcq]
    backend = make_backend("transformers", model_dir, gen)
    start = time.perf_counter()
    picks: dict[str, list[int]] = {}
    for it in prepare(qs, search, pc, backend.tokenizer):
        if mode == "loglik":
            got = {"loglik": option_scores(backend, it.prompt, it.bare, it.q.options, "loglik")}
        else:
            got = text_scores(backend, it.cloze, it.bare, it.q.options)
        for how, scores in got.items():
            picks.setdefault(how, []).append(best(scores))
    seconds = round(time.perf_counter() - start, 1)
    out = []
    for how, ps in picks.items():
        right = sum(str(p) == q.answer for p, q in zip(ps, qs))
        out.append({"model": model_dir, "mode": how, "questions": len(qs), "accuracy": round(right / len(qs), 4),
                    "picks": dict(sorted(Counter(str(p) for p in ps).items())),
                    "most_common_share": round(Counter(ps).most_common(1)[0][1] / len(qs), 4), "seconds": seconds})
    return out


def train(params: str, out: str) -> dict:
    from fsku.config import load_section
    from fsku.distill.pairs import PairsConfig
    from fsku.distill.sft import SftConfig, run_sft
    from fsku.stage import paths

    P = paths()
    cfg = load_section(SftConfig, "sft", params)
    pairs = load_section(PairsConfig, "pairs", params, ("test_fraction", "seed"))
    return run_sft(cfg, pairs, Path(P["teacher_gen"]), Path(P["prompts"]), P["student_init"], Path(out),
                   Path(out + ".sft.json"), Path(P["teacher_choices"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", help="train sft into this directory, then score it")
    ap.add_argument("--score-only", nargs="*", default=[], help="model directories to score without training")
    ap.add_argument("--mode", default="loglik", choices=["loglik", "text"],
                    help="how an option is scored: loglik, or text (eval.mcq_mode option and option_pmi)")
    ap.add_argument("--json", help="append the results here")
    args = ap.parse_args()
    from fsku.stage import setup_logging

    setup_logging()
    results = []
    if args.out:
        t = time.perf_counter()
        summary = train(args.params, args.out)
        trained = {"trained": summary.get("choices"), "train_seconds": round(time.perf_counter() - t, 1)}
        results += [{**trained, **r} for r in score(args.out, args.params, mode=args.mode)]
    results += [r for d in args.score_only for r in score(d, args.params, mode=args.mode)]
    from common import machine

    results = [{**r, "machine": machine()} for r in results]
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
