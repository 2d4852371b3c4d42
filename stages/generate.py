"""Stages `teacher_gen` and `student_gen`: answers of one model to the prompt pool.

    python -m stages.generate teacher|student [--merge]

With gen.shards > 1, run one shard per machine (gen.shard_index), copy the partial files
(data/gen/partial/) together and run with --merge to assemble the final out.
"""

import gc
import os
import sys
from pathlib import Path

import torch

from fsku.config import load_section
from fsku.gen.backends import TransformersBackend, make_backend
from fsku.gen.choice import best, constrained_answer, option_scores
from fsku.gen.config import GenConfig
from fsku.gen.format import example_turn, format_prompt
from fsku.gen.runner import run_generation, write_final
from fsku.gen.shots import render_shots
from fsku.io import read_jsonl, write_json
from fsku.models.adapter import tokenizer_source
from fsku.models.fingerprint import model_fingerprint
from fsku.questions import parse_question
from fsku.scoring import format_problem, leading_choice
from fsku.stage import parser, paths, run, seed_everything

WHO = ("student", "teacher")  # the student after sft: paths.student_sft


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("who", choices=WHO)
    p.add_argument("--model", default=None, help="model dir (default: paths.teacher or paths.student_sft)")
    p.add_argument("--prompts", default=P["prompts"])
    p.add_argument("--out", default=None, help="default: paths.<who>_gen")
    p.add_argument("--stats", default=None, help="default: paths.<who>_gen_stats")
    p.add_argument("--partial", default=P["gen_partial"])
    p.add_argument("--merge", action="store_true", help="only assemble shards already generated")
    args = p.parse_args()
    cfg = load_section(GenConfig, "gen", args.params)
    model_dir = args.model or P["teacher" if args.who == "teacher" else "student_sft"]
    sp = cfg.teacher if args.who == "teacher" else cfg.student
    seed_everything(sp.seed)
    system = cfg.teacher_system if args.who == "teacher" else ""
    prompts = read_jsonl(args.prompts)
    choices: dict[str, dict] = {}
    if args.who == "teacher" and cfg.teacher_mcq != "generate" and not args.merge:
        # before the generation engine starts (vLLM's CPU workers hold the cores while alive), and
        # with transformers: it computes the option positions' log-probabilities only, where vLLM's
        # prompt logprobs normalise over the vocabulary at every prompt position
        scorer = TransformersBackend(model_dir, cfg)
        choices = choose_options(scorer, scorer.tokenizer, [p for p in prompts if p["type"] == "mcq"],
                                 cfg.teacher_mcq)
        del scorer
        gc.collect()
    if not torch.cuda.is_available():
        # vLLM's engine core in this process instead of a spawned one: half the CPU build's start-up
        # (benchmarks/bench_vllm_start.py), the same generations; a user's own setting wins
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if args.merge:
        from transformers import AutoTokenizer

        backend, tokenizer = None, AutoTokenizer.from_pretrained(tokenizer_source(model_dir))
    else:
        backend = make_backend(cfg.backend, model_dir, cfg)
        tokenizer = backend.tokenizer

    def fmt(p: dict) -> str:  # the teacher alone gets the system prompt and its worked examples
        if args.who != "teacher":
            return format_prompt(tokenizer, p["prompt"])
        shots = render_shots(p.get("shots", []), lambda u, a: example_turn(tokenizer, u, a))
        return format_prompt(tokenizer, p["prompt"], "\n\n".join(x for x in (system, shots.rstrip()) if x))

    choose = (lambda batch: [choices.get(p["prompt_id"]) for p in batch]) if choices else None
    records, stats = run_generation(prompts, backend, fmt, sp, cfg, choose=choose,
                                    model=model_dir,
                                    fingerprint=model_fingerprint(model_dir) + (cfg.teacher_mcq if choose else ""),
                                    partial_dir=Path(args.partial), who=args.who, merge_only=args.merge)
    if records is None:
        print(f"shard {cfg.shard_index}/{cfg.shards} done; run with --merge once every shard's partial file "
              f"is in {args.partial}", file=sys.stderr)
        return
    write_final(Path(args.out or P[f"{args.who}_gen"]), records)
    for done in Path(args.partial).glob(f"{args.who}.shard*.jsonl"):  # complete: the partials have served
        done.unlink()
    reasons = {}
    for r in records:
        reasons[r["finish_reason"]] = reasons.get(r["finish_reason"], 0) + 1
    write_json(args.stats or P[f"{args.who}_gen_stats"], {**answer_stats(prompts, records),
        "stage": f"{args.who}_gen", "model": model_dir, **stats, "records": len(records),
        "finish_reasons": dict(sorted(reasons.items())),
        "mean_answer_tokens": round(sum(r["n_tokens"] for r in records) / len(records), 2),
        "mean_answer_chars": round(sum(len(r["text"]) for r in records) / len(records), 1),
        "prompts_truncated": sum(r["prompt_truncated"] for r in records)})


def choose_options(backend, tokenizer, prompts: list[dict], how: str) -> dict[str, dict]:
    """Multiple-choice answers constrained to the options, by prompt id: the option the model scores
    highest, written in the answer format."""
    out = {}
    for p in prompts:
        _, options = parse_question(p["question"])
        prompt = format_prompt(tokenizer, p["prompt"])  # loglik: the digit after the listed options
        scored = prompt if how == "loglik" else format_prompt(tokenizer, p["cloze"])
        scores = option_scores(backend, scored, format_prompt(tokenizer, p["cloze_bare"]), options, how)
        text = constrained_answer(best(scores), options)
        out[p["prompt_id"]] = {"text": text, "n_tokens": len(tokenizer(text, add_special_tokens=False).input_ids),
                               "finish_reason": "stop", "prompt_tokens": len(tokenizer(prompt).input_ids),
                               "prompt_truncated": False, "option_scores": [round(x, 4) for x in scores]}
    return out


def answer_stats(prompts: list[dict], records: list[dict]) -> dict:
    """How many answers are in format (multiple choice: a valid option number first; open-ended:
    Korean text that is not a loop or punctuation, and answers: not too short, not an echo of the
    question), why the others are not, and the share of
    multiple-choice answers whose leading number is the reference answer."""
    by_id = {p["prompt_id"]: p for p in prompts}
    problems = {}
    right = mcq = 0
    for r in records:
        p = by_id[r["prompt_id"]]
        why = format_problem(r["text"], p["type"], p["n_options"], question=p["question"])
        if why:
            problems[f"{p['type']}_{why}"] = problems.get(f"{p['type']}_{why}", 0) + 1
        if p["type"] == "mcq" and p.get("answer"):
            mcq += 1
            right += str(leading_choice(r["text"], p["n_options"])) == str(p["answer"]).strip()
    return {"in_format": round(1 - sum(problems.values()) / len(records), 4) if records else None,
            "format_problems": dict(sorted(problems.items())),
            "mcq_accuracy": round(right / mcq, 4) if mcq else None, "mcq_with_answer": mcq}


if __name__ == "__main__":
    run(main)
