"""What a model answers to open-ended questions, as `evaluate` answers them: how many answers are
its own and why the others fall back, the open score with the fallbacks and counting them as 0
(model only), for one or more `frequency_penalty` values side by side. With --all, multiple choice
too. The sft and warm-start tables of README were measured this way.

    python benchmarks/bench_open_answers.py models/student_sft [--penalties 0,0.5] [--all]
        [--questions data/raw/questions/eval.csv] [--shots random similar]   (--shots: a teacher)

Needs `make run` (the model dir, models/index, models/encoder). Greedy, the eval.* settings of params.yaml.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time

from common import ROOT, machine

from fsku.config import load_section
from fsku.gen.config import GenConfig, PromptsConfig
from fsku.metric import Similarity, score_items, summarize
from fsku.predict.config import EvalConfig
from fsku.predict.run import answer_with_model, load_retriever
from fsku.questions import load_questions
from fsku.retrieval.config import IndexConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model")
    p.add_argument("--questions", default=str(ROOT / "data/raw/questions/eval.csv"))
    p.add_argument("--penalties", default="0")
    p.add_argument("--all", action="store_true", help="multiple choice too")
    p.add_argument("--shots", nargs="*", default=[], choices=["random", "similar"],
                   help="the teacher's worked examples from train.csv, by each prompts.shot_selection given")
    args = p.parse_args()
    params = ROOT / "params.yaml"
    cfg = load_section(EvalConfig, "eval", params)
    gen_cfg, prompts_cfg = load_section(GenConfig, "gen", params), load_section(PromptsConfig, "prompts", params)
    questions = [q for q in load_questions(args.questions) if args.all or not q.is_mcq]
    search = load_retriever(ROOT / "models/index", load_section(IndexConfig, "index", params))
    similarity = Similarity(str(ROOT / cfg.similarity_model))
    print(f"{machine()}; {args.model}; {len(questions)} questions")
    runs = [(float(x), how) for x in args.penalties.split(",") for how in (args.shots or [None])]
    for penalty, how in runs:
        t = time.perf_counter()
        system_for = None
        if how:  # as evaluate's teacher row
            from stages.evaluate import teacher_shots

            system_for = teacher_shots(load_questions(ROOT / "data/raw/questions/train.csv"), search,
                                       dataclasses.replace(prompts_cfg, shot_selection=how))
        settings = dataclasses.replace(cfg, frequency_penalty=penalty)
        records, _ = answer_with_model(args.model, questions, search, settings,
                                       gen_cfg, prompts_cfg, system_for=system_for)
        items = score_items(questions, {r["id"]: r["answer"] for r in records}, similarity)
        for rec, item in zip(records, items):
            item["source"] = rec["source"]
        s = summarize(items)
        opn = [r for r in records if r["type"] == "open"]
        why = collections.Counter(r["fallback"] for r in opn if r["fallback"])
        shots = f", shots {how}" if how else ""
        print(f"frequency_penalty {penalty}{shots}: mcq {s['mcq_accuracy']} open {s['open_score']} "
              f"model-only open {s['model_only']['open_score']}; own open answers "
              f"{sum(not r['fallback'] for r in opn)} of {len(opn)}; fell back {dict(sorted(why.items()))}; "
              f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
