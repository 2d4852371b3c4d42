"""Hybrid retrieval: BM25 and dense candidates fused, optionally reranked.

Fusion is either a weighted sum of min-max normalised scores (each retriever's scores scaled to
[0, 1] over its own candidates; a chunk missing from one list gets 0 from it) or reciprocal-rank
fusion, ``sum_i w_i / (k + rank_i)``, which ignores score scales altogether. A reranker, when set,
rescores the top fused hits (for example a cross-encoder); it is off by default.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsku.io import read_jsonl
from fsku.retrieval.bm25 import BM25Index
from fsku.retrieval.config import HybridConfig, IndexConfig
from fsku.retrieval.dense import apply_token_weights, encode, load_encoder, search
from fsku.retrieval.tokenize import MorphTokenizer

Reranker = Callable[[str, Sequence[str]], Sequence[float]]


@dataclass
class Hit:
    row: int  # position in the index's chunk list
    score: float
    chunk: dict


def minmax(scores: np.ndarray) -> np.ndarray:
    if scores.size == 0:
        return scores
    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo < 1e-12:
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


def fuse(sparse: tuple[np.ndarray, np.ndarray], dense: tuple[np.ndarray, np.ndarray],
         cfg: HybridConfig) -> list[tuple[int, float]]:
    """Fuse (row ids, scores) candidate lists into [(row, score)], best first, ties by row."""
    fused: dict[int, float] = {}
    for (ids, scores), weight in ((sparse, cfg.bm25_weight), (dense, cfg.dense_weight)):
        if weight == 0 or len(ids) == 0:
            continue
        if cfg.method == "weighted":
            contrib = weight * minmax(np.asarray(scores, dtype=np.float64))
        else:
            order = np.argsort(-np.asarray(scores), kind="stable")
            contrib = np.empty(len(ids))
            contrib[order] = weight / (cfg.rrf_k + np.arange(1, len(ids) + 1))
        for row, c in zip(ids.tolist(), contrib.tolist()):
            fused[row] = fused.get(row, 0.0) + c
    return sorted(fused.items(), key=lambda rc: (-rc[1], rc[0]))


def top_candidates(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ids and scores of the ``k`` best positive scores, best first (ties by row)."""
    rows = np.flatnonzero(scores > 0)
    if rows.size == 0:
        return rows, scores[rows]
    order = np.lexsort((rows, -scores[rows]))[:k]
    return rows[order], scores[rows[order]]


class CrossEncoderReranker:
    """Reranker hook backed by a sentence-transformers CrossEncoder (off by default)."""

    def __init__(self, model: str):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model)

    def __call__(self, query: str, texts: Sequence[str]) -> list[float]:
        return [float(s) for s in self.model.predict([(query, t) for t in texts])]


class Retriever:
    """Search over a built index directory (``models/index``)."""

    def __init__(self, chunks: list[dict], bm25: BM25Index, faiss_index, encoder, tokenizer: MorphTokenizer,
                 cfg: IndexConfig, reranker: Reranker | None = None):
        self.chunks, self.bm25, self.faiss, self.encoder = chunks, bm25, faiss_index, encoder
        self.tokenizer, self.cfg, self.reranker = tokenizer, cfg, reranker

    @classmethod
    def load(cls, index_dir: str | Path, cfg: IndexConfig, reranker: Reranker | None = None) -> Retriever:
        import faiss

        index_dir = Path(index_dir)
        meta = json.loads((index_dir / "meta.json").read_text(encoding="utf-8"))
        if reranker is None and cfg.rerank.model:
            reranker = CrossEncoderReranker(cfg.rerank.model)
        faiss_index = faiss.read_index(str(index_dir / "dense.faiss"))
        if hasattr(faiss_index, "nprobe"):
            faiss_index.nprobe = cfg.dense.nprobe
        encoder = load_encoder(meta["encoder"])
        if meta.get("token_weights"):
            apply_token_weights(encoder, np.load(index_dir / meta["token_weights"]))
        return cls(read_jsonl(index_dir / "chunks.jsonl"), BM25Index.load(index_dir / "bm25"), faiss_index,
                   encoder, MorphTokenizer(meta["pos_tags"]), cfg, reranker)

    def sparse(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_candidates(self.bm25.scores(self.tokenizer(query)), k)

    def dense(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = search(self.faiss, encode(self.encoder, [query])[0], k)
        return rows, scores

    def top_chunks(self, query: str, k: int) -> list[dict]:
        """The ``k`` best chunks for ``query`` (hybrid): what a prompt's context is built from."""
        return [h.chunk for h in self.search(query, k)]

    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        """Top ``k`` chunks for ``query``; ``mode`` is hybrid, bm25 or dense."""
        n = self.cfg.hybrid.candidates
        if mode == "bm25":
            rows, scores = self.sparse(query, max(k, n))
            ranked = list(zip(rows.tolist(), scores.tolist()))
        elif mode == "dense":
            rows, scores = self.dense(query, max(k, n))
            ranked = list(zip(rows.tolist(), scores.tolist()))
        elif mode == "hybrid":
            ranked = fuse(self.sparse(query, n), self.dense(query, n), self.cfg.hybrid)
        else:
            raise ValueError(f"unknown retrieval mode {mode!r} (hybrid, bm25 or dense)")
        if self.reranker is not None and mode == "hybrid" and ranked:
            head = ranked[: self.cfg.rerank.top_n]
            scores = self.reranker(query, [self.chunks[r]["text"] for r, _ in head])
            head = sorted(zip((r for r, _ in head), scores), key=lambda rs: (-rs[1], rs[0]))
            ranked = head + ranked[len(head):]
        return [Hit(int(r), float(s), self.chunks[int(r)]) for r, s in ranked[:k]]
