"""Build the retrieval index directory: BM25, FAISS, the chunks it serves and a manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import faiss
import numpy as np

from fsku.config import to_dict
from fsku.io import atomic_dir, dumps_json, read_jsonl
from fsku.retrieval.bm25 import BM25Index
from fsku.retrieval.config import IndexConfig
from fsku.retrieval.dense import apply_token_weights, build_faiss, corpus_idf, encode, load_encoder, static_embedding
from fsku.retrieval.tokenize import MorphTokenizer

log = logging.getLogger(__name__)


def build_index(chunks_path: str | Path, out_dir: str | Path, cfg: IndexConfig) -> dict:
    chunks = read_jsonl(chunks_path)
    if not chunks:
        raise ValueError(f"{chunks_path}: no chunks to index")
    for i, c in enumerate(chunks, 1):
        if not isinstance(c.get("text"), str) or "chunk_id" not in c or "source" not in c:
            raise ValueError(f"{chunks_path}:{i}: a chunk needs chunk_id, source and text")
    texts = [c["text"] for c in chunks]
    log.info("BM25 over %d chunks", len(chunks))
    tokenizer = MorphTokenizer(cfg.bm25.pos_tags)
    bm25 = BM25Index.build(tokenizer.batch(texts), cfg.bm25.k1, cfg.bm25.b, cfg.bm25.method)
    log.info("encoding %d chunks with %s", len(chunks), cfg.dense.model)
    encoder = load_encoder(cfg.dense.model)
    token_weights = None
    if cfg.dense.token_weighting == "idf":
        if static_embedding(encoder) is not None:
            token_weights = corpus_idf(encoder, texts)
            apply_token_weights(encoder, token_weights)
        else:
            log.info("index.dense.token_weighting applies to static-embedding encoders only; ignored")
    emb = encode(encoder, texts, cfg.dense.batch_size)
    index = build_faiss(emb, cfg.dense.ivf_threshold, cfg.dense.nlist, cfg.dense.nprobe)
    meta = {"chunks": len(chunks), "encoder": cfg.dense.model, "dims": int(emb.shape[1]),
            "faiss": type(index).__name__, "pos_tags": list(cfg.bm25.pos_tags),
            "bm25": to_dict(cfg.bm25), "vocab": len(bm25.vocab),
            "token_weights": "token_weights.npy" if token_weights is not None else None}
    with atomic_dir(out_dir) as tmp:
        bm25.save(tmp / "bm25")
        faiss.write_index(index, str(tmp / "dense.faiss"))
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in chunks)
        if token_weights is not None:
            np.save(tmp / "token_weights.npy", token_weights)
        (tmp / "meta.json").write_text(dumps_json(meta), encoding="utf-8")
    return meta
