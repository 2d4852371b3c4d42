"""Resumable, shardable generation over the prompt pool.

Batches are fixed over the global prompt order (batch b = prompts[b*B:(b+1)*B]) and shard i takes
the batches with b % shards == i, so a batch's content, and with it its seed and its outputs, does
not depend on how the work is split or interrupted. Records are appended to a partial file a batch
at a time (flushed and fsynced); a restarted run keeps the complete batches whose fingerprint
(model, sampling, formatted prompt) still matches and generates the rest. The final out is written
atomically in prompt order once every batch is present.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from fsku.gen.config import GenConfig, SamplingConfig
from fsku.io import write_jsonl

log = logging.getLogger(__name__)


def batches(prompts: list[dict], size: int) -> list[list[dict]]:
    return [prompts[i:i + size] for i in range(0, len(prompts), size)]


def _load_partial(files: list[Path], fingerprint: str) -> dict[int, list[dict]]:
    done: dict[int, dict[str, dict]] = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if rec.get("fingerprint") == fingerprint:
                    done.setdefault(rec["batch"], {})[rec["prompt_id"]] = rec
    return {b: list(recs.values()) for b, recs in done.items()}


def run_generation(prompts: list[dict], backend, fmt: Callable[[dict], str], sp: SamplingConfig,
                   cfg: GenConfig, model: str, fingerprint: str, partial_dir: Path, who: str,
                   merge_only: bool = False,
                   choose: Callable[[list[dict]], list[dict | None]] | None = None) -> tuple[list[dict] | None, dict]:
    """Generate this shard's batches into ``partial_dir``; returns (all records in prompt order, or
    None while other shards' batches are missing, stats). Shards on other machines write their own
    ``{who}.shard*.jsonl``; copied into ``partial_dir``, they are picked up here. ``fmt`` turns a
    prompt record into the model's input. ``choose``, given a batch's prompt records, returns for each
    either a finished answer (multiple choice constrained to the options) or None (generate it)."""
    all_batches = batches(prompts, cfg.batch_size)
    fp = hashlib.sha256(json.dumps([fingerprint, model, asdict(sp), cfg.max_model_len, cfg.batch_size,
                                    [fmt(p) for p in prompts]]).encode()).hexdigest()[:16]
    partial_dir.mkdir(parents=True, exist_ok=True)
    loaded = _load_partial(sorted(partial_dir.glob(f"{who}.shard*.jsonl")), fp)
    done = {b: r for b, r in loaded.items() if b < len(all_batches) and len(r) == len(all_batches[b])}
    partial = partial_dir / f"{who}.shard{cfg.shard_index}of{cfg.shards}.jsonl"
    gen_tokens, gen_seconds, resumed = 0, 0.0, sum(len(r) for r in done.values())
    with open(partial, "a", encoding="utf-8") as f:
        for b, batch in enumerate(all_batches):
            if merge_only or b % cfg.shards != cfg.shard_index or b in done:
                continue
            formatted = [fmt(p) for p in batch]
            seed = sp.seed * 1_000_003 + int(batch[0]["prompt_id"], 16) % 1_000_003
            t = time.perf_counter()
            outs = choose(batch) if choose else [None] * len(batch)
            todo = [i for i, o in enumerate(outs) if o is None]
            if todo:
                for i, o in zip(todo, backend.generate([formatted[i] for i in todo], sp, seed)):
                    outs[i] = o
            gen_seconds += time.perf_counter() - t
            recs = []
            for p, text_in, out in zip(batch, formatted, outs):
                gen_tokens += out["n_tokens"]
                recs.append({"prompt_id": p["prompt_id"], "question_id": p["question_id"], "type": p["type"],
                             "prompt": p["prompt"], "formatted_prompt": text_in, **out, "model": model,
                             "backend": backend.name, "sampling": asdict(sp), "batch": b, "fingerprint": fp})
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
            f.flush()
            os.fsync(f.fileno())
            done[b] = recs
            log.info("batch %d/%d done", b + 1, len(all_batches))
    stats = {"backend": backend.name if backend is not None else "merge-only",
             "backend_fallback": getattr(backend, "fallback", None), "generated_tokens": gen_tokens,
             "seconds": round(gen_seconds, 2),
             "tokens_per_s": round(gen_tokens / gen_seconds, 2) if gen_seconds else None,
             "resumed_records": resumed}
    if len(done) < len(all_batches):
        return None, stats
    by_id = {r["prompt_id"]: r for b in sorted(done) for r in done[b]}
    final = []
    for p in prompts:
        r = dict(by_id[p["prompt_id"]])
        r.pop("batch"), r.pop("fingerprint")
        final.append(r)
    return final, stats


def write_final(path: Path, records: list[dict]) -> None:
    write_jsonl(path, records)
