"""Sparse retrieval: bm25s over kiwipiepy content morphemes.

The vocabulary is built here, sorted, so the saved index is byte-identical across runs
(bm25s' own vocabulary order follows Python's per-process string hashing).
"""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np
from bm25s.tokenization import Tokenized


class BM25Index:
    def __init__(self, model: bm25s.BM25):
        self.model = model
        self.vocab: dict[str, int] = model.vocab_dict

    @classmethod
    def build(cls, docs: list[list[str]], k1: float, b: float, method: str) -> BM25Index:
        vocab = {t: i for i, t in enumerate(sorted({t for d in docs for t in d}))}
        model = bm25s.BM25(k1=k1, b=b, method=method)
        model.index(Tokenized(ids=[[vocab[t] for t in d] for d in docs], vocab=vocab), show_progress=False)
        return cls(model)

    def save(self, path: str | Path) -> None:
        self.model.save(str(path), show_progress=False)

    @classmethod
    def load(cls, path: str | Path) -> BM25Index:
        return cls(bm25s.BM25.load(str(path), show_progress=False))

    def scores(self, terms: list[str]) -> np.ndarray:
        """BM25 score of every document for the query terms (unknown terms score nothing)."""
        ids = [self.vocab[t] for t in terms if t in self.vocab and t != ""]
        if not ids:
            return np.zeros(self.model.scores["num_docs"], dtype=np.float32)
        return np.asarray(self.model.get_scores(ids), dtype=np.float32)
