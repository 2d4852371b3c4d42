"""The generation prompt pool: questions + retrieved context, near-duplicates removed.

A prompt is the question with its top-k retrieved chunks rendered by a fixed template. Its id is a
hash of that text, so teacher and student answers are joined on it, never on raw text. Near-
duplicate prompts (MinHash LSH over character n-grams of the question) are dropped before
generation, and the counts reported.
"""

from __future__ import annotations

import hashlib
import random

from fsku.gen.config import DedupConfig, PromptsConfig
from fsku.gen.shots import shots_for
from fsku.questions import Question

MCQ_INSTRUCTION = "보기 중 정답 번호를 고르고 \"정답: 번호\" 형식으로 답한 뒤 이유를 한 문장으로 설명하세요."
OPEN_INSTRUCTION = "핵심 용어를 포함하여 목록 없이 2~3문장으로 간결하게 답하세요."  # an instruct model otherwise lists
NO_CONTEXT = "(없음)"
# Multiple choice scored on the options' text: the context and the stem only. With the options listed
# and the instruction after them, a small model's likelihood of an option's text mostly says which
# option it has just read (measured on eval.csv, README "Answering": Gemma 3 270M 0.30 that way, 0.63
# on this prompt).
CLOZE_TEMPLATE = "다음 참고 자료를 바탕으로 질문에 답하세요.\n\n[참고 자료]\n{context}\n\n[질문]\n{question}"
USER_TEMPLATE = CLOZE_TEMPLATE + "\n\n{instruction}"  # what the models answer: the options and the instruction too


def prompt_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def render_context(hits: list[dict], budget: int) -> str:
    parts, used = [], 0
    for i, chunk in enumerate(hits, 1):
        head = f"[{i}] {chunk.get('title') or chunk['source']} · {chunk.get('section') or ''}".rstrip(" ·")
        body = chunk["text"]
        room = budget - used - len(head) - 1
        if room <= 0:
            break
        body = body[:room]
        parts.append(f"{head}\n{body}")
        used += len(head) + 1 + len(body)
    return "\n\n".join(parts) or NO_CONTEXT


def user_prompt(q: Question, hits: list[dict], cfg: PromptsConfig) -> str:
    question = q.stem + ("\n" + "\n".join(f"{i} {o}" for i, o in enumerate(q.options, 1)) if q.is_mcq else "")
    return USER_TEMPLATE.format(context=render_context(hits, cfg.max_context_chars), question=question,
                                instruction=MCQ_INSTRUCTION if q.is_mcq else OPEN_INSTRUCTION)


def cloze_prompt(q: Question, hits: list[dict], cfg: PromptsConfig) -> str:
    """The user turn under which an option's text is scored: retrieved context and stem, no options."""
    return CLOZE_TEMPLATE.format(context=render_context(hits, cfg.max_context_chars), question=q.stem)


def _shingles(text: str, n: int) -> set[str]:
    text = "".join(text.split())
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def dedup(questions: list[Question], cfg: DedupConfig) -> tuple[list[Question], list[dict]]:
    """Drop questions whose text is a near-duplicate of an earlier one (MinHash LSH)."""
    from datasketch import MinHash, MinHashLSH  # here: it imports scipy, which answering never needs

    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    kept, dropped = [], []
    for q in questions:
        m = MinHash(num_perm=cfg.num_perm, seed=1)
        m.update_batch([s.encode("utf-8") for s in _shingles(q.text, cfg.shingle)])
        dupes = lsh.query(m)
        if dupes:
            dropped.append({"id": q.id, "duplicate_of": sorted(dupes)[0]})
            continue
        lsh.insert(q.id, m)
        kept.append(q)
    return kept, dropped


def cap(pool: list[Question], n: int, open_share: float, seed: int) -> list[Question]:
    """A seeded draw of ``n`` questions. ``open_share`` > 0 reserves that share of them for
    open-ended questions (as many as there are; multiple choice fills the rest, and the other way
    round), so a capped pool still teaches the student both answer formats; 0 draws regardless of kind."""
    rng = random.Random(seed)
    if not open_share:
        return rng.sample(pool, n)
    opn = [q for q in pool if not q.is_mcq]
    mcq = [q for q in pool if q.is_mcq]
    n_open = min(len(opn), max(n - len(mcq), round(n * open_share)))
    return rng.sample(opn, n_open) + rng.sample(mcq, n - n_open)


def build_prompts(questions: list[Question], search, cfg: PromptsConfig) -> tuple[list[dict], dict]:
    """Prompt records and counts. ``search(query, k)`` returns chunk dicts, best first."""
    kept, dropped = dedup(questions, cfg.dedup)
    pool = list(kept)
    if cfg.max_prompts and len(pool) > cfg.max_prompts:
        pool = sorted(cap(pool, cfg.max_prompts, cfg.open_share, cfg.seed), key=lambda q: kept.index(q))
    twins: dict[str, set[str]] = {}  # near-duplicates: never an example for each other
    for d in dropped:
        twins.setdefault(d["id"], set()).add(d["duplicate_of"])
        twins.setdefault(d["duplicate_of"], set()).add(d["id"])
    records = []
    for q in pool:
        hits = search(q.stem, cfg.top_k) if cfg.top_k else []
        text = user_prompt(q, hits, cfg)
        cloze = {"cloze": cloze_prompt(q, hits, cfg), "cloze_bare": cloze_prompt(q, [], cfg)} if q.is_mcq else {}
        shots = shots_for(q, questions, search, cfg, twins.get(q.id, set()))
        records.append({
            "prompt_id": prompt_id(text), "question_id": q.id,
            "type": "mcq" if q.is_mcq else "open", "n_options": len(q.options),
            "question": q.text, "answer": q.answer, "keywords": q.keywords,
            "context_ids": [h["chunk_id"] for h in hits], "prompt": text, "shots": shots, **cloze,
        })
    counts = {"questions": len(questions), "near_duplicates_removed": len(dropped), "duplicates": dropped,
              "after_dedup": len(kept), "prompts": len(records),
              "mcq": sum(r["type"] == "mcq" for r in records), "open": sum(r["type"] == "open" for r in records)}
    return records, counts
