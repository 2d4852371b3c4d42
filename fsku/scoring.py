"""FSKU answer scoring: reading an option number out of generated text, the benchmark's keyword
rule, and a model-free reference scorer used to rank sampled answers (``pairs.strategy:
best_vs_worst``). The evaluation stage adds embedding similarity on top of the same pieces.
"""

from __future__ import annotations

import importlib
import math
import re
from collections import Counter
from collections.abc import Callable

from fsku.questions import Question

# "정답: 3", "정답은 (3)", "3 ...", "(3)"; not a list item "1. ..." (an echoed instruction starts so)
_LEADING_CHOICE = re.compile(r"^\s*(?:정답\s*(?:은|는|:|：|=)?\s*(?:제\s*)?[\(\[]?\s*([1-9])(?!\d)"
                             r"|[\(\[]?([1-9])(?![\d.]))")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_WORD_CHAR = re.compile(r"\w")
MIN_ANSWER_HANGUL = 10   # the eval and train gold answers have 40 or more
ECHO_CONTAINMENT = 0.8
# "[3] 전자서명 및 인증업무 운영 규정 (학습용 예시 문서) · 제6장 ...": the label the prompts give a
# retrieved passage (fsku/gen/prompts.py), copied as if it were the answer
_SOURCE_LABEL = re.compile(r"^\s*\[\d+\]\s")
_CHAR_RUN = re.compile(r"(.{1,4}?)\1{7,}")  # a unit of 1-4 characters repeated 8 times or more in a row
_ANSWER_MARK = re.compile(r"정답\s*(?:은|는|:|：|=)?\s*(?:제\s*)?[\(\[]?\s*([1-9])(?!\d)")
_NUMBER = re.compile(r"(?<!\d)([1-9])(?!\d)")


def extract_choice(text: str, n_options: int) -> int | None:
    """The option number a generated answer picks: the number right after "정답" when it is in range,
    else the first standalone number in range; None when there is none."""
    for m in _ANSWER_MARK.finditer(text):
        if 1 <= int(m.group(1)) <= n_options:
            return int(m.group(1))
    for m in _NUMBER.finditer(text):
        if 1 <= int(m.group(1)) <= n_options:
            return int(m.group(1))
    return None


def loop_reason(text: str, max_repeat_fraction: float = 0.5) -> str | None:
    """"repetition" when one line (of 4 or more) or one word 4-gram (seen 3 times or more) covers
    more than ``max_repeat_fraction`` of the text: the loop a small model falls into at greedy decoding."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if len(lines) >= 4 and Counter(lines).most_common(1)[0][1] / len(lines) > max_repeat_fraction:
        return "repetition"
    words = text.split()
    grams = [" ".join(words[i:i + 4]) for i in range(len(words) - 3)]
    if len(grams) >= 4:
        top = Counter(grams).most_common(1)[0][1]
        if top * 4 / len(words) > max_repeat_fraction and top >= 3:
            return "repetition"
    return None


def open_answer_problem(text: str, max_repeat_fraction: float = 0.5) -> str | None:
    """Why an open-ended answer says nothing (``empty``, ``punctuation``: no letter or digit at all,
    ``no_hangul``: under 30% of its letters Hangul, ``repetition``), or None for an answer worth scoring. FSKU
    answers are Korean."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    if not _WORD_CHAR.search(stripped):
        return "punctuation"
    letters = [c for c in stripped if c.isalpha()]
    if not letters or len(_HANGUL.findall(stripped)) < 0.3 * len(letters):  # mixed-script noise too
        return "no_hangul"
    return loop_reason(stripped, max_repeat_fraction) or char_loop(stripped, max_repeat_fraction)


def char_loop(text: str, max_repeat_fraction: float = 0.5) -> str | None:
    """"repetition" when runs of one repeated 1-4 character unit ("정당당당당...", "ㅁㅁㅁ...") cover
    more than ``max_repeat_fraction`` of the non-space characters: a loop inside one word, which the
    word 4-grams of ``loop_reason`` do not see. Answers only: ``pairs`` keeps a student's such answer
    as the rejected side, which is what contrastive distillation learns from."""
    dense = "".join(text.split())
    covered = sum(m.end() - m.start() for m in _CHAR_RUN.finditer(dense))
    return "repetition" if dense and covered / len(dense) > max_repeat_fraction else None


