"""Stage `teacher_model`: the teacher (embedded GGUF, model dir or hub id) -> models/teacher."""

from fsku.config import load_section
from fsku.gen.format import ZERO_TEMPLATE
from fsku.models.config import TeacherConfig
from fsku.models.load import load_causal_lm, save_model
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--out", default=P["teacher"])
    args = p.parse_args()
    cfg = load_section(TeacherConfig, "teacher", args.params)
    try:
        model, tokenizer = load_causal_lm(cfg.model, cfg.dtype)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"teacher.model: {e}") from None
    if cfg.chat_template == "zero":  # a base model follows a plain-text framing with worked examples
        tokenizer.chat_template = ZERO_TEMPLATE
    save_model(model, tokenizer, args.out)
    print(f"teacher: {cfg.model} -> {args.out} ({sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    run(main)
