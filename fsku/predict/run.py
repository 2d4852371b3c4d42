"""A whole prediction or evaluation run over one model: load, answer, summarise timings.

Shared by the ``predict`` and ``evaluate`` stages and the ``python -m fsku predict`` command.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from fsku.gen.backends import make_backend
from fsku.gen.config import GenConfig
from fsku.io import atomic_path, write_jsonl
from fsku.models.fingerprint import model_fingerprint
from fsku.predict.answer import AnswerCache, Answerer, Budget, prepare, settings_salt
from fsku.predict.config import AnswerConfig, PredictConfig
from fsku.predict.health import ABANDONED, abandoned_problem, answer_health
from fsku.questions import Question

log = logging.getLogger(__name__)


def load_retriever(index_dir: str | Path | None, index_cfg):
    """``search(query, k) -> [chunk]`` over a built index, or None when there is none."""
    if not index_dir:
        return None
    if not (Path(index_dir) / "meta.json").is_file():
        raise FileNotFoundError(f"{index_dir}: no index there (run `dvc repro index`, or pass --index '')")
    from fsku.retrieval.hybrid import Retriever

    return Retriever.load(index_dir, index_cfg).top_chunks


def timing(records: list[dict], wall_s: float) -> dict:
    secs = [r["seconds"] for r in records]
    return {"latency_p50_s": round(float(np.percentile(secs, 50)), 4) if secs else None,
            "latency_p95_s": round(float(np.percentile(secs, 95)), 4) if secs else None,
            "questions_per_min": round(60 * len(records) / wall_s, 2) if wall_s else None}


def answer_with_model(model_dir: str | Path, questions: list[Question], search, cfg: AnswerConfig,
                      gen_cfg: GenConfig, prompts_cfg, budget: Budget | None = None,
                      cache_path: str | Path | None = None, system_for=None) -> tuple[list[dict], dict]:
    """(records in question order, run stats) for one model. ``system_for``: see ``prepare``."""
    t0 = time.perf_counter()
    engine = GenConfig(**{**gen_cfg.__dict__, "backend": cfg.backend, "batch_size": cfg.batch_size})
    backend = make_backend(cfg.backend, model_dir, engine)
    load_s = time.perf_counter() - t0
    items = prepare(questions, search, prompts_cfg, backend.tokenizer,
                    salt=settings_salt(model_fingerprint(model_dir), cfg), system_for=system_for)
    answerer = Answerer(backend, cfg, budget=budget, cache=AnswerCache(cache_path) if cache_path else None,
                        fast_max_tokens=getattr(cfg, "fast_max_tokens", 0))
    t1 = time.perf_counter()
    records = answerer.run(items)
    wall = time.perf_counter() - t1
    fresh = [r for r in records if r["key"] not in answerer.cached_keys]
    stats = {"model": str(model_dir), "backend": backend.name, "backend_fallback": getattr(backend, "fallback", None),
             "load_s": round(load_s, 2),
             "answer_s": round(wall, 2), **timing(fresh, wall), "cached": answerer.stats["cached"],
             "seconds": {"load": round(load_s, 1), "answer": round(wall, 1),  # where a row's time goes
                         **{k: round(sum(r["seconds"] for r in fresh if r["type"] == k), 1) for k in ("mcq", "open")}},
             "fallbacks": _count(r["fallback"] for r in records if r["fallback"]),
             "modes": _count(r["mode"] for r in records),
             **answer_health(records, str(model_dir))}  # collapsed, mcq_distribution, degenerate_open
    stats["breaker"] = answerer.breaker.summary()
    own = [r for r in fresh if r["fallback"] not in ABANDONED]
    stats["abandoned_problem"] = abandoned_problem(
        records, str(model_dir), sum(r["seconds"] for r in own) / len(own) if own else None, cfg)
    if stats["abandoned_problem"]:  # said again where the stage's log ends (fsku.stage.run)
        logging.getLogger("fsku.fallback").warning(stats["abandoned_problem"])
    if budget is not None:
        stats["mode_switches"] = budget.switches
    del backend
    return records, stats


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def write_submission(path: str | Path, questions: list[Question], records: list[dict]) -> None:
    """``ID,Answer``, one row per question in input order (checked), written atomically."""
    by_id = {r["id"]: r["answer"] for r in records}
    if len(by_id) != len(questions) or any(q.id not in by_id for q in questions):
        raise RuntimeError("internal error: answers do not cover the questions one to one")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["ID", "Answer"])
    for q in questions:
        w.writerow([q.id, by_id[q.id]])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def predict_file(model_dir: str | Path, test_csv: str | Path, out_csv: str | Path, cfg: PredictConfig,
                 gen_cfg: GenConfig, prompts_cfg, search, sidecar: str | Path | None = None,
                 cache_dir: str | Path | None = None, max_chars: int = 20_000) -> dict:
    """Answer every question of a competition-format file; write the submission and the sidecar."""
    from fsku.questions import load_questions

    start = time.perf_counter()
    questions = load_questions(test_csv, max_chars=max_chars)
    budget = Budget(cfg.time_budget_s, len(questions), start=start)
    cache = Path(cache_dir) / "answers.jsonl" if cfg.cache and cache_dir else None
    records, stats = answer_with_model(model_dir, questions, search, cfg, gen_cfg, prompts_cfg, budget, cache)
    write_submission(out_csv, questions, records)
    if sidecar:
        write_jsonl(sidecar, [{k: v for k, v in r.items() if k != "key"} for r in records])
    if cache is not None and cache.exists():  # complete: nothing left to resume
        cache.unlink()
    total = time.perf_counter() - start
    stats.update(questions=len(questions), mcq=sum(q.is_mcq for q in questions),
                 open=sum(not q.is_mcq for q in questions), total_s=round(total, 2),
                 time_budget_s=cfg.time_budget_s)
    per_q = stats["answer_s"] / max(1, len(questions) - stats["cached"])
    stats["projected_515_min"] = round((stats["load_s"] + 515 * per_q) / 60, 2)
    return stats
