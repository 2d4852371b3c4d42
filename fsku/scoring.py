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
