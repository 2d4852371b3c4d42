"""The quality gate: every check a teacher-written question must pass, each a function of data that
returns why it fails (the reason counted in ``metrics/synth.json``) or None.

Order: format, grounding, round trip (the stage scores it with the teacher), then near-duplicates
among the kept and against every evaluation file, then the keys' positions evened out.
"""

from __future__ import annotations

import dataclasses
import random
import re

from fsku.gen.config import DedupConfig
from fsku.gen.prompts import dedup
from fsku.questions import Question, parse_question
from fsku.scoring import _bigrams, non_answer, open_answer_problem
from fsku.synth.write import Candidate, _norm, copies_example

MIN_STEM_HANGUL = 8
# a stem asks something: a question mark, or a question word ("몇 시간 이내에 ... 알려야 한다")
_ASKS = re.compile(r"[?？]\s*$|몇|무엇|어느|어떤|어떻게|언제|얼마|누구|옳은 것|틀린 것|아닌 것|해당하는 것")


def format_problem(c: Candidate, chunk_text: str = "") -> str | None:
    """The project's own question parser reads it back unchanged, the options are distinct, the key
    is in range, the stem neither gives the key away nor is a loop or non-Korean; an open answer is
    worth scoring (``fsku.scoring``) and has a keyword; the stem is not about the worked example
    instead of ``chunk_text``."""
    stem_problem = open_answer_problem(c.stem)
    if stem_problem:
        return f"stem_{stem_problem}"
    if sum("\uac00" <= ch <= "\ud7a3" for ch in c.stem) < MIN_STEM_HANGUL:
        return "stem_too_short"
    if not _ASKS.search(c.stem):
        return "stem_not_a_question"
    if copies_example(f"{c.stem} {c.answer}", chunk_text):
        return "copies_example"
    if c.kind == "mcq":
        stem, options = parse_question(c.question_text())
        if stem != c.stem or options != c.options:
            return "unparsable"
        if len({_norm(o) for o in options}) < len(options):
            return "options_not_distinct"
        if not 1 <= c.key <= len(options):
            return "key_out_of_range"
        if len(_norm(c.answer)) >= 2 and _norm(c.answer) in _norm(c.stem):
            return "stem_gives_answer"
        return None
    problem = open_answer_problem(c.answer) or non_answer(c.answer, c.stem)
    if problem:
        return f"answer_{problem}"
    return None if c.keywords else "no_keywords"


def grounding(c: Candidate, chunk_text: str) -> float:
    """How much of the key (or the reference answer) the source chunk holds: 1.0 when it is there
    verbatim (spaces aside), else the share of its character bigrams found in the chunk."""
    text = c.answer
    if _norm(text) and _norm(text) in _norm(chunk_text):
        return 1.0
    grams = _bigrams(text)
    return round(len(grams & _bigrams(chunk_text)) / len(grams), 4) if grams else 0.0


_PICK_TAIL = re.compile(r"정답\s*(?:은|는)?\s*[:：]?\s*(.*)", re.S)
_PICK_NUMBER = re.compile(r"\s*[\(\[]?([1-9])(?![\d.,])")


def picked(text: str, options: list[str]) -> int | None:
    """The option an answer names: by the option's text after "정답" when it starts with one ("정답:
    24시간", "정답: 5년" for "5년" even where 5 is also a number), else by its number ("정답: 2 72시간",
    "2"); None when neither."""
    m = _PICK_TAIL.search(text)
    tail = m.group(1) if m else text
    dense = _norm(tail)
    for i, o in sorted(enumerate(options, 1), key=lambda x: -len(x[1])):
        if _norm(o) and dense.startswith(_norm(o)):
            return i
    n = _PICK_NUMBER.match(tail)
    return int(n.group(1)) if n and int(n.group(1)) <= len(options) else None


def as_question(c: Candidate, qid: str) -> Question:
    stem, options = parse_question(c.question_text())
    return Question(qid, c.question_text(), stem, options, c.answer_cell(), c.keywords)


def near_duplicates(held_out: list[Question], questions: list[Question], cfg: DedupConfig) -> dict[str, dict]:
    """Synthetic questions to drop, by id: ``leak`` when near-duplicating an evaluation question
    (``held_out``), ``duplicate`` when an earlier synthetic one; the prompts' own MinHash LSH, with
    the evaluation questions inserted first. A question like both is a leak: the synthetic ids sort
    after every other, and dedup names the first id of those it matches."""
    _, dropped = dedup(held_out + [dataclasses.replace(q, id=f"~{q.id}") for q in questions], cfg)
    held = {q.id for q in held_out}
    return {d["id"][1:]: {"rejected": "leak" if d["duplicate_of"] in held else "duplicate",
                          "duplicate_of": d["duplicate_of"].removeprefix("~")}
            for d in dropped if d["id"].startswith("~")}


def even_positions(candidates: list[Candidate], seed: int) -> None:
    """Move each multiple-choice key so the kept keys spread evenly over the option numbers (dealt
    in turn per option count, a seeded order): a student trained on keys that favour one position
    learns that position."""
    rng = random.Random(seed + 2)
    deck: dict[int, list[int]] = {}
    for c in candidates:
        if c.kind != "mcq":
            continue
        n = len(c.options)
        if not deck.get(n):
            deck[n] = rng.sample(range(1, n + 1), n)
        target = deck[n].pop()
        wrong = [o for i, o in enumerate(c.options, 1) if i != c.key]
        c.options = wrong[:target - 1] + [c.options[c.key - 1]] + wrong[target - 1:]
        c.key = target
