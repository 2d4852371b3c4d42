"""Worked examples for the teacher: a base model answers in format only when shown how, in context.

Each example is another training question with its own retrieved context and its gold answer in the
answer format (multiple choice: ``정답: N`` and the option's text; open-ended: the reference answer).
They go into the teacher's system turn only; the student never sees them. Examples come from the
training questions alone, never the question being answered or a near-duplicate of it, chosen by
their similarity to the question (or a seeded hash of it), deterministically, so every run, shard
and resume picks the same ones.
"""

from __future__ import annotations

import dataclasses
import hashlib

from fsku.questions import Question
from fsku.scoring import char_ngram_cosine

SHOTS_INTRO = "다음은 금융보안 질문에 참고 자료를 근거로 답한 예시입니다. 같은 형식으로 답하세요."


def gold_answer(q: Question) -> str:
    """A question's reference answer in the format the models are taught to answer in."""
    if q.is_mcq:
        n = int(q.answer)
        return f"정답: {n} {q.options[n - 1]}"
    return " ".join(q.answer.split())


def pick_shots(q: Question, pool: list[Question], k: int, exclude: set[str] = frozenset(), seed: int = 0,
               how: str = "random") -> list[Question]:
    """``k`` questions of ``q``'s kind from ``pool`` (those with an answer), neither ``q`` nor any id in
    ``exclude``. ``random``: in an order fixed by a hash of (seed, q.id, candidate id); ``similar``:
    the stems closest to ``q``'s (character-bigram cosine; the hash breaks ties), most similar
    last, next to the question, so a small model that copies an example copies the nearest one."""
    cands = [c for c in pool if c.id != q.id and c.id not in exclude and c.answer and c.is_mcq == q.is_mcq]
    rank = lambda c: hashlib.sha256(f"{seed}:{q.id}:{c.id}".encode()).hexdigest()  # noqa: E731
    if how == "similar":
        return sorted(cands, key=lambda c: (-char_ngram_cosine(c.stem, q.stem), rank(c)))[:k][::-1]
    return sorted(cands, key=rank)[:k]


def shots_for(q: Question, pool: list[Question], search, cfg, exclude: set[str] = frozenset()) -> list[dict]:
    """``cfg.teacher_shots`` worked examples for ``q`` (``cfg``: PromptsConfig), each with its own
    top retrieved chunk within ``cfg.shot_context_chars``; ``search(query, k)`` may be None."""
    from fsku.gen.prompts import user_prompt  # prompts picks shots too: imported here, not at the top

    shot_cfg = dataclasses.replace(cfg, max_context_chars=cfg.shot_context_chars)
    return [{"question_id": s.id, "answer": gold_answer(s),
             "prompt": user_prompt(s, search(s.stem, 1) if search and cfg.top_k else [], shot_cfg)}
            for s in pick_shots(q, pool, cfg.teacher_shots, exclude, cfg.seed, cfg.shot_selection)]


def render_shots(shots: list[dict], chat) -> str:
    """The teacher's system text: an intro, then each example as a user turn and its answer, framed by
    ``chat(user, answer)`` (the template the query itself is framed by)."""
    if not shots:
        return ""
    return SHOTS_INTRO + "\n\n" + "".join(chat(s["prompt"], s["answer"]) for s in shots)
