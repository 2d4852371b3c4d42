"""Baseline rows of the ``evaluate`` stage: answers that need no model, scored with the same metric
beside every model row, so that each model figure is read against what no knowledge at all earns.

Multiple choice (``mcq_*`` rows score the MCQ questions only):

- ``mcq_constant_1``: always option 1 (what the collapsed students answered).
- ``mcq_constant_gold_mode``: always the option number most frequent among the *gold* answers of
  the evaluated set (ties to the lower number). It reads the answers, so it is an oracle: the best
  any constant guess can do on this set, an upper bound of constant guessing, not a strategy.
- ``mcq_random``: a seeded uniform draw among each question's options. ``mcq_accuracy`` is that
  draw's; ``mcq_expected_accuracy`` (the mean of ``1 / n_options``) is what uniform guessing earns
  on average, the figure to read.
- ``mcq_overlap``: the option whose character bigrams best match the retrieved context
  (``fallback.option_by_overlap``) on the same chunks the model prompts are given.

Open-ended (``open_*`` rows score the open-ended questions only):

- ``open_constant_dot``: the constant answer ".". Degenerate, so the metric scores it 0
  (``fsku.metric``): the floor that a degenerate model answer cannot rise above.
- ``open_fallback``: the top retrieved chunk's sentences closest to the question
  (``fallback.answer_from_context``), the answer the circuit breaker falls back to.

``best_baseline`` takes the strictest bar of each kind (for ``mcq_random`` the larger of its draw
and its expectation), and ``margins`` gives a model row's distance from it.
"""

from __future__ import annotations

import random
from collections import Counter

from fsku.metric import Similarity, score_items, summarize
from fsku.predict.fallback import answer_from_context, option_by_overlap
from fsku.questions import Question

BASELINES = {
    "mcq_constant_1": ("mcq", "always option 1"),
    "mcq_constant_gold_mode": ("mcq", "always the option number most frequent among the gold answers of the "
                                      "evaluated set (oracle: it reads the answers; the best constant guess)"),
    "mcq_random": ("mcq", "seeded uniform draw among each question's options; mcq_expected_accuracy = "
                          "mean of 1/n_options"),
    "mcq_overlap": ("mcq", "option with the largest character-bigram overlap with the retrieved chunks"),
    "open_constant_dot": ("open", "the constant answer '.' (degenerate: scores 0)"),
    "open_fallback": ("open", "the top retrieved chunk's sentences closest to the question (the fallback)"),
}


def retrieve(questions: list[Question], search, top_k: int) -> dict[str, list[dict]]:
    """The chunks each question's prompt is given, as ``answer.prepare`` retrieves them."""
    return {q.id: (search(q.stem, top_k) if search and top_k else []) for q in questions}


def gold_mode(questions: list[Question]) -> int | None:
    """The option number most frequent among the gold MCQ answers (ties to the lower), or None."""
    counts = Counter(int(q.answer) for q in questions if q.is_mcq and q.answer.strip().isdigit())
    return min(counts, key=lambda n: (-counts[n], n)) if counts else None


def expected_random_accuracy(questions: list[Question]) -> float | None:
    """Mean of ``1 / n_options`` over the MCQ questions: uniform guessing's expected accuracy."""
    mcq = [q for q in questions if q.is_mcq]
    return round(sum(1 / len(q.options) for q in mcq) / len(mcq), 4) if mcq else None


def baseline_answers(questions: list[Question], hits: dict[str, list[dict]],
                     seed: int = 0) -> dict[str, dict[str, str]]:
    """``{baseline name: {question id: answer}}``; each baseline answers only its own kind."""
    mcq = [q for q in questions if q.is_mcq]
    opn = [q for q in questions if not q.is_mcq]
    rng = random.Random(seed)
    mode = gold_mode(questions)
    return {
        "mcq_constant_1": {q.id: "1" for q in mcq},
        "mcq_constant_gold_mode": {q.id: str(mode) for q in mcq},
        "mcq_random": {q.id: str(rng.randint(1, len(q.options))) for q in mcq},
        "mcq_overlap": {q.id: str(option_by_overlap(q, hits.get(q.id, []))[0]) for q in mcq},
        "open_constant_dot": {q.id: "." for q in opn},
        "open_fallback": {q.id: answer_from_context(q, hits.get(q.id, [])) for q in opn},
    }


def evaluate_baselines(questions: list[Question], hits: dict[str, list[dict]], similarity: Similarity,
                       seed: int = 0) -> tuple[dict[str, dict], list[dict]]:
    """(``{name: summary}``, per-question records) for every baseline with questions of its kind.
    A summary is ``metric.summarize`` of its own kind's questions plus ``kind`` and ``doc``; its
    ``total`` is None, since a baseline row answers one half of the set only."""
    summaries, records = {}, []
    for name, answers in baseline_answers(questions, hits, seed).items():
        kind, doc = BASELINES[name]
        qs = [q for q in questions if q.is_mcq == (kind == "mcq")]
        if not qs:
            continue
        items = score_items(qs, answers, similarity)
        s = summarize(items)
        s["total"] = None
        s.pop("by_domain", None)
        s.update(kind=kind, doc=doc)
        if name == "mcq_random":
            s["mcq_expected_accuracy"] = expected_random_accuracy(qs)
            s["seed"] = seed
        if name == "mcq_constant_gold_mode":
            s["option"] = gold_mode(qs)
        summaries[name] = s
        for it in items:
            records.append({"row": name, "id": it["id"], "type": it["type"], "answer": answers[it["id"]],
                            **{k: it[k] for k in ("correct", "cosine", "keyword", "score", "degenerate") if k in it}})
    return summaries, records


def best_baseline(summaries: dict[str, dict]) -> dict:
    """The strictest bar of each kind: ``{"mcq": {"row", "accuracy"}, "open": {"row", "score"},
    "total"}``, with ``total`` the competition total of the two (the one present, if a kind is absent)."""
    mcq, opn = None, None
    for name, s in summaries.items():
        if s["kind"] == "mcq":
            acc = max(x for x in (s["mcq_accuracy"], s.get("mcq_expected_accuracy")) if x is not None)
            if mcq is None or acc > mcq["accuracy"]:
                mcq = {"row": name, "accuracy": acc}
        elif s["open_score"] is not None and (opn is None or s["open_score"] > opn["score"]):
            opn = {"row": name, "score": s["open_score"]}
    # as metric.summarize totals a model row: equal halves, or the one kind a set holds
    total = (round(0.5 * mcq["accuracy"] + 0.5 * opn["score"], 4) if mcq and opn
             else mcq["accuracy"] if mcq else opn["score"] if opn else None)
    return {"mcq": mcq, "open": opn, "total": total}


def margins(summary: dict, best: dict) -> dict:
    """A model row's figures minus the best baseline's (positive: above every baseline)."""
    def diff(a, b):
        return None if a is None or b is None else round(a - b, 4)

    return {"mcq": diff(summary.get("mcq_accuracy"), (best["mcq"] or {}).get("accuracy")),
            "open": diff(summary.get("open_score"), (best["open"] or {}).get("score")),
            "total": diff(summary.get("total"), best["total"])}


def mcq_agreement(records: list[dict], reference: list[dict]) -> float | None:
    """Share of the MCQ questions both answered where the two records name the same option."""
    ref = {r["id"]: r["answer"] for r in reference if r["type"] == "mcq"}
    both = [r for r in records if r["type"] == "mcq" and r["id"] in ref]
    return round(sum(r["answer"].strip() == ref[r["id"]].strip() for r in both) / len(both), 4) if both else None
