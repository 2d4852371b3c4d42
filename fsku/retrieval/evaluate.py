"""Retrieval quality on labelled queries: recall@k and MRR for BM25, dense and hybrid.

A query is labelled with its source document and the exact passage that answers it. A retrieved
chunk is relevant when it comes from that document and contains at least ``min_overlap`` of the
passage (longest common run of characters, whitespace ignored), so a passage that a chunk
boundary cuts still counts where most of it is present.
"""

from __future__ import annotations

import csv
import re
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np

from fsku.chunking.clean import clean_text

QUERY_COLUMNS = ("query_id", "query", "source", "passage")
MODES = ("bm25", "dense", "hybrid")


def load_queries(path: str | Path) -> list[dict]:
    """Read and check the labelled query CSV; errors name the file and row."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in QUERY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(QUERY_COLUMNS)})")
        rows, seen = [], set()
        for lineno, row in enumerate(reader, 2):
            for col in QUERY_COLUMNS:
                if not (row.get(col) or "").strip():
                    raise ValueError(f"{path}:{lineno}: empty {col}")
            if row["query_id"] in seen:
                raise ValueError(f"{path}:{lineno}: duplicate query_id {row['query_id']}")
            seen.add(row["query_id"])
            rows.append({c: row[c].strip() for c in QUERY_COLUMNS})
    if not rows:
        raise ValueError(f"{path}: no queries")
    return rows


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", clean_text(text))


def overlap(passage: str, text: str) -> float:
    """Share of ``passage`` found as one contiguous run in ``text`` (whitespace ignored)."""
    p, t = _compact(passage), _compact(text)
    if not p:
        return 0.0
    if p in t:
        return 1.0
    m = SequenceMatcher(None, p, t, autojunk=False).find_longest_match(0, len(p), 0, len(t))
    return m.size / len(p)


def relevant_rows(chunks: list[dict], query: dict, min_overlap: float) -> set[int]:
    return {i for i, c in enumerate(chunks)
            if c["source"] == query["source"] and overlap(query["passage"], c["text"]) >= min_overlap}


def evaluate(retriever, queries: list[dict], ks: list[int], min_overlap: float) -> tuple[dict, list[dict]]:
    """Metrics per mode, and the recall@k curve rows (one per k) for plotting."""
    depth = max(ks)
    ranks: dict[str, list[float]] = {m: [] for m in MODES}
    unanswerable = []
    for q in queries:
        rel = relevant_rows(retriever.chunks, q, min_overlap)
        if not rel:
            unanswerable.append(q["query_id"])
        for mode in MODES:
            hits = retriever.search(q["query"], k=max(depth, 100), mode=mode)
            rank = next((i + 1 for i, h in enumerate(hits) if h.row in rel), np.inf)
            ranks[mode].append(rank)
    metrics: dict = {"queries": len(queries), "unanswerable": unanswerable}
    for mode in MODES:
        r = np.asarray(ranks[mode])
        metrics[mode] = {f"recall@{k}": round(float((r <= k).mean()), 4) for k in ks}
        metrics[mode]["mrr"] = round(float(np.where(np.isfinite(r), 1.0 / r, 0.0).mean()), 4)
    curve = [{"k": k, **{m: metrics[m][f"recall@{k}"] for m in MODES}} for k in ks]
    return metrics, curve
