"""The FSKU metric: multiple-choice accuracy (exact option number), open-ended
``0.6 * cosine(embed(pred), embed(answer)) + 0.4 * keyword_score``, total ``0.5 * MCQ + 0.5 * open``.

The embedding model is a parameter: the benchmark's own is ``paraphrase-multilingual-MiniLM-L12-v2``;
offline the project's encoder stands in, and ``char-bigram`` needs no model at all. The name used
is always reported next to the score, since open-ended scores from different models do not compare.

One deliberate departure from the benchmark: an open-ended prediction that says nothing
(``fsku.scoring.open_answer_problem``: empty, punctuation only, no Hangul, or a repeated n-gram loop)
scores 0, cosine and keywords both, and its item is marked ``degenerate: <reason>``. Any embedding
model gives such text some similarity to a Korean reference (the project's static encoder credits
". . . ." with 0.12-0.17; a sentence-embedding model such as the benchmark's MiniLM gives
punctuation a nonzero cosine too), so a collapsed model would otherwise gain from saying nothing.
Scored this way, a degenerate answer can never beat the constant-answer baseline ("."), which is
itself degenerate and scores 0. Well-formed answers get the benchmark's formula unchanged; the
benchmark's own scorer would give degenerate answers their small cosine, so project scores of a
model that emits them are slightly below what the benchmark would report, on purpose.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from fsku.questions import Question
from fsku.scoring import char_ngram_cosine, keyword_score, open_answer_problem

CHAR_BIGRAM = "char-bigram"


class Similarity:
    """Cosine similarity of two texts under a sentence-transformers model, or of character bigrams."""

    def __init__(self, model: str):
        self.name = model
        self.encoder = None
        if model != CHAR_BIGRAM:
            from fsku.retrieval.dense import load_encoder

            self.encoder = load_encoder(model)

    def __call__(self, preds: list[str], golds: list[str]) -> list[float]:
        if self.encoder is None:
            return [char_ngram_cosine(p, g) for p, g in zip(preds, golds)]
        from fsku.retrieval.dense import encode

        if not preds:
            return []
        a, b = encode(self.encoder, list(preds)), encode(self.encoder, list(golds))
        return [float(x) for x in np.clip((a * b).sum(1), -1.0, 1.0)]


def default_similarity() -> str:
    """The project's encoder when it is built, else the model-free bigram cosine."""
    return "models/encoder" if Path("models/encoder").is_dir() else CHAR_BIGRAM


def score_items(golds: list[Question], preds: dict[str, str], similarity: Similarity) -> list[dict]:
    """Per-question scores: MCQ ``correct``; open-ended ``cosine``, ``keyword`` and ``score``. An ID
    with no prediction scores 0 and is marked ``missing``; an open-ended prediction that says nothing
    (``open_answer_problem``) scores 0 and is marked ``degenerate`` with the reason (module docstring)."""
    open_q = [q for q in golds if not q.is_mcq]
    problem = {q.id: open_answer_problem(preds[q.id]) for q in open_q if q.id in preds}
    scored = [q for q in open_q if q.id in preds and problem[q.id] is None]
    cos = dict(zip([q.id for q in scored], similarity([preds[q.id] for q in scored], [q.answer for q in scored])))
    out = []
    for q in golds:
        pred = preds.get(q.id)
        rec = {"id": q.id, "type": "mcq" if q.is_mcq else "open", "domain": q.domain, "missing": pred is None}
        pred = pred or ""
        if q.is_mcq:
            rec["correct"] = float(pred.strip() == q.answer.strip())
            rec["score"] = rec["correct"]
        elif q.id not in cos:  # missing or degenerate
            if not rec["missing"]:
                rec["degenerate"] = problem[q.id]
            rec.update(cosine=0.0, keyword=0.0, score=0.0)
        else:
            c, k = cos[q.id], keyword_score(pred, q.keywords)
            rec.update(cosine=round(c, 6), keyword=round(k, 6), score=round(0.6 * c + 0.4 * k, 6))
        out.append(rec)
    return out


def _total(mcq: float | None, open_: float | None) -> float | None:
    """The competition weights both halves equally; a set with one kind only scores that kind."""
    if mcq is not None and open_ is not None:
        return round(0.5 * mcq + 0.5 * open_, 4)
    return mcq if mcq is not None else open_


def summarize(items: list[dict]) -> dict:
    """Totals of ``score_items`` output: the competition total and its parts, by domain too. Items
    carrying the answer's ``source`` (``model`` or ``context``) also get model-only figures."""
    def part(rows: list[dict]) -> dict:
        mcq = [r for r in rows if r["type"] == "mcq"]
        opn = [r for r in rows if r["type"] == "open"]
        res = {"mcq": len(mcq), "open": len(opn)}
        res["mcq_accuracy"] = round(float(np.mean([r["correct"] for r in mcq])), 4) if mcq else None
        res["open_score"] = round(float(np.mean([r["score"] for r in opn])), 4) if opn else None
        if opn:
            res["open_cosine"] = round(float(np.mean([r["cosine"] for r in opn])), 4)
            res["open_keyword"] = round(float(np.mean([r["keyword"] for r in opn])), 4)
            res["open_degenerate"] = sum(bool(r.get("degenerate")) for r in opn)
        res["total"] = _total(res["mcq_accuracy"], res["open_score"])
        if any("source" in r for r in rows):
            # the same with every answer the model did not give (a context fallback) scored 0:
            # retrieved text alone can score well on open-ended questions drawn from the corpus
            def own(r):
                return 0.0 if r.get("source") == "context" else r["score"]

            res["from_context"] = sum(r.get("source") == "context" for r in rows)
            res["model_only"] = {
                "mcq_accuracy": round(float(np.mean([own(r) for r in mcq])), 4) if mcq else None,
                "open_score": round(float(np.mean([own(r) for r in opn])), 4) if opn else None}
            res["model_only"]["total"] = _total(res["model_only"]["mcq_accuracy"], res["model_only"]["open_score"])
        return res

    summary = part(items)
    summary["missing"] = sum(r["missing"] for r in items)
    domains = defaultdict(list)
    for r in items:
        if r["domain"]:
            domains[r["domain"]].append(r)
    if domains:
        summary["by_domain"] = {d: part(rows) for d, rows in sorted(domains.items())}
    return summary
