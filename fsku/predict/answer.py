"""Answering questions with a model, with a circuit breaker, a time budget and a resume cache.

Every question gets an answer, whatever happens: a multiple-choice question whose generated answer
names no valid option, is cut off by the time limit, or whose model call raised, is answered by
the likeliest option (or, if the model itself failed, by the option closest to the retrieved
context); a degenerate (``fsku.scoring.open_answer_problem``: empty, punctuation only, no
Hangul, or a loop), non-answering (``fsku.scoring.non_answer``: too short to explain, or an echo of
the question), late or failed open-ended answer is composed from the top retrieved chunk.
Every model call goes through a circuit breaker (``fsku.predict.breaker``): a hard time limit on
each call, whatever the backend, and after repeated failures no model calls at all until a trial
call succeeds. Each record says whether, and why, a fallback answered: ``fallback`` is None for the
model's own answer, else the reason (``timeout``, ``error``, ``breaker_open``, ``budget``,
``no_choice``, or ``degenerate:<reason>``, whose record keeps the model's text as
``generated``); ``source`` says
who chose the answer: ``model`` (its generation or its option scores) or ``context`` (the
retrieved chunks, no model).

The time budget is checked after every batch: when the time spent plus the remaining questions at
the observed rate would overrun it, answering steps down to ``fast`` (options by likelihood, short
open answers) and then, if still over, to ``fallback`` (no model calls).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fsku.gen.choice import best, option_scores, text_scores
from fsku.gen.config import SamplingConfig
from fsku.gen.format import format_prompt
from fsku.gen.prompts import cloze_prompt, user_prompt
from fsku.predict.breaker import Breaker, BreakerOpen, CallTimeout
from fsku.predict.config import AnswerConfig
from fsku.predict.fallback import answer_from_context, option_by_overlap
from fsku.questions import Question
from fsku.scoring import extract_choice, non_answer, open_answer_problem

log = logging.getLogger(__name__)

GENERATE_FALLBACK = "option"  # how generate mode picks when the answer names no option
RETRIED = ("error", "breaker_open")  # fallbacks a resumed run asks the model again for
MODES = ("full", "fast", "fallback")


@dataclass
class Item:
    q: Question
    prompt: str          # the model's input (chat template applied)
    hits: list[dict]     # retrieved chunks, best first
    key: str = ""        # cache key
    cloze: str = ""      # multiple choice: context and stem, no options: what option texts are scored under
    bare: str = ""       # multiple choice: the cloze prompt without the retrieved context (calibration)


def prepare(questions: list[Question], search, prompts_cfg, tokenizer, salt: str = "", system_for=None) -> list[Item]:
    """Items with the same prompt the training pairs used; ``search(query, k)`` may be None (no index).
    ``salt`` (model and settings) goes into each cache key. ``system_for(tokenizer, question)`` gives an
    open-ended question's system turn (the teacher's worked examples); multiple choice is scored
    on the plain prompt, as the teacher's training answers were."""
    items = []
    for q in questions:
        hits = search(q.stem, prompts_cfg.top_k) if search and prompts_cfg.top_k else []
        system = system_for(tokenizer, q) if system_for and not q.is_mcq else ""
        prompt = format_prompt(tokenizer, user_prompt(q, hits, prompts_cfg), system)
        cloze = format_prompt(tokenizer, cloze_prompt(q, hits, prompts_cfg)) if q.is_mcq else ""
        bare = format_prompt(tokenizer, cloze_prompt(q, [], prompts_cfg)) if q.is_mcq else ""
        key = hashlib.sha256(json.dumps([salt, q.id, prompt, cloze]).encode()).hexdigest()[:20]
        items.append(Item(q, prompt, hits, key, cloze, bare))
    return items


class Budget:
    """Projects the run's total time after each batch and steps the mode down when it would overrun."""

    def __init__(self, total_s: float, n_questions: int, start: float | None = None, clock=time.perf_counter):
        self.total_s, self.n, self.clock = total_s, n_questions, clock
        self.start = clock() if start is None else start
        self.mode = "full"
        self.done = 0
        self.rate: dict[str, tuple[float, int]] = {}
        self.switches: list[dict] = []

    def record(self, mode: str, seconds: float, count: int) -> None:
        s, c = self.rate.get(mode, (0.0, 0))
        self.rate[mode] = (s + seconds, c + count)
        self.done += count
        self.check()

    def projected(self) -> float:
        s, c = self.rate.get(self.mode, (0.0, 0))
        per_q = s / c if c else 0.0
        return (self.clock() - self.start) + (self.n - self.done) * per_q

    def check(self) -> None:
        while self.mode != "fallback" and self.done < self.n and self.projected() > self.total_s:
            projected = self.projected()
            self.mode = MODES[MODES.index(self.mode) + 1]
            self.switches.append({"after_questions": self.done, "to": self.mode, "projected_s": round(projected, 1)})
            log.warning("time budget %.0f s: projected %.0f s after %d of %d questions; switching to %s mode",
                        self.total_s, projected, self.done, self.n, self.mode)
            if self.mode not in self.rate:  # no observation of the new mode yet
                break


