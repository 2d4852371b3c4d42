"""Stage `evaluate`: the FSKU metric on data/raw/questions/eval.csv for the student before
distillation, the distilled (merged) and the quantized model, and the teacher, read against
baseline rows that need no model (fsku/predict/baselines.py): each model row reports its margin over
the best baseline, its MCQ agreement with the teacher and its token KL to the teacher on the
teacher's answers (fsku/predict/fidelity.py), its MCQ answer distribution, whether it collapsed onto
one option, and how many open answers it gave degenerate.

Each row is a stage of its own under DVC (`eval_teacher`, `eval_row@<row>`: `--row`), so a change
to the distilled model reanswers its rows only; `evaluate` then reads them back (`--rows-dir`) and
writes the report. Without `--rows-dir` every row is answered here, one child process per row (a
row's models and engine leave with its process):

    python -m stages.evaluate --row distilled --rows-dir data/eval/rows --teacher-answers data/eval/rows/teacher.jsonl
    python -m stages.evaluate --rows-dir data/eval/rows
    python -m stages.evaluate --questions mcq.csv open.csv [--rows student teacher] --metrics /tmp/m.json ...
"""

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fsku.config import load_section
from fsku.gen.config import CONTEXT_KEYS, ENGINE_KEYS, SHOT_KEYS, GenConfig, PromptsConfig
from fsku.gen.format import example_turn
from fsku.gen.shots import render_shots, shots_for
from fsku.io import read_jsonl, write_json, write_jsonl, write_text
from fsku.metric import Similarity
from fsku.predict.baselines import best_baseline, evaluate_baselines, retrieve
from fsku.predict.config import EvalConfig
from fsku.predict.evaluation import plot_csv, report, score_row, with_teacher
from fsku.predict.health import mcq_distribution
from fsku.predict.run import answer_with_model, load_retriever
from fsku.questions import load_answered, load_questions
from fsku.retrieval.config import SEARCH_KEYS, IndexConfig
from fsku.stage import parser, paths, run, seed_everything

ROWS = {"student": "student_init", "sft": "student_sft", "distilled": "merged", "quantized": "quantized",
        "teacher": "teacher"}  # row: the model it answers with (a name in paths.yaml)
