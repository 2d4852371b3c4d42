"""The synth stage's work, as functions of data: the teacher writes a candidate from each task's
chunk, and the gate decides. The stage (``stages/synth.py``) does the I/O around it.

``Teacher`` bundles what the teacher's calls need besides the backend: the model dir (its identity
keys the resumable generation files) and where those files go.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fsku.gen.config import GenConfig, PromptsConfig, SamplingConfig
from fsku.gen.format import format_prompt
from fsku.gen.prompts import prompt_id, user_prompt
from fsku.gen.runner import run_generation
from fsku.synth import gate
from fsku.synth.config import SynthConfig
from fsku.synth.write import assemble, judge_task, numeric_distractors, parse_qa, parse_score, pool_distractors, task

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    backend: object
    model: str
    fingerprint: str
    partial_dir: Path


def generate(teacher: Teacher, prompts: list[str], ids: list[str], cfg: SynthConfig, gen: GenConfig,
             who: str) -> list[str]:
    """The teacher's answers, through the resumable runner: a killed stage keeps its finished batches
    (the stage deletes them once its outs are written)."""
    recs = [{"prompt_id": prompt_id(p), "question_id": i, "type": "synth", "prompt": p} for p, i in zip(prompts, ids)]
    sp = SamplingConfig(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    tok = teacher.backend.tokenizer
    out, _ = run_generation(recs, teacher.backend, lambda r: format_prompt(tok, r["prompt"]), sp, gen,
                            model=teacher.model, fingerprint=teacher.fingerprint, partial_dir=teacher.partial_dir,
                            who=who)
    return [r["text"] for r in out]


def write_and_gate(tasks: list[dict], chunks: dict[str, dict], teacher: Teacher, cfg: SynthConfig, gen: GenConfig,
                   held_out: list) -> list[dict]:
    """One row per task: what the teacher wrote, the candidate read from it, its scores, and either
    ``kept`` or the first gate that ``rejected`` it."""
    log.info("synth: the teacher writes %d candidates", len(tasks))
    texts = generate(teacher, [task(t["kind"], chunks[t["chunk_id"]]) for t in tasks], [t["id"] for t in tasks],
                     cfg, gen, "synth")
    rows = {t["id"]: {**t, "teacher_text": text, "kept": False, "rejected": None} for t, text in zip(tasks, texts)}
    cands = {}
    for tid, r in rows.items():
        c, why = parse_qa(r["teacher_text"], r["kind"])
        if c:
            cands[tid] = c
        else:
            r["rejected"] = f"format:{why}"
    alive = dict(cands)
    # wrong options: the answer's number moved, else other questions' answers (this document's first)
    rng = random.Random(cfg.seed + 3)
    keys: dict[str, list[str]] = {}
    for tid, c in cands.items():
        if c.kind == "mcq":
            keys.setdefault(chunks[rows[tid]["chunk_id"]]["source"], []).append(c.answer)
    for tid, c in cands.items():
        r = rows[tid]
        if c.kind == "mcq":
            k, doc = r["n_options"] - 1, chunks[r["chunk_id"]]["source"]
            r["distractors"] = numeric_distractors(c.answer, k, rng)
            r["distractor_source"] = "numeric"
            if not r["distractors"]:
                others = [a for d, v in sorted(keys.items()) if d != doc for a in v]
                r["distractors"] = pool_distractors(c.answer, [keys[doc], others], k, rng)
                r["distractor_source"] = "pool" if r["distractors"] else None
    for tid, c in cands.items():
        r = rows[tid]
        why = assemble(c, r["distractors"], r["n_options"], r["position"]) if c.kind == "mcq" else None
        why = why or gate.format_problem(c, chunks[r["chunk_id"]]["text"])
        r["grounding"] = gate.grounding(c, chunks[r["chunk_id"]]["text"])
        if why:
            r["rejected"] = f"format:{why}"
        elif r["grounding"] < cfg.min_grounding:
            r["rejected"] = "grounding"
        if r["rejected"]:
            del alive[tid]
    log.info("synth: %d of %d pass format and grounding; round trip next", len(alive), len(tasks))
    round_trip(alive, rows, chunks, teacher, cfg, gen)
    if cfg.judge != "none":
        judge(alive, rows, chunks, teacher, cfg, gen)
    # near-duplicates: the evaluation files go first, so a question like one of theirs is a leak
    order = [t["id"] for t in tasks if t["id"] in alive]
    dropped = gate.near_duplicates(held_out, [gate.as_question(alive[i], i) for i in order], cfg.dedup)
    for tid, why in dropped.items():
        rows[tid].update(why)
        del alive[tid]
    gate.even_positions([alive[i] for i in order if i in alive], cfg.seed)
    for tid, c in cands.items():
        r = rows[tid]
        r.update(kept=tid in alive, question=c.question_text(), answer=c.answer_cell(), keywords=c.keywords,
                 key_text=c.answer if c.kind == "mcq" else None)
        if c.key:  # where the key ended up (even_positions moves the kept ones)
            r["position"] = c.key
    return list(rows.values())


def round_trip(alive: dict, rows: dict, chunks: dict, teacher: Teacher, cfg: SynthConfig, gen: GenConfig) -> None:
    """The teacher answers each multiple-choice candidate as it answers training prompts (the options
    listed, "정답: 번호" asked), with its source chunk as the context and with none; its pick is read
    from what it writes (``gate.picked``: the number, or the option's text it names). With the chunk it
    must pick the key (when ``cfg.round_trip``); without it, the share it gets right is reported.
    Read from a short answer, not from likelihoods: the digit after "정답: " also counts options
    that start with that digit ("24시간"), and an option's text is mostly scored on its first token
    (the teacher found "48시간" likelier than the chunk's "72시간")."""
    ids = [i for i, c in alive.items() if c.kind == "mcq"]
    if not ids:
        return
    pc = PromptsConfig(max_context_chars=100_000)
    asked = [user_prompt(gate.as_question(alive[i], i), [chunks[rows[i]["chunk_id"]]], pc) for i in ids]
    closed = [user_prompt(gate.as_question(alive[i], i), [], pc) for i in ids]
    texts = generate(teacher, asked + closed, ids + [f"{i}/closed" for i in ids],
                     dataclasses.replace(cfg, max_tokens=24, temperature=0.0), gen, "synth_check")
    for k, tid in enumerate(ids):
        c, r = alive[tid], rows[tid]
        r.update(round_trip=gate.picked(texts[k], c.options) == c.key, round_trip_text=texts[k],
                 round_trip_key=c.key,  # where the key stood when asked: even_positions may move it
                 closed_book=gate.picked(texts[len(ids) + k], c.options) == c.key)
        if cfg.round_trip and not r["round_trip"]:
            r["rejected"] = "round_trip"
            del alive[tid]


def judge(alive: dict, rows: dict, chunks: dict, teacher: Teacher, cfg: SynthConfig, gen: GenConfig) -> None:
    """The design's quality score: the teacher rates each candidate still in 1-10 on a written rubric
    (``fsku.synth.write.JUDGE_TASK``); under ``judge: reject`` a score below the threshold (or none
    read) rejects it, under ``measure`` it is only recorded."""
    ids = list(alive)
    texts = generate(teacher, [judge_task(alive[i], chunks[rows[i]["chunk_id"]]["text"]) for i in ids], ids,
                     dataclasses.replace(cfg, max_tokens=16, temperature=0.0), gen, "synth_judge")
    for tid, text in zip(ids, texts):
        score = parse_score(text)
        rows[tid].update(judge_score=score, judge_text=text)
        if cfg.judge == "reject" and (score is None or score < cfg.judge_threshold):
            rows[tid]["rejected"] = "judge"
            del alive[tid]


def tally(rows: list[dict], cfg: SynthConfig) -> dict:
    """Counts for metrics/synth.json: in, kept, rejected by gate and reason, keys by position."""
    reasons = Counter(r["rejected"] for r in rows if r["rejected"])
    kept = [r for r in rows if r["kept"]]
    mcq = [r for r in rows if r["kind"] == "mcq" and "round_trip" in r]
    positions = Counter(r["answer"] for r in kept if r["kind"] == "mcq")
    return {"kept": len(kept), "kept_mcq": sum(r["kind"] == "mcq" for r in kept),
            "kept_open": sum(r["kind"] == "open" for r in kept), "rejected": dict(sorted(reasons.items())),
            "round_trip_checked": len(mcq),
            "round_trip_right": sum(r["round_trip"] for r in mcq),
            "closed_book_right": sum(r["closed_book"] for r in mcq),
            "distractors": {s: sum(r.get("distractor_source") == s for r in rows) for s in ("numeric", "pool")},
            "key_positions": dict(sorted(positions.items())), **judged(rows, cfg)}


def judged(rows: list[dict], cfg: SynthConfig) -> dict:
    """How the judge scored what the gates 1-3 kept, and how many it would remove."""
    scored = [r for r in rows if "judge_score" in r]
    if not scored:
        return {}
    read = [r["judge_score"] for r in scored if r["judge_score"] is not None]
    return {"judge": {"mode": cfg.judge, "scored": len(scored), "unreadable": len(scored) - len(read),
                      "below_threshold": sum(s < cfg.judge_threshold for s in read),
                      "scores": dict(sorted(Counter(read).items()))}}
