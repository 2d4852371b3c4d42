"""An offline Korean-capable sentence encoder built from an LLM's input embeddings.

No Korean sentence-embedding model ships inside a PyPI package, so the default dense encoder is a
static-embedding model (the model2vec idea, served by sentence-transformers' ``StaticEmbedding``):
the default teacher's tokenizer plus its token-embedding matrix, read straight from the GGUF file
(only that one tensor is dequantised). The matrix is centred, its dominant principal directions
are removed ("all-but-the-top": they encode token frequency, not meaning), optionally reduced with
PCA, and weighted so that frequent tokens count less (SIF weights under a Zipf estimate of token
frequency from the tokenizer's piece ranks). The ``index`` stage can further weight tokens by
their IDF in the indexed corpus (``index.dense.token_weighting``).
It is a stand-in: users with a model hub set ``index.dense.model`` to a real encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fsku.config import ConfigError, field
from fsku.embedded import DEFAULT_SOURCE, resolve_gguf
from fsku.gguf import load_tokenizer, read_gguf
from fsku.io import atomic_dir

log = logging.getLogger(__name__)

@dataclass
class EncoderConfig:
    source: str = field(DEFAULT_SOURCE, doc="the PyPI GGUF package name, or a path to a .gguf file")
    pca_dims: int = field(0, ge=0, le=8192, doc="0 keeps the model's embedding width")
    remove_top: int = field(2, ge=0, le=64, doc="dominant principal directions projected out")
    weighting: Literal["sif", "none"] = "sif"
    sif_a: float = field(1e-5, gt=0.0, le=1.0, doc="SIF smoothing: weight = a / (a + p(token))")
    dtype: Literal["float16", "float32"] = "float16"

    def validate(self) -> None:
        if not self.source:
            raise ConfigError("source: must name the GGUF package or a .gguf file")


def read_token_embeddings(gguf_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vocab x dim float32 token embeddings, per-token scores) from a GGUF file."""
    gguf = read_gguf(gguf_path)
    emb = gguf.tensor("token_embd.weight")
    scores = gguf.fields.get("tokenizer.ggml.scores")
    scores = (np.asarray(scores, dtype=np.float64) if isinstance(scores, np.ndarray)
              else -np.arange(emb.shape[0], dtype=np.float64))
    return emb, scores


def load_gguf_tokenizer(gguf_path: Path):
    """A fast (``tokenizers``) tokenizer converted from the GGUF metadata by transformers."""
    return load_tokenizer(gguf_path).backend_tokenizer


def principal_directions(x: np.ndarray) -> np.ndarray:
    """Principal directions of centred ``x`` as columns, by decreasing variance (signs fixed)."""
    cov = x.T @ x / max(1, len(x) - 1)
    vals, vecs = np.linalg.eigh(cov)
    vecs = vecs[:, np.argsort(vals)[::-1]]
    return vecs * np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])


def transform(emb: np.ndarray, remove_top: int, dims: int) -> np.ndarray:
    """Centre, drop the ``remove_top`` dominant directions, keep ``dims`` (0 = all) components."""
    x = emb.astype(np.float64)
    x -= x.mean(axis=0, keepdims=True)
    vecs = principal_directions(x)
    if remove_top:
        top = vecs[:, :remove_top]
        x -= (x @ top) @ top.T
    if dims and dims < x.shape[1]:
        x = x @ vecs[:, remove_top:remove_top + dims]
    return x.astype(np.float32)


def sif_weights(scores: np.ndarray, a: float) -> np.ndarray:
    """SIF weights a / (a + p) with p from a Zipf law over the tokenizer's piece ranks."""
    rank = np.empty(len(scores), dtype=np.float64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    p = 1.0 / rank
    p /= p.sum()
    return (a / (a + p)).astype(np.float32)


def build_weights(emb: np.ndarray, scores: np.ndarray, cfg: EncoderConfig) -> np.ndarray:
    emb = transform(emb, cfg.remove_top, cfg.pca_dims)
    if cfg.weighting == "sif":
        emb = emb * sif_weights(scores, cfg.sif_a)[:, None]
    return np.ascontiguousarray(emb, dtype=np.float32)


def save_static_encoder(tokenizer, weights: np.ndarray, out_dir: str | Path, dtype: str = "float32") -> None:
    """Write a sentence-transformers model directory, atomically."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    model = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights)], device="cpu")
    if dtype == "float16":
        model.half()
    with atomic_dir(out_dir) as tmp:
        model.save(str(tmp))
        card = Path(tmp) / "README.md"  # the generated model card is not reproducible; write our own
        card.write_text(
            "# Static embedding encoder\n\nBuilt by `python -m stages.encoder` from a GGUF model's token "
            "embeddings (see fsku/embedding/static.py). A stand-in for a trained Korean sentence "
            "encoder.\n", encoding="utf-8")


def build_static_encoder(cfg: EncoderConfig, out_dir: str | Path) -> dict:
    path = resolve_gguf(cfg.source)
    log.info("reading token embeddings from %s", path)
    emb, scores = read_token_embeddings(path)
    tokenizer = load_gguf_tokenizer(path)
    if tokenizer.get_vocab_size() != emb.shape[0]:
        raise ValueError(f"{path}: tokenizer has {tokenizer.get_vocab_size()} tokens but the embedding "
                         f"matrix has {emb.shape[0]} rows")
    weights = build_weights(emb, scores, cfg)
    save_static_encoder(tokenizer, weights, out_dir, cfg.dtype)
    return {"source": cfg.source, "vocab": int(weights.shape[0]), "dims": int(weights.shape[1])}
