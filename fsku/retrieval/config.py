"""Config of the ``index`` stage and of hybrid retrieval (``params.yaml`` section ``index``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsku.config import ConfigError, field

# content morphemes: nouns, pronouns, numerals, verb/adjective stems, roots, foreign words, numbers
DEFAULT_POS = ["NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "SL", "SN", "SH"]


@dataclass
class BM25Config:
    k1: float = field(1.2, gt=0.0, le=10.0)
    b: float = field(0.75, ge=0.0, le=1.0)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    pos_tags: list[str] = field(default_factory=lambda: list(DEFAULT_POS),
                                doc="kiwipiepy POS tags kept as index terms (prefix match: VV keeps VV-R)")

    def validate(self) -> None:
        if not self.pos_tags:
            raise ConfigError("pos_tags: keep at least one POS tag")


@dataclass
class DenseConfig:
    model: str = field("models/encoder", doc="sentence-transformers model name or path")
    batch_size: int = field(64, ge=1, le=4096)
    token_weighting: Literal["idf", "none"] = field(
        "idf", doc="static-embedding encoders only: scale token vectors by their IDF in the corpus")
    ivf_threshold: int = field(50_000, ge=1, doc="chunk count from which FAISS IVF replaces a flat index")
    nlist: int = field(0, ge=0, doc="IVF lists; 0 = 4 * sqrt(chunks)")
    nprobe: int = field(16, ge=1)


@dataclass
class HybridConfig:
    method: Literal["weighted", "rrf"] = "weighted"
    bm25_weight: float = field(0.3, ge=0.0, le=1.0)
    dense_weight: float = field(0.7, ge=0.0, le=1.0)
    rrf_k: int = field(60, ge=1)
    candidates: int = field(100, ge=1, doc="top hits taken from each retriever before fusion")

    def validate(self) -> None:
        if self.bm25_weight + self.dense_weight <= 0:
            raise ConfigError("bm25_weight: bm25_weight and dense_weight cannot both be 0")


@dataclass
class RerankConfig:
    model: str = field("", doc="cross-encoder name or path; empty = no reranking")
    top_n: int = field(20, ge=1, doc="fused hits rescored by the reranker")


@dataclass
class RetrievalEvalConfig:
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20])
    min_overlap: float = field(0.6, gt=0.0, le=1.0,
                               doc="share of the labelled passage a chunk must contain to count")

    def validate(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError("ks: give one or more positive cut-offs")


@dataclass
class IndexConfig:
    bm25: BM25Config = field(default_factory=BM25Config)
    dense: DenseConfig = field(default_factory=DenseConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    eval: RetrievalEvalConfig = field(default_factory=RetrievalEvalConfig)


# what a search over a built index reads of the section (``Retriever.load``): the rest shapes the
# index itself, recorded in its meta.json, or only the index stage's own retrieval figures
SEARCH_KEYS = ("dense.nprobe", "hybrid", "rerank")
