"""Stage `student_model`: the initial student (pruned teacher, model dir or hub id) ->
models/student_init, after checking it shares the teacher's tokenizer (unless `student.own_tokenizer`:
then only `train.method: gold` can distill it)."""

import logging

from fsku.config import load_section
from fsku.io import write_json
from fsku.models.compat import check_and_align, same_vocab
from fsku.models.config import StudentConfig, check_smaller
from fsku.models.load import load_causal_lm, save_model
from fsku.models.prune import prune_layers
from fsku.stage import parser, paths, run

log = logging.getLogger("stages.student_model")


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--teacher", default=P["teacher"])
    p.add_argument("--out", default=P["student_init"])
    p.add_argument("--metrics", default=P["metrics"]["models"])
    args = p.parse_args()
    cfg = load_section(StudentConfig, "student", args.params)
    teacher, teacher_tok = load_causal_lm(args.teacher, cfg.dtype)
    if cfg.model == "prune":
        student, kept = prune_layers(teacher, cfg.keep_layers)
        student_tok = teacher_tok
    else:
        try:
            student, student_tok = load_causal_lm(cfg.model, cfg.dtype)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"student.model: {e}") from None
        kept = None
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    if cfg.model != "prune":  # keep_layers is bounded by the teacher's depth already
        check_smaller(cfg.model, count(student), count(teacher))
    same = same_vocab(teacher_tok, student_tok)
    if same or not cfg.own_tokenizer:
        log.info(check_and_align(teacher_tok, student_tok, teacher, student))
    else:
        log.info("the student has its own tokenizer: train.method gold distills it (ULD)")
    save_model(student, student_tok, args.out)
    write_json(args.metrics, {
        "teacher_layers": teacher.config.num_hidden_layers, "teacher_parameters": count(teacher),
        "student": cfg.model, "student_layers": student.config.num_hidden_layers,
        "student_parameters": count(student), "kept_layers": kept, "same_tokenizer": same,
    })


if __name__ == "__main__":
    run(main)
