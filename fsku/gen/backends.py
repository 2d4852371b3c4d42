"""The transformers backend, and ``make_backend``, which resolves a model directory once and picks
the backend that serves it (vLLM's is ``fsku/gen/vllm_backend.py``; the interface both implement is
``fsku/gen/backend.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from fsku.gen.backend import common_prefix, option_sequences, with_samples
from fsku.gen.config import GenConfig, SamplingConfig
from fsku.gen.format import stop_strings
from fsku.models.adapter import ModelSource, resolve_model

log = logging.getLogger(__name__)
FALLBACK_LOG = "fsku.fallback"  # warnings fsku.stage.run repeats at the end of a stage


class AnswerFrequencyPenalty(LogitsProcessor):
    """vLLM's ``frequency_penalty`` for ``generate``: each token's logit loses ``penalty`` per time
    it already occurs among the generated tokens (those after ``prompt_width``); the prompt, and so
    the retrieved context the answer may copy, is not counted (unlike ``repetition_penalty``)."""

    def __init__(self, penalty: float, prompt_width: int):
        self.penalty, self.width = penalty, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = input_ids[:, self.width:]
        if out.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, out, torch.ones_like(out, dtype=scores.dtype))
        return scores - self.penalty * counts


class StopStrings(StoppingCriteria):
    """``generate``'s ``stop_strings`` without the table transformers builds over the whole vocabulary
    (seconds per process at 262,144 tokens): a row stops when a stop string ends inside its newest
    token, read from the text of its last few tokens. As upstream, the newest token may run past the
    string's end."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.window = max(map(len, stops)) + 2  # tokens: each but a special one holds a character or more

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = []
        for row in input_ids[:, -self.window:].tolist():
            text = self._text(row)
            newest = max(len(text) - len(self._text(row[:-1])), 1)
            done.append(any(s in text[max(len(text) - newest - len(s) + 1, 0):] for s in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TransformersBackend:
    fallback: str | None = None  # why auto did not get vLLM (make_backend)
    """Batched generation with left padding; greedy at temperature 0, seeded sampling otherwise."""

    name = "transformers"

    def __init__(self, model: str | Path | ModelSource, cfg: GenConfig):
        from fsku.models.load import load_for_inference

        self.cfg = cfg
        self.model, self.tokenizer = load_for_inference(model)
        self.tokenizer.padding_side = "left"
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos = {e for e in eos + [self.tokenizer.eos_token_id] if e is not None}
        self.stop = stop_strings(self.tokenizer)

    def _encode(self, prompts: list[str], budget: int) -> tuple[list[list[int]], list[bool]]:
        ids, cut = [], []
        for p in prompts:
            toks = self.tokenizer(p, add_special_tokens=True).input_ids
            cut.append(len(toks) > budget)
            ids.append(toks[-budget:] if len(toks) > budget else toks)  # keep the question end
        return ids, cut

    @torch.no_grad()
    def generate(self, prompts: list[str], sp: SamplingConfig, seed: int,
                 max_time: float | None = None) -> list[dict]:
        """``max_time``: seconds after which the batch stops; its unfinished answers end with
        finish_reason ``time``."""
        budget = self.cfg.max_model_len - sp.max_tokens
        ids, cut = self._encode(prompts, budget)
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.model.device)
        torch.manual_seed(seed)
        kwargs = dict(max_new_tokens=sp.max_tokens, pad_token_id=pad, do_sample=sp.temperature > 0,
                      num_return_sequences=sp.n)
        if max_time:
            kwargs["max_time"] = max_time
        if self.stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList([StopStrings(self.tokenizer, self.stop)])
        if sp.frequency_penalty:
            kwargs["logits_processor"] = LogitsProcessorList([AnswerFrequencyPenalty(sp.frequency_penalty, width)])
        if sp.temperature > 0:
            kwargs.update(temperature=sp.temperature, top_p=sp.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16_autocast
                                  and self.model.device.type == "cpu")
        with autocast:
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        rows = out[:, width:].tolist()  # n consecutive rows per prompt
        timed_out = bool(max_time) and out.shape[1] - width < sp.max_tokens
        samples = [[self._sample(r, timed_out) for r in rows[i * sp.n:(i + 1) * sp.n]] for i in range(len(ids))]
        return [with_samples(s, len(x), c) for s, x, c in zip(samples, ids, cut)]

    def _sample(self, row: list[int], timed_out: bool = False) -> dict:
        end = next((i for i, t in enumerate(row) if t in self.eos), None)
        tokens = row if end is None else row[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:  # generation halted on a stop string, which (as in vLLM) is not part of the answer
            text, end = text[:cut], len(tokens)
        reason = "stop" if end is not None else "time" if timed_out else "length"
        return {"text": text, "n_tokens": len(tokens) + (end is not None and cut < 0), "finish_reason": reason}

    @torch.no_grad()
    def continuation_logprobs(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """Per prompt, the log-probability of each continuation (an answer such as "정답: 3") given
        the prompt. When every continuation differs from the others in one final token, one forward
        pass of the shared part scores them all; otherwise each full sequence is scored."""
        out = []
        for prompt, conts in zip(prompts, continuations):
            seqs = [self.tokenizer(prompt + c, add_special_tokens=True).input_ids for c in conts]
            shared = common_prefix(seqs)
            budget = self.cfg.max_model_len - 1
            if all(len(s) == shared + 1 for s in seqs):
                ids = seqs[0][:shared][-budget:]
                logits = self.model(input_ids=torch.tensor([ids], device=self.model.device), use_cache=False,
                                    logits_to_keep=1).logits[0, -1].float()
                lp = torch.log_softmax(logits, -1)
                out.append([float(lp[s[-1]]) for s in seqs])
                continue
            scores = []
            for s in seqs:
                cut = max(0, len(s) - budget)
                ids, first = s[cut:], max(1, shared - cut)
                logits = self.model(input_ids=torch.tensor([ids], device=self.model.device), use_cache=False,
                                    logits_to_keep=len(ids) - first + 1).logits[0, :-1].float()
                lp = torch.log_softmax(logits, -1)
                scores.append(float(lp.gather(-1, torch.tensor(ids[first:], device=lp.device)[:, None]).sum()))
            out.append(scores)
        return out


    @torch.no_grad()
    def option_logprobs(self, prompts: list[str], options: list[list[str]]) -> list[list[list[float]]]:
        """Per prompt, per option, the log-probability of each token of the option's text given the
        prompt. The prompt is run once (its keys and values cached); the options then go through
        together as one batch on that cache, so n options cost one prompt pass, not n."""
        out = []
        for prompt, opts in zip(prompts, options):
            head, seqs = option_sequences(self.tokenizer, prompt, opts, self.cfg.max_model_len)
            shared = min(common_prefix(seqs), min(len(s) for s in seqs) - 1)  # each option keeps a token
            dev = self.model.device
            pre = self.model(input_ids=torch.tensor([seqs[0][:shared]], device=dev), use_cache=True,
                             logits_to_keep=shared - head + 1)
            lp_pre = torch.log_softmax(pre.logits[0].float(), -1)  # predicts tokens head .. shared
            common = [float(lp_pre[i, seqs[0][head + i]]) for i in range(shared - head)]
            firsts = [float(lp_pre[-1, s[shared]]) for s in seqs]
            rest = [s[shared + 1:] for s in seqs]
            width = max(len(r) for r in rest)
            tails: list[list[float]] = [[] for _ in seqs]
            if width:
                pad = self.tokenizer.pad_token_id or 0
                inputs = [s[shared:shared + width] + [pad] * (width - len(s[shared:shared + width])) for s in seqs]
                inp = torch.tensor(inputs, device=dev)
                mask = torch.cat([torch.ones(len(seqs), shared, dtype=torch.long, device=dev),
                                  (torch.arange(width, device=dev)[None] < torch.tensor(
                                      [len(r) for r in rest], device=dev)[:, None]).long()], 1)
                cache = pre.past_key_values
                cache.batch_repeat_interleave(len(seqs))
                logits = self.model(input_ids=inp, attention_mask=mask, past_key_values=cache, use_cache=True,
                                    position_ids=torch.arange(shared, shared + width, device=dev)[None].expand(
                                        len(seqs), -1)).logits.float()
                lp = torch.log_softmax(logits, -1)
                for j, r in enumerate(rest):
                    tails[j] = [float(lp[j, i, t]) for i, t in enumerate(r)]
            out.append([common + [f] + t for f, t in zip(firsts, tails)])
        return out


def make_backend(kind: str, model_dir: str | Path, cfg: GenConfig):
    """``auto`` takes vLLM when it imports and starts, else transformers; ``vllm`` insists on it.

    A fallback is not quiet: the returned backend's ``fallback`` says why (stage metrics record it as
    ``backend_fallback``), and it is logged to ``fsku.fallback``, which ``fsku.stage.run`` repeats
    when the stage ends. A config error (a memory share that cannot hold the model) always stops."""
    from fsku.config import ConfigError

    source = resolve_model(model_dir)  # once: adapter, tokenizer source, quantized
    fallback = None
    if kind in ("auto", "vllm"):
        try:
            from fsku.gen.vllm_backend import VLLMBackend
        except ImportError as e:
            if kind == "vllm":
                raise ValueError(f"gen.backend: vllm requested but it does not import ({e})") from None
            fallback = f"vLLM does not import ({str(e).splitlines()[0][:200]})"
        else:
            try:
                return VLLMBackend(source, cfg)
            except ConfigError:
                raise
            except Exception as e:  # vLLM raises many types when an engine cannot start
                if kind == "vllm":
                    raise
                fallback = f"vLLM did not start ({str(e).splitlines()[0][:300]})"
    backend = TransformersBackend(source, cfg)
    if fallback:
        backend.fallback = f"{fallback}: generating with transformers instead, many times slower on a GPU"
        logging.getLogger(FALLBACK_LOG).warning("%s: %s", model_dir, backend.fallback)
    return backend