DEFAULT_ROWS = ["student", "distilled", "quantized", "teacher"]
MODELS: dict[str, str] = {}  # --model: a row answered with another model dir


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--questions", nargs="+", default=None, help="FSKU-format CSV file(s) (default: eval.questions)")
    p.add_argument("--row", choices=sorted(ROWS), default=None,
                   help="answer this row only and write <rows-dir>/<row>.jsonl and <row-metrics>/<row>.json")
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=None,
                   help=f"the report's rows, in order (default: {' '.join(DEFAULT_ROWS)})")
    p.add_argument("--rows-dir", default=None, help="where --row writes a row's answers and the report reads them")
    p.add_argument("--row-metrics", default=P["eval_row_metrics"], help="folder of each row's summary (--row)")
    p.add_argument("--teacher-answers", default=None,
                   help="--row: the teacher row's answers, for MCQ agreement and the KL to the teacher")
    p.add_argument("--index", default=P["index"])
    p.add_argument("--shots", default=P["train_questions"],
                   help="the teacher's worked examples come from here; '' = none")
    p.add_argument("--metrics", default=P["metrics"]["eval"])
    p.add_argument("--plot", default=P["metrics"]["eval_scores"])
    p.add_argument("--out", default=P["eval_predictions"])
    p.add_argument("--model", nargs="+", default=[], metavar="ROW=DIR",
                   help="answer a row with another model dir than its paths.yaml one")
    args = p.parse_args()
    for spec in args.model:
        row, _, path = spec.partition("=")
        if row not in ROWS or not path:
            raise ValueError(f"--model {spec}: expected ROW=DIR with ROW one of {', '.join(sorted(ROWS))}")
        MODELS[row] = path
    cfg = load_section(EvalConfig, "eval", args.params)
    gen_cfg = load_section(GenConfig, "gen", args.params, ENGINE_KEYS)
    prompts_cfg = load_section(PromptsConfig, "prompts", args.params, CONTEXT_KEYS + SHOT_KEYS)
    seed_everything(cfg.seed)
    questions = load_answered(args.questions or [cfg.questions])
    questions = questions[: cfg.limit] if cfg.limit else questions
    index_cfg = load_section(IndexConfig, "index", args.params, SEARCH_KEYS) if args.index else None
    search = load_retriever(args.index, index_cfg)
    similarity = Similarity(cfg.similarity_model)
    hits = retrieve(questions, search, prompts_cfg.top_k)
    ctx = dict(questions=questions, search=search, hits=hits, similarity=similarity, cfg=cfg, gen_cfg=gen_cfg,
               prompts_cfg=prompts_cfg, shots=args.shots)

    if args.row:  # one row's stage
        if not args.rows_dir:
            raise ValueError("--row needs --rows-dir (where its answers go)")
        teacher = None
        if args.row != "teacher":
            if args.teacher_answers is None:
                raise ValueError(f"--row {args.row} needs --teacher-answers "
                                 f"(the teacher row's {args.rows_dir}/teacher.jsonl; "
                                 "'' = a report without the teacher)")
            teacher = read_rows(args.teacher_answers, questions) if args.teacher_answers else None
        states = states_file(args.teacher_answers) if args.teacher_answers else None
        summary, lines = answer_row(args.row, teacher, **ctx, states=states)
        if args.row == "teacher":  # what every other row's KL needs of the teacher, computed once
            summary["seconds"]["states"] = write_teacher_states(lines, questions, hits, prompts_cfg,
                                                                gen_cfg.max_model_len,
                                                                states_file(Path(args.rows_dir) / "teacher.jsonl"))
        write_jsonl(Path(args.rows_dir) / f"{args.row}.jsonl", lines)
        write_json(Path(args.row_metrics) / f"{args.row}.json", summary)
        return

    rows = args.rows or DEFAULT_ROWS
    baselines, predictions = evaluate_baselines(questions, hits, similarity, seed=cfg.seed)
    best = best_baseline(baselines)
    for name, b in baselines.items():
        print(f"baseline {name}: " + (f"mcq {b['mcq_accuracy']}" if b["kind"] == "mcq" else f"open {b['open_score']}")
              + (f" (expected {b['mcq_expected_accuracy']})" if "mcq_expected_accuracy" in b else ""), flush=True)
    summaries, lines = {}, {}
    if args.rows_dir:  # each row answered by its own stage
        for row in rows:
            lines[row] = read_rows(Path(args.rows_dir) / f"{row}.jsonl", questions)
            summaries[row] = json.loads((Path(args.row_metrics) / f"{row}.json").read_text(encoding="utf-8"))
    else:  # each row in a child process of its own, the teacher first: the others read its answers
        with tempfile.TemporaryDirectory(prefix="fsku-eval-rows-") as tmp:
            for row in sorted(rows, key=lambda r: r != "teacher"):
                answer_row_in_child(row, args, Path(tmp), teacher="teacher" in lines)
                lines[row] = read_rows(Path(tmp) / f"{row}.jsonl", questions)
                summaries[row] = json.loads((Path(tmp) / f"{row}.json").read_text(encoding="utf-8"))
    gold = [{"type": "mcq", "answer": q.answer, "n_options": len(q.options)} for q in questions if q.is_mcq]
    out = report(questions, baselines, best, mcq_distribution(gold), {row: summaries[row] for row in rows},
                 cfg.similarity_model, cfg.mcq_mode)
    for row, s in out["rows"].items():
        print(f"{row}: total {s['total']} (mcq {s['mcq_accuracy']}, open {s['open_score']}; "
              f"model only {s['model_only']['total']}; margin over the best baseline {s['margin']}"
              f"{'; COLLAPSED' if s['collapsed'] else ''})", flush=True)
    write_jsonl(args.out, predictions + [line for row in rows for line in lines[row]])
    write_json(args.metrics, out)
    write_text(args.plot, plot_csv(out))


def answer_row_in_child(row: str, args, tmp: Path, teacher: bool) -> None:
    """Answer one row as ``--row`` does, in a child process: its models (and a vLLM engine, which
    does not reliably hand GPU memory back inside one process) go with it, so rows run one at a
    time and each starts with the memory the last one held returned."""
    cmd = [sys.executable, "-m", "stages.evaluate", "--row", row, "--rows-dir", str(tmp), "--row-metrics", str(tmp),
           "--params", args.params, "--index", args.index, "--shots", args.shots,
           *(["--questions", *args.questions] if args.questions else []),
           *(["--model", *args.model] if args.model else []),
           "--teacher-answers", str(tmp / "teacher.jsonl") if teacher else ""]
    print(f"row {row}: starting its process", flush=True)
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise ValueError(f"row {row}: its process failed (exit {code}; its log is above)")
    print(f"row {row}: process {child.pid} done, peak memory {usage.ru_maxrss / 1024:.0f} MB, returned", flush=True)


