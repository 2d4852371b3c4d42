"""Stage `teacher_choices`: the teacher's log-probability of "정답: N" for each option of every training
multiple-choice question (data/gen/choice_prompts.jsonl) -> data/gen/teacher_choices.jsonl and
metrics/teacher_choices.json. What `sft` teaches the student at its answer position
(fsku.distill.choices); scored as `evaluate` scores the teacher's row (eval.mcq_mode loglik).
With sft.choices.num_train_epochs 0 (the phase off) it scores nothing and writes an empty out."""

import time
from collections import Counter
from pathlib import Path

from fsku.config import load_section
from fsku.distill.sft import SftConfig
from fsku.gen.backends import make_backend
from fsku.gen.choice import best, option_scores
from fsku.gen.config import ENGINE_KEYS, GenConfig
from fsku.gen.format import format_prompt
from fsku.io import read_jsonl, write_json, write_jsonl
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--prompts", default=P["choice_prompts"])
    p.add_argument("--teacher", default=P["teacher"])
    p.add_argument("--out", default=P["teacher_choices"])
    p.add_argument("--metrics", default=P["metrics"]["teacher_choices"])
    args = p.parse_args()
    gen_cfg = load_section(GenConfig, "gen", args.params, ENGINE_KEYS)
    if not load_section(SftConfig, "sft", args.params, ("choices.num_train_epochs",)).choices.num_train_epochs:
        write_jsonl(args.out, [])
        write_json(args.metrics, {"questions": 0, "skipped": "sft.choices.num_train_epochs is 0"})
        print("teacher_choices: skipped (sft.choices.num_train_epochs is 0)")
        return
    prompts = read_jsonl(Path(args.prompts))
    start = time.perf_counter()
    backend = make_backend("transformers", args.teacher, gen_cfg)  # one forward pass a question
    out = []
    for i, r in enumerate(prompts, 1):
        options = [""] * int(r["n_options"])
        lps = option_scores(backend, format_prompt(backend.tokenizer, r["prompt"]), "", options, "loglik")
        out.append({"prompt_id": r["prompt_id"], "question_id": r["question_id"], "prompt": r["prompt"],
                    "options": r.get("options", []), "logprobs": [round(x, 4) for x in lps], "choice": best(lps),
                    "answer": r.get("answer")})
        if i % 25 == 0 or i == len(prompts):
            print(f"teacher_choices: {i}/{len(prompts)} ({time.perf_counter() - start:.0f} s)", flush=True)
    graded = [r for r in out if str(r["answer"] or "").isdigit()]
    summary = {"questions": len(out), "model": args.teacher,
               "accuracy": round(sum(str(r["choice"]) == str(r["answer"]) for r in graded) / len(graded), 4)
               if graded else None,
               "choices": dict(sorted(Counter(str(r["choice"]) for r in out).items())),
               "seconds": round(time.perf_counter() - start, 1)}
    write_jsonl(args.out, out)
    write_json(args.metrics, summary)
    print(summary)


if __name__ == "__main__":
    run(main)