class AnswerCache:
    """Answers by cache key, appended a batch at a time (flushed and fsynced) so a crash loses at
    most the batch in flight."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                self.records[rec["key"]] = rec

    def get(self, key: str) -> dict | None:
        rec = self.records.get(key)
        # the model failed or was not asked, and the context answered: asked again on a rerun
        if rec is None or (rec.get("fallback") in RETRIED and rec.get("source") == "context"):
            return None
        return rec

    def put(self, recs: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
            f.flush()
            os.fsync(f.fileno())
        self.records.update((r["key"], r) for r in recs)


@dataclass
class Answerer:
    backend: object
    cfg: AnswerConfig
    budget: Budget | None = None
    cache: AnswerCache | None = None
    fast_max_tokens: int = 0
    stats: dict = field(default_factory=lambda: {"cached": 0})
    cached_keys: set = field(default_factory=set)
    breaker: Breaker | None = None

    def __post_init__(self) -> None:
        if self.breaker is None:
            self.breaker = Breaker(self.cfg.breaker_failures, self.cfg.breaker_cooldown)

    def _call(self, fn, questions: int, what: str):
        """``fn()`` through the breaker, with the hard limit of ``questions`` questions."""
        return self.breaker.call(fn, self.cfg.question_timeout_s * questions + self.cfg.call_grace_s, what)

    def run(self, items: list[Item]) -> list[dict]:
        """One record per item, in item order."""
        out: dict[str, dict] = {}
        for start in range(0, len(items), self.cfg.batch_size):
            batch = items[start:start + self.cfg.batch_size]
            todo = []
            for it in batch:
                hit = self.cache.get(it.key) if self.cache else None
                if hit:
                    out[it.key] = hit
                    self.stats["cached"] += 1
                    self.cached_keys.add(it.key)
                else:
                    todo.append(it)
            if not todo:
                continue
            mode = self.budget.mode if self.budget else "full"
            t = time.perf_counter()
            recs = self._answer(todo, mode)
            if self.budget:
                self.budget.record(mode, time.perf_counter() - t, len(todo))
            if self.cache:
                self.cache.put(recs)
            out.update((r["key"], r) for r in recs)
            log.info("answered %d/%d (%s mode)", min(start + len(batch), len(items)), len(items), mode)
        return [out[it.key] for it in items]

    # -- one batch ---------------------------------------------------------------------------
    def _answer(self, items: list[Item], mode: str) -> list[dict]:
        recs = {}
        mcq = [it for it in items if it.q.is_mcq]
        opn = [it for it in items if not it.q.is_mcq]
        if mode == "fallback":
            for it in items:
                recs[it.key] = self._fallback(it, "budget", mode, 0.0)
        else:
            if mcq and (self.cfg.mcq_mode != "generate" or mode == "fast"):
                for it in mcq:
                    recs[it.key] = self._choose(it, mode)
            elif mcq:
                recs.update(self._generate_mcq(mcq, mode))
            if opn:
                recs.update(self._generate_open(opn, mode))
        return [recs[it.key] for it in items]

    def _record(self, it: Item, mode: str, answer: str, seconds: float, **extra) -> dict:
        rec = {"key": it.key, "id": it.q.id, "type": "mcq" if it.q.is_mcq else "open",
               "n_options": len(it.q.options), "answer": answer, "confidence": None, "fallback": None,
               "source": "model", "mode": mode, "seconds": round(seconds, 4)}
        rec.update(extra)
        return rec

    def _choose(self, it: Item, mode: str, reason: str | None = None, spent: float = 0.0) -> dict:
        """The option the model scores highest (``mcq_mode``; generate mode falls back to ``option``)."""
        t = time.perf_counter()
        how = self.cfg.mcq_mode if self.cfg.mcq_mode != "generate" else GENERATE_FALLBACK
        both = {}
        try:
            if how == "loglik":
                lps = self._call(lambda: option_scores(self.backend, it.prompt, it.bare, it.q.options, how), 1,
                                 "option scoring")
            else:  # both text scorings (the bare prompt is short): the record shows what the other would pick
                both = self._call(lambda: text_scores(self.backend, it.cloze, it.bare, it.q.options), 1,
                                  "option scoring")
                lps = both[how]
        except Exception as e:  # the model failed, hung or is not asked: nothing left but the context
            if _reason(e) != "breaker_open":
                log.warning("%s: option scoring failed (%s); answering from the retrieved context", it.q.id, e)
            # the first cause stays the record's reason (a generation that timed out, then a refusal)
            first = reason if reason in ("timeout", "error", "breaker_open") else _reason(e)
            return self._fallback(it, first, mode, spent + time.perf_counter() - t)
        top = max(lps)
        probs = [math.exp(x - top) for x in lps]
        choice = best(lps)
        return self._record(it, mode, str(choice), spent + time.perf_counter() - t,
                            confidence=round(probs[choice - 1] / sum(probs), 4), fallback=reason,
                            **({"choice_by": {k: best(v) for k, v in both.items()}} if both else {}))

    def _generate(self, items: list[Item], max_tokens: int,
                  penalty: float = 0.0) -> tuple[list[dict] | None, float, str | None]:
        """(outputs or None, seconds per question, why there are none)."""
        sp = SamplingConfig(temperature=0.0, max_tokens=max_tokens, frequency_penalty=penalty)
        t = time.perf_counter()
        outs, reason = None, None
        try:
            outs = self._call(lambda: self.backend.generate([it.prompt for it in items], sp, seed=0,
                                                            max_time=self.cfg.question_timeout_s * len(items)),
                              len(items), "generation")
        except Exception as e:
            reason = _reason(e)
            if reason != "breaker_open":
                log.warning("generation failed for %d question(s) (%s); falling back", len(items), e)
        return outs, (time.perf_counter() - t) / len(items), reason

    def _generate_mcq(self, items: list[Item], mode: str) -> dict[str, dict]:
        outs, per_q, why = self._generate(items, self.cfg.mcq_max_tokens)
        recs = {}
        for i, it in enumerate(items):
            if outs is None:  # the option scoring goes through the breaker too (open: the context)
                recs[it.key] = self._choose(it, mode, reason=why, spent=per_q)
                continue
            text, finish = outs[i]["text"], outs[i]["finish_reason"]
            choice = extract_choice(text, len(it.q.options))
            if choice is None:
                reason = "timeout" if finish == "time" else "no_choice"
                recs[it.key] = {**self._choose(it, mode, reason=reason, spent=per_q), "generated": text}
            else:
                recs[it.key] = self._record(it, mode, str(choice), per_q, generated=text, finish_reason=finish)
        return recs

    def _generate_open(self, items: list[Item], mode: str) -> dict[str, dict]:
        tokens = self.fast_max_tokens if mode == "fast" and self.fast_max_tokens else self.cfg.max_tokens
        outs, per_q, why = self._generate(items, tokens, self.cfg.frequency_penalty)
        recs = {}
        for i, it in enumerate(items):
            if outs is None:
                recs[it.key] = self._fallback(it, why, mode, per_q)
                continue
            text = " ".join(outs[i]["text"].split())
            # before the join: a loop of lines counts
            problem = open_answer_problem(outs[i]["text"]) or non_answer(text, it.q.stem)
            if outs[i]["finish_reason"] == "time":  # an answer cut off by the limit is incomplete
                recs[it.key] = self._fallback(it, "timeout", mode, per_q)
            elif problem:  # says nothing (empty, punctuation, no Hangul, a loop, too short, an echo): keep it
                recs[it.key] = {**self._fallback(it, f"degenerate:{problem}", mode, per_q), "generated": text,
                                "finish_reason": outs[i]["finish_reason"]}
            else:
                recs[it.key] = self._record(it, mode, text, per_q, finish_reason=outs[i]["finish_reason"])
        return recs

    def _fallback(self, it: Item, reason: str, mode: str, spent: float) -> dict:
        t = time.perf_counter()
        if it.q.is_mcq:
            choice, conf = option_by_overlap(it.q, it.hits)
            return self._record(it, mode, str(choice), spent + time.perf_counter() - t,
                                confidence=round(conf, 4), fallback=reason, source="context")
        return self._record(it, mode, answer_from_context(it.q, it.hits), spent + time.perf_counter() - t,
                            fallback=reason, source="context")


def _reason(e: Exception) -> str:
    return "breaker_open" if isinstance(e, BreakerOpen) else "timeout" if isinstance(e, CallTimeout) else "error"


# settings that never change an answer the model gave: kept out of the cache key
NOT_IN_KEY = ("call_grace_s", "breaker_failures", "breaker_cooldown", "seed")


def settings_salt(model_fingerprint: str, cfg: AnswerConfig) -> str:
    """What an answer depends on besides the question: the model and the answering settings."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_KEY}
    return json.dumps([model_fingerprint, settings], sort_keys=True)
