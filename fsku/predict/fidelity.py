"""Fidelity to the teacher on the evaluation questions: token KL(teacher || model) over the teacher's
own answers, what distillation optimises, read beside each row's MCQ agreement with the teacher."""

from __future__ import annotations

import logging

from fsku.distill.quality import answer_quality, first_missing
from fsku.gen.choice import constrained_answer
from fsku.gen.format import format_prompt
from fsku.gen.prompts import user_prompt
from fsku.models.compat import same_vocab
from fsku.models.load import load_for_inference

log = logging.getLogger(__name__)


def teacher_examples(questions, teacher_records: list[dict], hits: dict[str, list[dict]], prompts_cfg,
                     tokenizer) -> list[dict]:
    """``answer_quality`` examples from the teacher's answers to evaluation questions: each prompt as
    the student reads it, the teacher's answer as distillation would teach it (open: its own text,
    when no fallback replaced it; multiple choice: its option in the taught format, ``정답: N 보기``)."""
    by_id = {r["id"]: r for r in teacher_records}
    out = []
    for q in questions:
        rec = by_id.get(q.id)
        if rec is None or rec["source"] != "model":
            continue
        answer = constrained_answer(int(rec["answer"]), q.options) if q.is_mcq else rec["answer"]
        user = user_prompt(q, hits.get(q.id, []), prompts_cfg)
        out.append({"user": user, "prompt": format_prompt(tokenizer, user), "chosen": answer})
    return out


def kl_to_teacher(model_dir, teacher, examples: list[dict], max_length: int, teacher_tokenizer=None,
                  states=None) -> dict:
    """``answer_quality`` of the model in ``model_dir`` (plain, adapter or quantized) against a loaded
    teacher. A model with another tokenizer than ``teacher_tokenizer`` has no token KL (None): its
    prompts are formatted its own way and each perplexity is over each model's tokens.

    ``states``: the teacher's ``TeacherStates`` for these examples (its row computed them): used
    instead of running the teacher again when they cover every answer, else the teacher runs and
    the result says which (``teacher_side``: "states" or "model")."""
    model, tokenizer = load_for_inference(model_dir)
    try:
        cross = teacher_tokenizer is not None and not same_vocab(teacher_tokenizer, tokenizer)
        if cross:
            examples = [{**ex, "prompt": format_prompt(tokenizer, ex["user"]), "teacher_prompt": ex["prompt"]}
                        for ex in examples]
        side = teacher
        if states is not None:
            missing = first_missing(states, examples, tokenizer, max_length, teacher_tokenizer if cross else None)
            if missing is None:
                side = states
            else:
                log.warning("KL to the teacher: its stored states lack answer %d (another tokenization or set of "
                            "answers); running the teacher instead", missing)
        q = answer_quality(model.eval(), side, examples, tokenizer, max_length,
                           teacher_tokenizer=teacher_tokenizer if cross else None)
        return {**q, "teacher_side": "states" if side is states else "model"}
    finally:
        del model
