"""Dense retrieval: a sentence-transformers encoder and a FAISS inner-product index.

Vectors are L2-normalised, so inner product is cosine similarity. A flat (exact) index serves
small corpora; from ``ivf_threshold`` chunks on, an IVF index with ``nlist`` lists, searched with
``nprobe``, keeps queries fast.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import faiss
import numpy as np

STATIC = "sentence_transformers.sentence_transformer.modules.static_embedding.StaticEmbedding"


class StaticEncoder:
    """A saved static-embedding SentenceTransformer (one ``StaticEmbedding`` module: the mean of the
    text's token vectors), read without importing sentence-transformers, which costs seconds in every
    process that retrieves or scores. Same tokenizer call, same ``EmbeddingBag``, same L2
    normalisation, so the same vectors bit for bit (tested); ``embedding`` and ``tokenizer`` are
    named as in ``StaticEmbedding``, for the token weights."""

    def __init__(self, path: Path):
        import torch
        from safetensors.torch import load_file

        self.tokenizer = _tokenizer(str((path / "tokenizer.json").resolve()))
        weight = load_file(str(path / "model.safetensors"))["embedding.weight"]
        self.embedding = torch.nn.EmbeddingBag.from_pretrained(weight, freeze=True, mode="mean")

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedding.embedding_dim

    def encode(self, texts: list[str], batch_size: int = 64, **_) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for a in range(0, len(texts), batch_size):
                ids = [e.ids for e in self.tokenizer.encode_batch(texts[a:a + batch_size], add_special_tokens=False)]
                offsets = torch.from_numpy(np.cumsum([0] + [len(x) for x in ids[:-1]]))
                flat = torch.tensor([t for x in ids for t in x], dtype=torch.long)
                out.append(torch.nn.functional.normalize(self.embedding(flat, offsets), p=2, dim=1).numpy())
        return np.concatenate(out)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    """One instance per file and process (the retriever's encoder and the metric's read the same one;
    a 262,144-token tokenizer takes a second or more to parse). Only encoded with, never changed."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    return tokenizer


def is_static(path: Path) -> bool:
    modules = path / "modules.json"
    if not modules.is_file():
        return False
    return [m["type"] for m in json.loads(modules.read_text(encoding="utf-8"))] == [STATIC]


def load_encoder(name_or_path: str):
    """A SentenceTransformer from a local path or, for users with a hub, a model name; a local
    static-embedding model as a ``StaticEncoder``."""
    path = Path(name_or_path)
    if name_or_path.startswith((".", "/")) or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"index.dense.model: {name_or_path} does not exist")
        if is_static(path):
            return StaticEncoder(path)
        name_or_path = str(path)
    import torch
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(name_or_path, device=device)


def encode(model, texts: list[str], batch_size: int = 64) -> np.ndarray:
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)


def static_embedding(model):
    """The StaticEmbedding module of a static-embedding model, else None."""
    if isinstance(model, StaticEncoder):
        return model
    from sentence_transformers.models import StaticEmbedding

    first = model[0] if len(model) else None
    return first if isinstance(first, StaticEmbedding) else None


def corpus_idf(model, texts: list[str], smoothing: float = 0.5) -> np.ndarray:
    """Per-token ``log((N + 1) / (df + 1)) + smoothing`` over ``texts`` in the encoder's tokens."""
    static = static_embedding(model)
    df = np.zeros(static.embedding.weight.shape[0], dtype=np.float64)
    for enc in static.tokenizer.encode_batch(texts, add_special_tokens=False):
        df[np.unique(np.asarray(enc.ids, dtype=np.int64))] += 1
    return (np.log((len(texts) + 1) / (df + 1)) + smoothing).astype(np.float32)


def apply_token_weights(model, weights: np.ndarray) -> None:
    """Scale each token's vector of a static-embedding model in place."""
    import torch

    w = static_embedding(model).embedding.weight
    if w.shape[0] != len(weights):
        raise ValueError(f"token weights cover {len(weights)} tokens, the encoder has {w.shape[0]}")
    with torch.no_grad():
        w.copy_((w.float() * torch.from_numpy(weights)[:, None]).to(w.dtype))


def build_faiss(emb: np.ndarray, ivf_threshold: int, nlist: int, nprobe: int, seed: int = 0) -> faiss.Index:
    n, d = emb.shape
    if n < ivf_threshold:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = nlist or max(1, int(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(emb)
        index.nprobe = nprobe
    index.add(emb)
    return index


def search(index: faiss.Index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row ids) of the top ``k``; ids of -1 (IVF with too few probed lists) are dropped."""
    k = min(k, index.ntotal)
    if k == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    scores, ids = index.search(query.reshape(1, -1), k)
    keep = ids[0] >= 0
    return scores[0][keep], ids[0][keep]
