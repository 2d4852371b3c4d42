"""Turning a user prompt into the text a model is fed.

Instruction-tuned models get their tokenizer's chat template (with the teacher-only system prompt
as a system turn, or folded into the user turn when the template has no system role); base models,
which have no template, get a plain completion template.
"""

from __future__ import annotations

COMPLETION_TEMPLATE = "{system}{user}\n\n### 답변\n"


def format_prompt(tokenizer, user: str, system: str = "") -> str:
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        if system:
            try:
                return tokenizer.apply_chat_template([{"role": "system", "content": system}, *messages],
                                                     tokenize=False, add_generation_prompt=True)
            except Exception:  # templates without a system role raise; fold it into the user turn
                messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return COMPLETION_TEMPLATE.format(system=f"{system}\n\n" if system else "", user=user)
