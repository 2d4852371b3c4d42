"""Stages `teacher_gen` and `student_gen`: answers of one model to the prompt pool.

    python -m stages.generate teacher|student [--merge]

With gen.shards > 1, run one shard per machine (gen.shard_index), copy the partial files
(data/gen/partial/) together and run with --merge to assemble the final out.
"""

import sys
from pathlib import Path

from fsku.config import load_section
from fsku.gen.backends import make_backend
from fsku.gen.config import GenConfig
from fsku.gen.format import format_prompt
from fsku.gen.runner import model_fingerprint, run_generation, write_final
from fsku.io import read_jsonl, write_json
from fsku.models.adapter import tokenizer_source
from fsku.stage import parser, run, seed_everything

MODELS = {"teacher": "models/teacher", "student": "models/student_sft"}  # the student after sft


def main() -> None:
    p = parser(__doc__)
    p.add_argument("who", choices=sorted(MODELS))
    p.add_argument("--model", default=None, help="model dir (default: models/teacher or models/student_sft)")
    p.add_argument("--prompts", default="data/gen/prompts.jsonl")
    p.add_argument("--out", default=None, help="default: data/gen/{who}.jsonl")
    p.add_argument("--stats", default=None, help="default: data/gen/{who}.stats.json")
    p.add_argument("--partial", default="data/gen/partial")
    p.add_argument("--merge", action="store_true", help="only assemble shards already generated")
    args = p.parse_args()
    cfg = load_section(GenConfig, "gen", args.params)
    seed_everything(0)
    model_dir = args.model or MODELS[args.who]
    sp = cfg.teacher if args.who == "teacher" else cfg.student
    system = cfg.teacher_system if args.who == "teacher" else ""
    prompts = read_jsonl(args.prompts)
    if args.merge:
        from transformers import AutoTokenizer

        backend, tokenizer = None, AutoTokenizer.from_pretrained(tokenizer_source(model_dir))
    else:
        backend = make_backend(cfg.backend, model_dir, cfg)
        tokenizer = backend.tokenizer
    records, stats = run_generation(prompts, backend, lambda u: format_prompt(tokenizer, u, system), sp, cfg,
                                    model=model_dir, fingerprint=model_fingerprint(model_dir),
                                    partial_dir=Path(args.partial), who=args.who, merge_only=args.merge)
    if records is None:
        print(f"shard {cfg.shard_index}/{cfg.shards} done; run with --merge once every shard's partial file "
              f"is in {args.partial}", file=sys.stderr)
        return
    write_final(Path(args.out or f"data/gen/{args.who}.jsonl"), records)
    for done in Path(args.partial).glob(f"{args.who}.shard*.jsonl"):  # complete: the partials have served
        done.unlink()
    reasons = {}
    for r in records:
        reasons[r["finish_reason"]] = reasons.get(r["finish_reason"], 0) + 1
    write_json(args.stats or f"data/gen/{args.who}.stats.json", {
        "stage": f"{args.who}_gen", "model": model_dir, **stats, "records": len(records), "finish_reasons": dict(sorted(reasons.items())),
        "mean_answer_tokens": round(sum(r["n_tokens"] for r in records) / len(records), 2),
        "mean_answer_chars": round(sum(len(r["text"]) for r in records) / len(records), 1),
        "prompts_truncated": sum(r["prompt_truncated"] for r in records)})


if __name__ == "__main__":
    run(main)
