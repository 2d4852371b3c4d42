"""Checks that a model's answers say something: the multiple-choice answer distribution and its
collapse onto one option, and the open-ended answers the model gave that were degenerate.

A row is ``collapsed`` when its most frequent MCQ answer covers more than ``COLLAPSE_SHARE`` (60%)
of its MCQ questions: the distilled students that answered "1" to all 96 eval questions scored
about chance and looked valid. Gold answers of the eval set are spread over the options (the most
frequent one, 22 of 96, is 23% of them), so a working model stays well below the bar.

Degenerate open answers are those ``Answerer`` caught (``fallback: degenerate:<reason>``, see
``fsku.predict.answer``) and answered from the retrieved context instead.

``abandoned`` counts the answers the model was never allowed to give: its call timed out, failed, or
the open breaker refused it, and the retrieved context answered. A 1.5B model in bfloat16 under
kernels pinned to AVX2 took over 90 s a question, so with a 60 s limit every answer of a run came
from the context while the run looked complete. Past ``ABANDONED_SHARE`` of the questions, a run
says so loudly (``abandoned_problem``): the eval rows stop, predict warns where its log ends.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)

COLLAPSE_SHARE = 0.6
DEGENERATE = "degenerate:"
ABANDONED = ("timeout", "error", "breaker_open")
ABANDONED_SHARE = 0.25


def mcq_distribution(records: list[dict]) -> dict[str, int]:
    """MCQ answers counted by option, every option from 1 to the largest option count present."""
    mcq = [r for r in records if r["type"] == "mcq"]
    counts = Counter(r["answer"].strip() for r in mcq)
    top = max([r.get("n_options") or 0 for r in mcq] + [int(a) for a in counts if a.isdigit()] + [0])
    out = {str(i): counts.pop(str(i), 0) for i in range(1, top + 1)}
    out.update(sorted(counts.items()))  # anything that is not an option number (should not happen)
    return out


def collapse(records: list[dict], share: float = COLLAPSE_SHARE) -> dict:
    """``{"mcq_top_answer", "mcq_top_share", "collapsed"}``: the most frequent MCQ answer, its share of
    the MCQ questions, and whether that share exceeds ``share``."""
    answers = [r["answer"].strip() for r in records if r["type"] == "mcq"]
    if not answers:
        return {"mcq_top_answer": None, "mcq_top_share": None, "collapsed": False}
    top, n = min(Counter(answers).items(), key=lambda kv: (-kv[1], kv[0]))
    frac = n / len(answers)
    return {"mcq_top_answer": top, "mcq_top_share": round(frac, 4), "collapsed": frac > share}


def degenerate_open(records: list[dict]) -> dict:
    """Open-ended answers the model gave degenerate (each answered by the fallback instead):
    ``{"count", "share"`` of the open questions ``, "reasons": {reason: count}}``."""
    opn = [r for r in records if r["type"] == "open"]
    reasons = Counter(r["fallback"][len(DEGENERATE):] for r in opn
                      if (r.get("fallback") or "").startswith(DEGENERATE))
    n = sum(reasons.values())
    return {"count": n, "share": round(n / len(opn), 4) if opn else None, "reasons": dict(sorted(reasons.items()))}


def abandoned(records: list[dict]) -> dict:
    """Answers the context gave because the model's call timed out, failed or was refused:
    ``{"count", "share"}`` of all questions."""
    n = sum(r.get("fallback") in ABANDONED for r in records)
    return {"count": n, "share": round(n / len(records), 4) if records else None}


def abandoned_problem(records: list[dict], name: str, seconds_per_question: float | None, cfg) -> str | None:
    """Why a run's answers are not the model's, when more than ``ABANDONED_SHARE`` were abandoned
    (None otherwise): what happened, what the model took, and the settings that decide it."""
    a = abandoned(records)
    if not records or a["share"] <= ABANDONED_SHARE:
        return None
    from fsku.kernels import kernel_choice

    took = f"; the model's answered calls took {seconds_per_question:.1f} s a question" if seconds_per_question else ""
    return (f"{name}: {a['count']} of {len(records)} answers came from the retrieved context, not the model: its "
            f"calls timed out, failed or met the open breaker (question_timeout_s {cfg.question_timeout_s}, "
            f"call_grace_s {cfg.call_grace_s}{took}; CPU kernels {kernel_choice()}). Raise question_timeout_s, "
            "or let dtype and kernels agree (dtype auto, FSKU_CPU_KERNELS auto: bfloat16 only where the CPU "
            "does it in hardware)")


def answer_health(records: list[dict], name: str = "") -> dict:
    """The figures above for one model's records; logs a warning when the row collapsed."""
    out = {**collapse(records), "mcq_distribution": mcq_distribution(records),
           "degenerate_open": degenerate_open(records), "abandoned": abandoned(records)}
    if out["collapsed"]:
        log.warning("%s: collapsed: answer %s to %.0f%% of the multiple-choice questions (more than %.0f%%)",
                    name or "model", out["mcq_top_answer"], 100 * out["mcq_top_share"], 100 * COLLAPSE_SHARE)
    return out