def leading_choice(text: str, n_options: int) -> int | None:
    """The option number an answer starts with ("정답: 3 ...", "3 ..."), when it is in range."""
    m = _LEADING_CHOICE.match(text)
    n = int(m.group(1) or m.group(2)) if m else 0
    return n if 1 <= n <= n_options else None


def non_answer(text: str, question: str) -> str | None:
    """Why a well-formed open-ended answer still answers nothing, or None: ``too_short``, fewer than
    ``MIN_ANSWER_HANGUL`` Hangul syllables (a heading such as "1.2 용어의 정의", a template marker
    such as "[질문]", a fragment: FSKU asks for explanations); ``source_label``, it starts with a
    retrieved passage's label (``[3] <document> · <section>``: a model copying where the context came
    from; it scores a cosine of 0.4-0.5 on topic words alone); ``echo``, at least
    ``ECHO_CONTAINMENT`` of its character bigrams come from the question (a model restating it)."""
    if len(_HANGUL.findall(text)) < MIN_ANSWER_HANGUL:
        return "too_short"
    if _SOURCE_LABEL.match(text):
        return "source_label"
    grams = _bigrams(text)
    if grams and question and len(grams & _bigrams(question)) / len(grams) >= ECHO_CONTAINMENT:
        return "echo"
    return None


def _bigrams(text: str) -> set[str]:
    dense = "".join(text.split())
    return {dense[i:i + 2] for i in range(len(dense) - 1)}


def format_problem(text: str, kind: str, n_options: int = 0, question: str | None = None) -> str | None:
    """Why a generated answer is out of the expected format, or None: a multiple-choice answer must
    name a valid option number first; an open-ended one must pass ``open_answer_problem``, and
    ``non_answer`` too when ``question`` is given."""
    if kind == "mcq":
        return None if leading_choice(text, n_options) else "no_leading_choice"
    return open_answer_problem(text) or (non_answer(text, question) if question is not None else None)


def keyword_score(pred: str, keywords: list[str]) -> float:
    """Matched keywords / keywords, as the benchmark scores it: a keyword matches when its lower-cased
    text is a substring of the lower-cased prediction, or, for a multi-word keyword, when every word
    appears. No keywords scores 1.0."""
    if not keywords:
        return 1.0
    low = pred.lower()
    hit = 0
    for k in keywords:
        k = k.strip().lower()
        words = k.split()
        if k in low or (len(words) > 1 and all(w in low for w in words)):
            hit += 1
    return hit / len(keywords)


def char_ngram_cosine(a: str, b: str, n: int = 2) -> float:
    """Cosine of character n-gram counts (whitespace removed): a model-free similarity that suits
    Korean, where word forms vary by particle."""
    def grams(s: str) -> Counter:
        s = re.sub(r"\s+", "", s)
        return Counter(s[i:i + n] for i in range(len(s) - n + 1))

    x, y = grams(a), grams(b)
    dot = sum(v * y[k] for k, v in x.items())
    norm = math.sqrt(sum(v * v for v in x.values()) * sum(v * v for v in y.values()))
    return dot / norm if norm else 0.0


def reference_score(question: Question, answer: str) -> float | None:
    """Score of an answer against the question bank's reference: MCQ 1.0 when the chosen option is
    the gold one, else 0.0; open-ended ``0.6 * similarity + 0.4 * keyword_score`` (the benchmark's
    weights, with character-bigram cosine standing in for embeddings). None without a reference."""
    if not question.answer:
        return None
    if question.is_mcq:
        return float(extract_choice(answer, len(question.options)) == int(question.answer))
    return 0.6 * char_ngram_cosine(answer, question.answer) + 0.4 * keyword_score(answer, question.keywords)


Scorer = Callable[[Question, str], "float | None"]
SCORERS: dict[str, Scorer] = {"reference": reference_score}


def get_scorer(name: str) -> Scorer:
    """A built-in scorer by name, or any ``package.module:function`` taking (Question, answer text)
    and returning a float (higher is better) or None (cannot score)."""
    if name in SCORERS:
        return SCORERS[name]
    if ":" not in name:
        raise ValueError(f"unknown scorer {name!r}: use one of {sorted(SCORERS)} or 'package.module:function'")
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"scorer {name!r} cannot be loaded: {e}") from None
    return fn
