"""Preference pairs for DistiLLM-2: chosen = teacher answer, rejected = student answer.

Teacher and student records are joined on ``prompt_id`` (a hash of the prompt), never on raw text.
Empty and degenerate answers (whitespace only, repetition loops) are dropped and counted by reason.
The train/test split is by prompt, through a seeded hash of the prompt id, so the two sides never
share a prompt and the test split is not a slice of train.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from fsku.config import field


@dataclass
class PairsConfig:
    test_fraction: float = field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    min_chars: int = field(1, ge=1, doc="answers shorter than this (after stripping) are empty")
    max_repeat_fraction: float = field(0.5, gt=0.0, le=1.0,
                                       doc="answers whose most repeated line or 4-gram covers more are loops")


def degenerate_reason(text: str, cfg: PairsConfig) -> str | None:
    stripped = text.strip()
    if len(stripped) < cfg.min_chars:
        return "empty"
    lines = [x.strip() for x in stripped.splitlines() if x.strip()]
    if len(lines) >= 4 and Counter(lines).most_common(1)[0][1] / len(lines) > cfg.max_repeat_fraction:
        return "repetition"
    words = stripped.split()
    grams = [" ".join(words[i:i + 4]) for i in range(len(words) - 3)]
    if len(grams) >= 4:
        top = Counter(grams).most_common(1)[0][1]
        if top * 4 / len(words) > cfg.max_repeat_fraction and top >= 3:
            return "repetition"
    return None


def is_test(prompt_id: str, cfg: PairsConfig) -> bool:
    h = int(hashlib.sha256(f"{cfg.seed}:{prompt_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < cfg.test_fraction


def make_pairs(teacher: list[dict], student: list[dict], cfg: PairsConfig) -> tuple[list[dict], list[dict], dict]:
    """(train pairs, test pairs, counts) in the conversational format of TRL preference trainers."""
    by_id = {r["prompt_id"]: r for r in student}
    drops: Counter = Counter()
    train, test = [], []
    for t in teacher:
        s = by_id.get(t["prompt_id"])
        if s is None:
            drops["no_student_answer"] += 1
            continue
        reason = degenerate_reason(t["text"], cfg)
        if reason:
            drops[f"teacher_{reason}"] += 1
            continue
        reason = degenerate_reason(s["text"], cfg)
        if reason:
            drops[f"student_{reason}"] += 1
            continue
        user = {"role": "user", "content": t["prompt"]}
        pair = {"prompt_id": t["prompt_id"], "question_id": t["question_id"],
                "chosen": [user, {"role": "assistant", "content": t["text"].strip()}],
                "rejected": [user, {"role": "assistant", "content": s["text"].strip()}]}
        (test if is_test(t["prompt_id"], cfg) else train).append(pair)
    drops["no_teacher_answer"] = len(set(by_id) - {t["prompt_id"] for t in teacher})
    counts = {"teacher_records": len(teacher), "student_records": len(student), "pairs": len(train) + len(test),
              "train": len(train), "test": len(test),
              "dropped": {k: v for k, v in sorted(drops.items()) if v}}
    return train, test, counts
