"""Configs of the prompt and generation stages (``params.yaml`` sections ``prompts`` and ``gen``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsku.config import ConfigError, field


@dataclass
class DedupConfig:
    threshold: float = field(0.8, gt=0.0, le=1.0, doc="MinHash Jaccard estimate above which prompts are duplicates")
    num_perm: int = field(128, ge=16, le=1024)
    shingle: int = field(5, ge=1, le=50, doc="character n-gram length")


@dataclass
class PromptsConfig:
    source: Literal["bank", "synth", "both"] = field(
        "bank", doc="training questions: the hand-written bank (paths.train_questions), the teacher-written "
                    "ones that passed the synth stage's gate (paths.synth_questions), or both")
    top_k: int = field(3, ge=0, le=50, doc="retrieved chunks put in each prompt")
    max_context_chars: int = field(1500, ge=0, doc="context budget; chunks past it are cut")
    max_prompts: int = field(60, ge=0, doc="cap on the prompt pool after dedup; 0 = all")
    open_share: float = field(
        0.0, ge=0.0, le=1.0, doc="share of a capped pool reserved for open-ended questions (as far as there are); "
                                 "0 = a draw regardless of kind")
    teacher_shots: int = field(2, ge=0, le=16,
                               doc="worked examples (other training questions) shown to the teacher only")
    shot_context_chars: int = field(300, ge=0, doc="context budget of each worked example")
    shot_selection: Literal["random", "similar"] = field(
        "random", doc="worked examples: a seeded draw, or the training questions closest to the question asked")
    dedup: DedupConfig = field(default_factory=DedupConfig)
    seed: int = 0


@dataclass
class SamplingConfig:
    temperature: float = field(0.0, ge=0.0, le=5.0, doc="0 = greedy")
    top_p: float = field(1.0, gt=0.0, le=1.0)
    max_tokens: int = field(64, ge=1, le=32768)
    seed: int = 0
    n: int = field(1, ge=1, le=64, doc="answers sampled per prompt (best_vs_worst pairs); >1 needs temperature > 0")
    frequency_penalty: float = field(
        0.0, ge=0.0, le=2.0, doc="subtracted from a token's logit once per time it already occurs in the answer "
                                 "(vLLM's meaning; the prompt is not counted, so copying the context is not penalised)")


@dataclass
class GenConfig:
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    batch_size: int = field(8, ge=1, le=4096)
    bf16_autocast: bool = field(False, doc="bf16 autocast for transformers on CPU")
    max_model_len: int = field(2048, ge=64, doc="prompt + answer tokens; longer prompts are cut from the left")
    vllm_memory_utilization: float = field(
        0.3, gt=0.0, le=1.0, doc="share of GPU memory (CPU memory on the CPU build) vLLM reserves")
    vllm_enforce_eager: bool = field(True, doc="skip vLLM's graph compilation (faster start on CPU)")
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        "auto", doc="vLLM compute dtype; auto: bfloat16 on a GPU or a CPU with AMX/AVX512-BF16, else float32 "
                    "(fsku.kernels.compute_dtype)")
    tensor_parallel_size: int = field(1, ge=1, le=64, doc="vLLM: GPUs one model is split over")
    teacher_system: str = field("", doc="instructions only the teacher sees (system turn or prefix)")
    teacher_mcq: Literal["option_pmi", "option", "generate"] = field(
        "option", doc="teacher's multiple-choice answers: constrained to the options, picked by this "
                          "scoring (fsku/gen/choice.py), or generated freely")
    shards: int = field(1, ge=1)
    shard_index: int = field(0, ge=0)
    teacher: SamplingConfig = field(default_factory=SamplingConfig)
    student: SamplingConfig = field(default_factory=SamplingConfig)

    def validate(self) -> None:
        if self.shard_index >= self.shards:
            raise ConfigError(f"shard_index: {self.shard_index} must be below shards ({self.shards})")
        for who in ("teacher", "student"):
            if getattr(self, who).max_tokens >= self.max_model_len:
                raise ConfigError(f"{who}.max_tokens: must be below max_model_len ({self.max_model_len})")
            if getattr(self, who).n > 1 and getattr(self, who).temperature == 0:
                raise ConfigError(f"{who}.n: {getattr(self, who).n} samples of a greedy (temperature 0) "
                                  "decode would all be the same; set a temperature")


# what answering reads of the generation settings (the eval and predict stages bring their own
# backend and batch size)
ENGINE_KEYS = ("max_model_len", "bf16_autocast", "vllm_memory_utilization", "vllm_enforce_eager", "vllm_dtype",
               "tensor_parallel_size")
# what an answer's prompt reads of the prompts section: its retrieved context, and the teacher's
# worked examples (eval rows only: predict answers with the student, which sees none)
CONTEXT_KEYS = ("top_k", "max_context_chars")
SHOT_KEYS = ("teacher_shots", "shot_context_chars", "shot_selection", "seed")


BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def weights_gib(model_dir, dtype: str) -> float | None:
    """GiB the weights of a saved model dir take in ``dtype`` (``auto``: as stored), from the
    safetensors files' sizes and the stored dtype in config.json (no weights read); None for a hub id."""
    import json
    from pathlib import Path

    if not (Path(model_dir) / "config.json").is_file():
        return None
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    size = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
    want = stored if dtype == "auto" else dtype
    return size / BYTES.get(stored, 4) * BYTES.get(want, 4) / 2**30


def check_vllm_memory(cfg: GenConfig, model_dir, weights: float | None, device_gib: float) -> None:
    """Stop before vLLM starts when its memory share cannot even hold the weights (it would fail,
    or under ``auto`` fall back to a many times slower transformers run)."""
    from fsku.kernels import compute_dtype

    share = cfg.vllm_memory_utilization * device_gib * cfg.tensor_parallel_size
    dtype = compute_dtype(cfg.vllm_dtype, True)  # what a GPU computes in: auto is bfloat16 there
    if weights is not None and weights >= share:
        fit = min(0.95, round(weights / (device_gib * cfg.tensor_parallel_size) + 0.1, 2))
        raise ConfigError(
            f"gen.vllm_memory_utilization: {cfg.vllm_memory_utilization} of {device_gib:.1f} GiB x "
            f"{cfg.tensor_parallel_size} GPU(s) is {share:.1f} GiB, and {model_dir}'s weights alone take "
            f"{weights:.1f} GiB in {dtype} (the KV cache comes on top): raise it to about {fit}"
            + (" and set gen.vllm_dtype: bfloat16" if dtype == "float32" else "")
            + ", or raise gen.tensor_parallel_size (configs/profiles/gpu-24gb.yaml sets what fits one 24 GB GPU)")
