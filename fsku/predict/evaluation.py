"""One evaluation row from a model's answers, and the report that reads every row against the
baselines. Pure functions: the ``evaluate`` stages answer, read and write around them."""

from __future__ import annotations

from fsku.metric import score_items, summarize
from fsku.predict.baselines import margins, mcq_agreement

STATS = ("backend", "backend_fallback", "latency_p50_s", "latency_p95_s", "questions_per_min", "seconds", "fallbacks",
         "collapsed", "mcq_top_answer", "mcq_top_share", "mcq_distribution", "degenerate_open", "abandoned", "breaker")
ITEM_KEYS = ("correct", "cosine", "keyword", "score", "degenerate")


def score_row(row: str, model: str, questions, records: list[dict], stats: dict, similarity) -> tuple[dict, list[dict]]:
    """(summary, prediction lines) of one model's answers: the FSKU metric, with and without the
    context fallbacks, its answer health and how each option scoring would have done."""
    items = score_items(questions, {r["id"]: r["answer"] for r in records}, similarity)
    for rec, item in zip(records, items):
        item["source"] = rec["source"]
    summary = summarize(items)
    summary.update({k: stats[k] for k in STATS}, model=model)
    summary["mcq_accuracy_by_scoring"] = accuracy_by_scoring(questions, records)
    lines = [{"row": row, "id": rec["id"], "type": rec["type"], "answer": rec["answer"],
              "confidence": rec["confidence"], "fallback": rec["fallback"], "source": rec["source"],
              **{k: item[k] for k in ITEM_KEYS if k in item},
              **({"generated": rec["generated"]} if rec.get("fallback") and "generated" in rec else {})}
             for rec, item in zip(records, items)]  # "generated": what the model said when the fallback replaced it
    return summary, lines


def accuracy_by_scoring(questions, records) -> dict:
    """MCQ accuracy each option scoring would have reached on the same passes (``choice_by``)."""
    gold = {q.id: q.answer.strip() for q in questions if q.is_mcq}
    scored = [r for r in records if r["id"] in gold and r.get("choice_by")]
    if not scored:
        return {}
    return {k: round(sum(str(r["choice_by"][k]) == gold[r["id"]] for r in scored) / len(scored), 4)
            for k in sorted(scored[0]["choice_by"])}


def with_teacher(summary: dict, lines: list[dict], teacher_lines: list[dict] | None) -> dict:
    """The row's MCQ agreement with the teacher's answers (None for the teacher, or without it)."""
    summary["teacher_agreement"] = mcq_agreement(lines, teacher_lines) if teacher_lines is not None else None
    return summary


def report(questions, baselines: dict, best: dict, gold_distribution: dict, rows: dict[str, dict],
           similarity_model: str, mcq_mode: str) -> dict:
    """metrics/eval.json: the baselines, the strictest of them, and each model row with its margin
    over that bar (model-only margins count the context fallbacks as 0)."""
    for summary in rows.values():
        summary["margin"] = margins(summary, best)
        summary["model_only"]["margin"] = margins(summary["model_only"], best)
    return {"similarity_model": similarity_model, "questions": len(questions),
            "mcq": sum(q.is_mcq for q in questions), "open": sum(not q.is_mcq for q in questions),
            "mcq_mode": mcq_mode, "gold_mcq_distribution": gold_distribution,
            "baselines": baselines, "best_baseline": best, "rows": rows}


def plot_csv(report: dict) -> str:
    """metrics/eval_scores.csv: one line per baseline, the best baselines combined, and each model.
    A baseline answers one kind of question, so the other kind's cells and its total are empty."""
    def cell(x):
        return "" if x is None else str(x)

    lines = ["row,kind,mcq_accuracy,open_score,total,total_model_only"]
    lines += [f"{name},baseline,{cell(b['mcq_accuracy'])},{cell(b['open_score'])},,"
              for name, b in report["baselines"].items()]
    best = report["best_baseline"]
    lines.append(f"best_baseline,baseline,{cell((best['mcq'] or {}).get('accuracy'))},"
                 f"{cell((best['open'] or {}).get('score'))},{cell(best['total'])},")
    lines += [f"{row},model,{cell(s['mcq_accuracy'])},{cell(s['open_score'])},{cell(s['total'])},"
              f"{cell(s['model_only']['total'])}" for row, s in report["rows"].items()]
    return "\n".join(lines) + "\n"
