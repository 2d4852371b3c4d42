"""Training examples from the pairs: the prompt as the student reads it (and as the teacher does),
the teacher's answer (chosen) and the student's own (rejected). Shared by the distill and quantize
stages, so that neither imports the other's trainers."""

from __future__ import annotations

from pathlib import Path

from fsku.gen.format import format_prompt
from fsku.io import read_jsonl


def load_examples(pairs_file: Path, tokenizer, teacher_tokenizer=None, teacher_system: str = "",
                  own_prompt: bool = False) -> list[dict]:
    """Pairs as TRL's plain-text preference format, the prompt formatted as at generation time
    (without the teacher-only system prompt: the student never sees it). With ``teacher_system``, or
    ``own_prompt`` (a teacher with another tokenizer, so another chat template), each example also
    gets ``teacher_prompt``: the same user turn as the teacher reads it."""
    rows = read_jsonl(pairs_file)
    out = []
    for r in rows:
        user = r["chosen"][0]["content"]
        ex = {"prompt_id": r["prompt_id"], "prompt": format_prompt(tokenizer, user),
              "chosen": r["chosen"][-1]["content"], "rejected": r["rejected"][-1]["content"]}
        if teacher_system or own_prompt:
            ex["teacher_prompt"] = format_prompt(teacher_tokenizer or tokenizer, user, teacher_system)
        out.append(ex)
    return out


def check_examples(examples: list[dict], tokenizer, max_length: int, what: str) -> None:
    """Stop before training on data that cannot teach anything."""
    if len(examples) < 2:
        raise ValueError(f"{what}: {len(examples)} pair(s); distillation needs at least 2 "
                         "(check metrics/pairs.json for why pairs were dropped)")
    too_long = [e["prompt_id"] for e in examples if len(tokenizer(e["prompt"]).input_ids) >= max_length - 1]
    if too_long:
        raise ValueError(f"{what}: {len(too_long)} pair(s) leave no answer tokens within train.max_length "
                         f"{max_length} (prompt_id {', '.join(too_long[:5])}); raise train.max_length or "
                         "shorten prompts (prompts.max_context_chars)")
