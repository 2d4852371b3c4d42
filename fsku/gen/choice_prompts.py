"""The examples of choice distillation (``fsku.distill.choices``): every deduplicated multiple-choice
training question, uncapped, with the prompt the students answer it with."""

from __future__ import annotations

import dataclasses

from fsku.gen.config import PromptsConfig
from fsku.gen.prompts import build_prompts
from fsku.questions import Question


def build_choice_prompts(questions: list[Question], search, cfg: PromptsConfig) -> list[dict]:
    """Every deduplicated multiple-choice question, uncapped, as the students answer it (no worked
    examples). A question also in the capped pool gets the same prompt and id there. The options are kept
so that ``sft.choices.option_rotations`` can show them in another order."""
    mcq = [q for q in questions if q.is_mcq]
    records, _ = build_prompts(mcq, search, dataclasses.replace(cfg, max_prompts=0, teacher_shots=0))
    options = {q.id: q.options for q in mcq}
    keep = ("prompt_id", "question_id", "n_options", "answer", "context_ids", "prompt")
    return [{**{k: r[k] for k in keep}, "options": options[r["question_id"]]} for r in records]
