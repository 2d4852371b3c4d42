"""Stage `evaluate`: the FSKU metric on data/raw/questions/eval.csv for the student before
distillation, the distilled (merged) and the quantized model, and the teacher (eval.teacher), read
against baseline rows that need no model (fsku/predict/baselines.py): each model row reports its
margin over the best baseline, its MCQ agreement with the teacher and its token KL to the teacher
on the teacher's answers (fsku/predict/fidelity.py), its MCQ answer distribution,
whether it collapsed onto one option, and how many open answers it gave degenerate.

    python -m stages.evaluate [--questions mcq.csv open.csv] [--rows student quantized]
"""

import gc
import time

from fsku.config import load_section
from fsku.gen.config import GenConfig, PromptsConfig
from fsku.gen.format import example_turn
from fsku.gen.shots import render_shots, shots_for
from fsku.io import write_json, write_jsonl, write_text
from fsku.metric import Similarity, score_items, summarize
from fsku.predict.baselines import best_baseline, evaluate_baselines, margins, mcq_agreement, retrieve
from fsku.predict.config import EvalConfig
from fsku.predict.health import mcq_distribution
from fsku.predict.run import answer_with_model, load_retriever
from fsku.questions import load_questions
from fsku.retrieval.config import IndexConfig
from fsku.stage import parser, run, seed_everything

ROWS = {"student": "models/student_init", "sft": "models/student_sft", "distilled": "models/merged",
        "quantized": "models/quantized", "teacher": "models/teacher"}
BASELINE_SEED = 0  # the random MCQ baseline's draw


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--questions", nargs="+", default=None, help="FSKU-format CSV file(s) (default: eval.questions)")
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=None)
    p.add_argument("--index", default="models/index")
    p.add_argument("--shots", default="data/raw/questions/train.csv",
                   help="the teacher's worked examples come from here; '' = none")
    p.add_argument("--metrics", default="metrics/eval.json")
    p.add_argument("--plot", default="metrics/eval_scores.csv")
    p.add_argument("--out", default="data/eval/predictions.jsonl")
    args = p.parse_args()
    cfg = load_section(EvalConfig, "eval", args.params)
    gen_cfg = load_section(GenConfig, "gen", args.params)
    prompts_cfg = load_section(PromptsConfig, "prompts", args.params)
    seed_everything(0)
    questions = [q for path in (args.questions or [cfg.questions]) for q in load_questions(path)]
    if len({q.id for q in questions}) != len(questions):
        raise ValueError("question IDs repeat across the files given; they must be unique")
    questions = questions[: cfg.limit] if cfg.limit else questions
    if not all(q.answer for q in questions):
        raise ValueError(f"{', '.join(q.id for q in questions if not q.answer)[:200]}: no Answer to score against")
    rows = args.rows or ["student", "distilled", "quantized"] + (["teacher"] if cfg.teacher else [])
    search = load_retriever(args.index, load_section(IndexConfig, "index", args.params)) if args.index else None
    similarity = Similarity(cfg.similarity_model)
    hits = retrieve(questions, search, prompts_cfg.top_k)
    baselines, predictions = evaluate_baselines(questions, hits, similarity, seed=BASELINE_SEED)
    best = best_baseline(baselines)
    gold = [{"type": "mcq", "answer": q.answer, "n_options": len(q.options)} for q in questions if q.is_mcq]
    report = {"similarity_model": cfg.similarity_model, "questions": len(questions),
              "mcq": sum(q.is_mcq for q in questions), "open": sum(not q.is_mcq for q in questions),
              "mcq_mode": cfg.mcq_mode, "gold_mcq_distribution": mcq_distribution(gold),
              "baselines": baselines, "best_baseline": best, "rows": {}}
    for name, b in baselines.items():
        print(f"baseline {name}: " + (f"mcq {b['mcq_accuracy']}" if b["kind"] == "mcq" else f"open {b['open_score']}")
              + (f" (expected {b['mcq_expected_accuracy']})" if "mcq_expected_accuracy" in b else ""), flush=True)
    pool = load_questions(args.shots) if args.shots and "teacher" in rows and prompts_cfg.teacher_shots else []
    answers = {}
    for row in rows:
        t = time.perf_counter()
        # the teacher answers as it did for training: open questions with its worked examples
        shots = teacher_shots(pool, search, prompts_cfg) if row == "teacher" else None
        records, stats = answer_with_model(ROWS[row], questions, search, cfg, gen_cfg, prompts_cfg, system_for=shots)
        items = score_items(questions, {r["id"]: r["answer"] for r in records}, similarity)
        for rec, item in zip(records, items):
            item["source"] = rec["source"]
        summary = summarize(items)
        summary.update({k: stats[k] for k in ("backend", "latency_p50_s", "latency_p95_s", "questions_per_min",
                                               "fallbacks", "collapsed", "mcq_top_answer", "mcq_top_share",
                                               "mcq_distribution", "degenerate_open")}, model=ROWS[row])
        summary["mcq_accuracy_by_scoring"] = accuracy_by_scoring(questions, records)
        summary["margin"] = margins(summary, best)
        summary["model_only"]["margin"] = margins(summary["model_only"], best)  # context fallbacks as 0
        report["rows"][row] = summary
        answers[row] = records
        for rec, item in zip(records, items):
            predictions.append({"row": row, "id": rec["id"], "type": rec["type"], "answer": rec["answer"],
                                "confidence": rec["confidence"], "fallback": rec["fallback"], "source": rec["source"],
                                **{k: item[k] for k in ("correct", "cosine", "keyword", "score", "degenerate")
                                   if k in item},
                                **({"generated": rec["generated"]} if rec.get("fallback") and "generated" in rec
                                   else {})})  # what the model said when the fallback replaced it
        print(f"{row}: total {summary['total']} (mcq {summary['mcq_accuracy']}, open {summary['open_score']}; "
              f"model only {summary['model_only']['total']}; margin over the best baseline {summary['margin']}"
              f"{'; COLLAPSED' if summary['collapsed'] else ''}) in {time.perf_counter() - t:.0f} s", flush=True)
        gc.collect()
    for row, summary in report["rows"].items():  # the teacher row is last: agreement once all are in
        summary["teacher_agreement"] = (mcq_agreement(answers[row], answers["teacher"])
                                        if "teacher" in answers and row != "teacher" else None)
    if "teacher" in answers and len(answers) > 1:
        fidelity(report, answers, questions, hits, prompts_cfg, gen_cfg.max_model_len)
    write_jsonl(args.out, predictions)
    write_json(args.metrics, report)
    write_text(args.plot, plot_csv(report))


