"""Preference pairs from teacher and student answers to the same prompts.

``teacher_vs_student`` (DistiLLM-2): chosen = the teacher's answer, rejected = the student's.
``best_vs_worst``: every sampled answer of either model to a prompt is scored by a pluggable scorer
(default: against the question bank's reference answer and keywords); the best is chosen, the worst
rejected, and prompts whose candidates all score the same are dropped as ``tied``.

Teacher and student records are joined on ``prompt_id`` (a hash of the prompt), never on raw text.
Empty and degenerate answers (whitespace only, repetition loops) are dropped and counted by reason.
The train/test split is by prompt, through a seeded hash of the prompt id, so the two sides never
share a prompt and the test split is not a slice of train.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fsku.config import field
from fsku.questions import Question
from fsku.scoring import loop_reason


@dataclass
class PairsConfig:
    test_fraction: float = field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    min_chars: int = field(1, ge=1, doc="answers shorter than this (after stripping) are empty")
    max_repeat_fraction: float = field(0.5, gt=0.0, le=1.0,
                                       doc="answers whose most repeated line or 4-gram covers more are loops")
    strategy: Literal["teacher_vs_student", "best_vs_worst"] = "teacher_vs_student"
    scorer: str = field("reference", doc="best_vs_worst: 'reference' or 'package.module:function'")
    min_margin: float = field(0.0, ge=0.0, doc="best_vs_worst: best must beat worst by more than this")


def degenerate_reason(text: str, cfg: PairsConfig) -> str | None:
    stripped = text.strip()
    if len(stripped) < cfg.min_chars:
        return "empty"
    return loop_reason(stripped, cfg.max_repeat_fraction)


def is_test(prompt_id: str, cfg: PairsConfig) -> bool:
    h = int(hashlib.sha256(f"{cfg.seed}:{prompt_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < cfg.test_fraction


def _pair(rec: dict, chosen: str, rejected: str, **extra) -> dict:
    user = {"role": "user", "content": rec["prompt"]}
    return {"prompt_id": rec["prompt_id"], "question_id": rec["question_id"],
            "chosen": [user, {"role": "assistant", "content": chosen.strip()}],
            "rejected": [user, {"role": "assistant", "content": rejected.strip()}], **extra}


def _samples(rec: dict) -> list[dict]:
    return rec.get("samples") or [{"text": rec["text"]}]


def teacher_vs_student(t: dict, s: dict, cfg: PairsConfig, drops: Counter, **_) -> dict | None:
    for who, rec in (("teacher", t), ("student", s)):
        reason = degenerate_reason(rec["text"], cfg)
        if reason:
            drops[f"{who}_{reason}"] += 1
            return None
    return _pair(t, t["text"], s["text"])


def best_vs_worst(t: dict, s: dict, cfg: PairsConfig, drops: Counter, questions: dict[str, Question],
                  scorer: Callable) -> dict | None:
    question = questions.get(t["question_id"])
    if question is None:
        drops["no_question"] += 1
        return None
    # (score, source rank, sample index): ties go to the teacher for chosen, to the student for rejected
    cands = []
    for rank, (who, rec) in enumerate((("teacher", t), ("student", s))):
        for i, sample in enumerate(_samples(rec)):
            reason = degenerate_reason(sample["text"], cfg)
            if reason:
                drops[f"{who}_sample_{reason}"] += 1
                continue
            score = scorer(question, sample["text"])
            if score is None:
                drops["no_reference"] += 1
                return None
            cands.append((float(score), rank, i, who, sample["text"]))
    if len(cands) < 2:
        drops["too_few_samples"] += 1
        return None
    best = max(cands, key=lambda c: (c[0], -c[1], -c[2]))
    worst = min(cands, key=lambda c: (c[0], -c[1], c[2]))
    if best[0] - worst[0] <= cfg.min_margin:
        drops["tied"] += 1
        return None
    return _pair(t, best[4], worst[4], chosen_source=best[3], rejected_source=worst[3],
                 chosen_score=round(best[0], 4), rejected_score=round(worst[0], 4))


STRATEGIES = {"teacher_vs_student": teacher_vs_student, "best_vs_worst": best_vs_worst}


def make_pairs(teacher: list[dict], student: list[dict], cfg: PairsConfig,
               questions: dict[str, Question] | None = None,
               scorer: Callable | None = None) -> tuple[list[dict], list[dict], dict]:
    """(train pairs, test pairs, counts) in the conversational format of TRL preference trainers.
    ``best_vs_worst`` needs the question bank (by ID) and a scorer."""
    if cfg.strategy == "best_vs_worst" and (questions is None or scorer is None):
        raise ValueError("pairs.strategy best_vs_worst needs the question bank and a scorer")
    build = STRATEGIES[cfg.strategy]
    by_id = {r["prompt_id"]: r for r in student}
    drops: Counter = Counter()
    train, test = [], []
    for t in teacher:
        s = by_id.get(t["prompt_id"])
        if s is None:
            drops["no_student_answer"] += 1
            continue
        pair = build(t, s, cfg, drops, questions=questions, scorer=scorer)
        if pair is not None:
            (test if is_test(t["prompt_id"], cfg) else train).append(pair)
    drops["no_teacher_answer"] = len(set(by_id) - {t["prompt_id"] for t in teacher})
    counts = {"strategy": cfg.strategy, "teacher_records": len(teacher), "student_records": len(student),
              "pairs": len(train) + len(test), "train": len(train), "test": len(test),
              "dropped": {k: v for k, v in sorted(drops.items()) if v}}
    if cfg.strategy == "best_vs_worst":
        kept = train + test
        counts["chosen_from"] = dict(sorted(Counter(p["chosen_source"] for p in kept).items()))
        counts["mean_margin"] = round(sum(p["chosen_score"] - p["rejected_score"] for p in kept) / len(kept), 4) \
            if kept else None
    return train, test, counts


def save_hf_dataset(path, train: list[dict], test: list[dict]) -> None:
    """The pairs as a Hugging Face DatasetDict (``load_from_disk``), written atomically."""
    import datasets

    from fsku.io import atomic_dir

    datasets.disable_progress_bars()
    features = datasets.Features({
        "prompt_id": datasets.Value("string"), "question_id": datasets.Value("string"),
        "chosen": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "rejected": [{"role": datasets.Value("string"), "content": datasets.Value("string")}]})
    keep = list(features)
    with atomic_dir(path) as tmp:
        datasets.DatasetDict({
            name: datasets.Dataset.from_list([{k: r[k] for k in keep} for r in rows], features=features)
            for name, rows in (("train", train), ("test", test))}).save_to_disk(str(tmp))
