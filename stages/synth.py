"""Stage `synth`: chunks -> teacher-written FSKU questions behind a quality gate.

    python -m stages.synth [--chunks FILE] [--out CSV]

Writes data/synth/questions.csv (ID, Question, Answer, Keyword: what `prompts` reads when
prompts.source is synth or both), data/synth/candidates.jsonl (every candidate: its source chunk,
the teacher, its scores and the gate's verdict) and metrics/synth.json (candidates in, kept, rejected
by reason at each gate). Generation resumes from data/gen/partial after a kill.
"""

import csv
import dataclasses
import io
import os
from pathlib import Path

import torch

from fsku.config import load_section
from fsku.gen.backends import make_backend
from fsku.gen.config import ENGINE_KEYS, GenConfig, PromptsConfig
from fsku.io import read_jsonl, write_json, write_jsonl, write_text
from fsku.models.fingerprint import model_fingerprint
from fsku.predict.config import EvalConfig
from fsku.questions import load_questions
from fsku.stage import parser, paths, run, seed_everything
from fsku.synth.config import SynthConfig
from fsku.synth.pipeline import Teacher, tally, write_and_gate
from fsku.synth.select import plan, select_chunks


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--chunks", default=P["chunks"])
    p.add_argument("--teacher", default=P["teacher"])
    p.add_argument("--out", default=P["synth_questions"])
    p.add_argument("--candidates", default=P["synth_candidates"])
    p.add_argument("--metrics", default=P["metrics"]["synth"])
    p.add_argument("--partial", default=P["gen_partial"])
    args = p.parse_args()
    cfg = load_section(SynthConfig, "synth", args.params)
    gen = load_section(GenConfig, "gen", args.params, ("backend", "batch_size", *ENGINE_KEYS))
    open_share = load_section(PromptsConfig, "prompts", args.params, ("open_share",)).open_share
    guard = [load_section(EvalConfig, "eval", args.params, ("questions",)).questions, P["test"], *cfg.leak_files]
    seed_everything(cfg.seed)
    chunks = {c["chunk_id"]: c for c in read_jsonl(args.chunks)}
    if cfg.per_document and not chunks:
        raise ValueError(f"{args.chunks}: no chunks to write questions from (did the chunk stage find any "
                         "text in its corpus folder?)")
    tasks = plan(select_chunks(list(chunks.values()), cfg.per_document, cfg.min_chunk_chars, cfg.seed),
                 open_share, cfg.five_option_share, cfg.seed)
    if cfg.per_document and not tasks:
        raise ValueError(f"{args.chunks}: no chunk has synth.min_chunk_chars ({cfg.min_chunk_chars}) characters")
    # read now, so a bad file fails before the teacher runs; named by file, as two files may share an id
    held_out = [dataclasses.replace(q, id=f"{Path(f).name}:{q.id}") for f in guard for q in load_questions(f)]
    rows, counts = [], {"candidates": len(tasks)}
    fingerprint = model_fingerprint(args.teacher)
    if tasks:
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        teacher = Teacher(make_backend(gen.backend, args.teacher, gen), args.teacher, fingerprint, Path(args.partial))
        rows = write_and_gate(tasks, chunks, teacher, cfg, gen, held_out)
    counts.update(tally(rows, cfg))
    kept = [r for r in rows if r["kept"]]
    if tasks and not kept:  # before any out is written: the previous ones stay
        raise ValueError(f"synth: the gate rejected all {len(tasks)} candidates ({counts['rejected']}); "
                         f"its answers stay in {args.partial} for a rerun to resume. Check the teacher "
                         f"({args.teacher}) or set synth.per_document: 0 to write none")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["ID", "Question", "Answer", "Keyword"])
    w.writerows([r["id"], r["question"], r["answer"], ", ".join(r["keywords"])] for r in kept)
    write_text(args.out, buf.getvalue())
    write_jsonl(args.candidates, rows)
    write_json(args.metrics, {**counts, "teacher": fingerprint})
    for done in Path(args.partial).glob("synth*.shard*.jsonl"):  # the outs are written: no resume needed
        done.unlink()
    print({k: v for k, v in counts.items() if not isinstance(v, dict)})


if __name__ == "__main__":
    run(main)
