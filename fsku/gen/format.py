"""Turning a user prompt into the text a model is fed.

Instruction-tuned models get their tokenizer's chat template (with the teacher-only system prompt
as a system turn, or folded into the user turn when the template has no system role); base models,
which have no template, get a plain completion template.
"""

from __future__ import annotations

COMPLETION_TEMPLATE = "{system}{user}\n\n### 답변\n"

# A "zero" chat template for a base model: each turn framed in plain text, as a base model has seen
# documents framed, so that worked examples in the system turn show it the pattern to continue.
# Assistant turns end with EOS, which is what a model fine-tuned on this template learns to emit.
ZERO_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### 질문\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}### 답변\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}### 답변\n{% endif %}")
# an answer is one paragraph; a base model that has answered goes on with a new line (a repeat, a
# list, the next "### 질문")
ZERO_STOP = ["\n", "###"]


def example_turn(tokenizer, user: str, answer: str) -> str:
    """A worked example (question and answer) in the tokenizer's chat framing, for a system turn."""
    if getattr(tokenizer, "chat_template", None) == ZERO_TEMPLATE:
        return f"### 질문\n{user}\n\n### 답변\n{answer}\n\n"
    return f"[질문]\n{user}\n\n[답변]\n{answer}\n\n"


def adds_bos(tokenizer) -> bool:
    """Whether tokenizing with special tokens (as every caller here does) puts BOS first."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("x").input_ids[:1] == [bos]


def without_bos(tokenizer, text: str) -> str:
    """A chat template that writes BOS itself (Gemma-IT's does) would get a second one from a
    tokenizer that adds its own: drop the template's, so that every prompt starts with exactly one."""
    bos = tokenizer.bos_token
    return text[len(bos):] if bos and text.startswith(bos) and adds_bos(tokenizer) else text


def format_prompt(tokenizer, user: str, system: str = "") -> str:
    """The prompt text for ``tokenizer(text)`` (special tokens added by the tokenizer, BOS once)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        if system:
            try:
                return without_bos(tokenizer, tokenizer.apply_chat_template(
                    [{"role": "system", "content": system}, *messages], tokenize=False, add_generation_prompt=True))
            except Exception:  # templates without a system role raise; fold it into the user turn
                messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
        return without_bos(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False,
                                                                    add_generation_prompt=True))
    return COMPLETION_TEMPLATE.format(system=f"{system}\n\n" if system else "", user=user)


def stop_strings(tokenizer) -> list[str]:
    """Strings that end an answer besides EOS: the next turn's header under the zero template."""
    return list(ZERO_STOP) if getattr(tokenizer, "chat_template", None) == ZERO_TEMPLATE else []