def fidelity(report: dict, answers: dict, questions, hits, prompts_cfg, max_length: int) -> None:
    """Each model row's token KL(teacher || model) on the teacher's own answers to the evaluation
    questions (what distillation optimises), the teacher reading the student's prompt as in training."""
    from fsku.predict.fidelity import kl_to_teacher, teacher_examples
    from fsku.models.load import load_for_inference

    t = time.perf_counter()
    teacher, tokenizer = load_for_inference(ROWS["teacher"])
    examples = teacher_examples(questions, answers["teacher"], hits, prompts_cfg, tokenizer)
    for row, summary in report["rows"].items():
        if row == "teacher":
            continue
        q = kl_to_teacher(ROWS[row], teacher.eval(), examples, max_length)
        summary["kl_to_teacher"] = q["kl"]
        summary["fidelity"] = {"answers": len(examples), "tokens": q["tokens"], "ppl": q["student_ppl"],
                               "teacher_ppl": q["teacher_ppl"]}
        print(f"{row}: KL to the teacher {q['kl']} on its {len(examples)} answers ({q['tokens']} tokens)", flush=True)
    print(f"fidelity in {time.perf_counter() - t:.0f} s", flush=True)


def accuracy_by_scoring(questions, records) -> dict:
    """MCQ accuracy each option scoring would have reached on the same passes (``choice_by``)."""
    gold = {q.id: q.answer.strip() for q in questions if q.is_mcq}
    scored = [r for r in records if r["id"] in gold and r.get("choice_by")]
    if not scored:
        return {}
    return {k: round(sum(str(r["choice_by"][k]) == gold[r["id"]] for r in scored) / len(scored), 4)
            for k in sorted(scored[0]["choice_by"])}


def teacher_shots(pool, search, prompts_cfg):
    """``system_for`` of the teacher row: worked examples from the training questions."""
    def system_for(tokenizer, q):
        return render_shots(shots_for(q, pool, search, prompts_cfg),
                            lambda u, a: example_turn(tokenizer, u, a)).rstrip()
    return system_for if pool else None


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


if __name__ == "__main__":
    run(main)
