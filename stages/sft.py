"""Stage `sft`: the initial student fine-tuned on the teacher's in-format answers (TRL SFTTrainer,
LoRA merged or full) -> models/student_sft (a plain model) and metrics/sft.json. The prompts that
`pairs` holds out as test pairs are left out. Then the teacher's option distributions on every training
MCQ (data/gen/teacher_choices.jsonl, sft.choices). sft.steps 0 and sft.choices.num_train_epochs 0 pass
models/student_init through."""

from pathlib import Path

from fsku.config import load_section
from fsku.distill.pairs import PairsConfig
from fsku.distill.sft import SftConfig, run_sft
from fsku.stage import parser, paths, run, seed_everything


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--teacher-gen", default=P["teacher_gen"])
    p.add_argument("--prompts", default=P["prompts"])
    p.add_argument("--teacher-choices", default=P["teacher_choices"], help="'' = no choice phase")
    p.add_argument("--student", default=P["student_init"])
    p.add_argument("--out", default=P["student_sft"])
    p.add_argument("--metrics", default=P["metrics"]["sft"])
    args = p.parse_args()
    cfg = load_section(SftConfig, "sft", args.params)
    pairs_cfg = load_section(PairsConfig, "pairs", args.params, ("test_fraction", "seed"))  # its held-out split
    seed_everything(cfg.seed)
    print(run_sft(cfg, pairs_cfg, Path(args.teacher_gen), Path(args.prompts), args.student, Path(args.out),
                  Path(args.metrics),
                  Path(args.teacher_choices) if args.teacher_choices else None))


if __name__ == "__main__":
    run(main)
