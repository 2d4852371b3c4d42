"""Stage `pairs`: teacher and student answers -> preference pairs.

Writes data/pairs/{train,test}.jsonl and the same pairs as a Hugging Face DatasetDict in
data/pairs/hf (``datasets.load_from_disk``), all replaced at once.
"""

from pathlib import Path

from fsku.config import load_section
from fsku.distill.pairs import PairsConfig, make_pairs, save_hf_dataset
from fsku.io import atomic_dir, read_jsonl, write_json, write_jsonl
from fsku.questions import load_questions
from fsku.scoring import get_scorer
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--teacher", default=P["teacher_gen"])
    p.add_argument("--student", default=P["student_gen"])
    p.add_argument("--questions", default=P["train_questions"],
                   help="question bank with Answer/Keyword (best_vs_worst)")
    p.add_argument("--out", default=P["pairs"])
    p.add_argument("--metrics", default=P["metrics"]["pairs"])
    args = p.parse_args()
    cfg = load_section(PairsConfig, "pairs", args.params)
    questions = scorer = None
    if cfg.strategy == "best_vs_worst":
        questions = {q.id: q for q in load_questions(args.questions)}
        scorer = get_scorer(cfg.scorer)
    train, test, counts = make_pairs(read_jsonl(args.teacher), read_jsonl(args.student), cfg, questions, scorer)
    if not train:  # nothing to write that distill could learn from: say why, keep the previous out
        raise ValueError(f"{args.teacher} + {args.student}: no training pair left of {counts['teacher_records']} "
                         f"prompts (dropped: {counts['dropped']}); read a few answers of each model")
    if not test:  # distill measures the student on them; an empty split cannot be saved either
        raise ValueError(f"{args.teacher} + {args.student}: no test pair among {len(train)} pairs "
                         f"(pairs.test_fraction {cfg.test_fraction}): raise pairs.test_fraction or the prompts")
    with atomic_dir(args.out) as tmp:
        write_jsonl(Path(tmp) / "train.jsonl", train)
        write_jsonl(Path(tmp) / "test.jsonl", test)
        save_hf_dataset(Path(tmp) / "hf", train, test)
    write_json(args.metrics, counts)
    print(counts)


if __name__ == "__main__":
    run(main)