def answer_row(row: str, teacher: list[dict] | None, questions, search, hits, similarity, cfg, gen_cfg,
               prompts_cfg, shots: str, states: Path | None = None) -> tuple[dict, list[dict]]:
    """One model's summary and prediction lines; with the teacher's lines, its agreement with them
    and its KL to the teacher on the teacher's answers (from the teacher's stored ``states`` where
    that file exists)."""
    t = time.perf_counter()
    # the teacher answers as it did for training: open questions with its worked examples
    pool = load_questions(shots) if row == "teacher" and shots and prompts_cfg.teacher_shots else []
    records, stats = answer_with_model(model_dir(row), questions, search, cfg, gen_cfg, prompts_cfg,
                                       system_for=teacher_shots(pool, search, prompts_cfg))
    if stats["abandoned_problem"]:  # a row of the context's answers would be read as the model's
        raise ValueError(f"row {row}: {stats['abandoned_problem']}")
    summary, lines = score_row(row, model_dir(row), questions, records, stats, similarity)
    print(f"{row}: total {summary['total']} (mcq {summary['mcq_accuracy']}, open {summary['open_score']}) "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    gc.collect()
    with_teacher(summary, lines, teacher)
    if teacher is not None:
        fidelity(summary, row, teacher, questions, hits, prompts_cfg, gen_cfg.max_model_len, states)
    return summary, lines


def model_dir(row: str) -> str:
    return MODELS.get(row) or paths()[ROWS[row]]


def read_rows(path, questions) -> list[dict]:
    """A row's prediction lines, checked against the questions evaluated now."""
    lines = read_jsonl(path)
    if [x["id"] for x in lines] != [q.id for q in questions]:
        raise ValueError(f"{path}: answers other questions than {len(questions)} evaluated now; rerun its row")
    return lines


def fidelity(summary: dict, row: str, teacher: list[dict], questions, hits, prompts_cfg, max_length: int,
             states: Path | None = None) -> None:
    """The row's token KL(teacher || model) on the teacher's own answers to the evaluation questions
    (what distillation optimises), the teacher reading the student's prompt as in training. Where
    the teacher's row stored its side (``states``), only its LM head is used here."""
    from fsku.distill.quality import load_teacher_states
    from fsku.models.load import load_for_inference
    from fsku.predict.fidelity import kl_to_teacher, teacher_examples

    t = time.perf_counter()
    model, tokenizer = load_for_inference(model_dir("teacher"))
    examples = teacher_examples(questions, teacher, hits, prompts_cfg, tokenizer)
    stored = load_teacher_states(states, model) if states is not None and states.exists() else None
    q = kl_to_teacher(model_dir(row), model.eval(), examples, max_length, tokenizer, states=stored)
    summary["kl_to_teacher"] = q["kl"]
    summary["fidelity"] = {"answers": len(examples), "tokens": q["tokens"], "ppl": q["student_ppl"],
                           "teacher_ppl": q["teacher_ppl"], "teacher_side": q["teacher_side"]}
    summary["seconds"]["kl"] = round(time.perf_counter() - t, 1)
    print(f"{row}: KL to the teacher {q['kl']} on its {len(examples)} answers ({q['tokens']} tokens; the "
          f"teacher's side from its {q['teacher_side']}) in {summary['seconds']['kl']:.0f} s", flush=True)


def states_file(teacher_answers: str | Path) -> Path:
    """Where the teacher's row keeps its side of the KL: beside its answers."""
    return Path(teacher_answers).with_name("teacher_states.safetensors")


def write_teacher_states(lines: list[dict], questions, hits, prompts_cfg, max_length: int, path: Path) -> float:
    """The teacher's last hidden states on its own answers as the other rows' KL reads them
    (``fsku.distill.quality.teacher_states``); returns the seconds it took."""
    from fsku.distill.quality import save_teacher_states, teacher_states
    from fsku.models.load import load_for_inference
    from fsku.predict.fidelity import teacher_examples

    t = time.perf_counter()
    model, tokenizer = load_for_inference(model_dir("teacher"))
    states = teacher_states(model, teacher_examples(questions, lines, hits, prompts_cfg, tokenizer), tokenizer,
                            max_length)
    save_teacher_states(states, path)
    seconds = round(time.perf_counter() - t, 1)
    print(f"teacher: its states on {len(states.ids)} answers ({sum(len(h) for h in states.hidden)} tokens) "
          f"in {seconds:.0f} s", flush=True)
    return seconds


def teacher_shots(pool, search, prompts_cfg):
    """``system_for`` of the teacher row: worked examples from the training questions."""
    def system_for(tokenizer, q):
        return render_shots(shots_for(q, pool, search, prompts_cfg),
                            lambda u, a: example_turn(tokenizer, u, a)).rstrip()
    return system_for if pool else None


if __name__ == "__main__":
    run(main)
