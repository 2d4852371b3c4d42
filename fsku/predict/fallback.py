"""Answers that need no model: what the circuit breaker falls back to when a model times out,
fails, or gives nothing usable. Multiple choice picks the option closest to the retrieved context;
open-ended answers are composed from the top retrieved chunk."""

from __future__ import annotations

import re

from fsku.questions import Question
from fsku.scoring import char_ngram_cosine

_SENTENCE = re.compile(r"(?<=[다요함음임됨.。?!])\s+")
NO_CONTEXT_ANSWER = "관련 규정과 내부 통제 기준에 따라 필요한 보호 조치를 마련하고 이행하여야 합니다."


def option_by_overlap(q: Question, hits: list[dict]) -> tuple[int, float]:
    """(option number, its share of the overlap scores): the option whose character bigrams best
    match the retrieved context (the stem when nothing was retrieved); ties go to the lower number."""
    context = "\n".join(h["text"] for h in hits) or q.stem
    scores = [char_ngram_cosine(o, context) for o in q.options]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    total = sum(scores)
    return best + 1, (scores[best] / total if total else 1.0 / len(scores))


def answer_from_context(q: Question, hits: list[dict], max_chars: int = 300) -> str:
    """The top chunk's sentences that share the most with the question, in their order, within
    ``max_chars``; a generic statement when nothing was retrieved."""
    if not hits:
        return NO_CONTEXT_ANSWER
    sentences = [s.strip() for s in _SENTENCE.split(" ".join(hits[0]["text"].split())) if s.strip()]
    ranked = sorted(range(len(sentences)), key=lambda i: (-char_ngram_cosine(sentences[i], q.stem), i))
    keep, used = [], 0
    for i in ranked:
        if used + len(sentences[i]) > max_chars and keep:
            break
        keep.append(i)
        used += len(sentences[i])
    return " ".join(sentences[i] for i in sorted(keep))[:max_chars].strip() or NO_CONTEXT_ANSWER
