"""The circuit breaker of the answer path (fsku/predict/breaker.py), driven through the Answerer with
backends that hang (a real sleep that ignores every time limit, as vLLM and the option scorings do)
and that fail, then recover. Every question is answered either way."""

import time

from fsku.predict.answer import AnswerCache, Answerer, Item
from fsku.predict.config import PredictConfig
from fsku.questions import Question

ANSWER = "이용자는 접근매체를 분실한 때 즉시 금융회사에 통지하여야 한다."
HITS = [{"chunk_id": "c", "source": "s", "text": ANSWER + " 금융회사는 통지를 받은 때부터 손해를 배상한다."}]


class HangingBackend:
    """Every model call sleeps ``hang_s`` before it answers, whatever limit it is given."""

    def __init__(self, hang_s: float):
        self.hang_s, self.calls = hang_s, 0

    def _wait(self):
        self.calls += 1
        time.sleep(self.hang_s)

    def generate(self, prompts, sp, seed=0, max_time=None):
        self._wait()
        return [{"text": ANSWER, "finish_reason": "stop"} for _ in prompts]

    def continuation_logprobs(self, prompts, continuations):
        self._wait()
        return [[0.0] * len(c) for c in continuations]


class FlakyBackend:
    """Its first ``fail`` model calls raise, as a device reset would; then it answers."""

    def __init__(self, fail: int):
        self.fail, self.calls = fail, 0

    def generate(self, prompts, sp, seed=0, max_time=None):
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("device lost")
        return [{"text": ANSWER, "finish_reason": "stop"} for _ in prompts]


def _open(i):
    return Item(Question(f"O{i}", "", "접근매체 분실 시 이용자의 의무를 설명하세요.", []), f"prompt O{i}", HITS,
                key=f"O{i}")


def _mcq(i):
    q = Question(f"M{i}", "", "분실 시 통지 대상은?", ["금융회사", "경찰", "이웃", "가족"])
    return Item(q, f"prompt M{i}", HITS, key=f"M{i}", cloze="cloze", bare="bare")


def test_a_hanging_model_is_abandoned_at_its_limit_and_then_not_called():
    """The model sleeps 10 s on its first call and ignores every limit. The first question waits its
    hard limit (0.15 s) and falls back; the second waits as long for the abandoned call, in vain,
    which is the second failure in a row: the breaker opens. Two questions go to the fallback
    unasked (the cool-down), then a trial call finds the model still busy and the breaker reopens."""
    backend = HangingBackend(hang_s=10.0)
    cfg = PredictConfig(question_timeout_s=0.05, call_grace_s=0.1, breaker_failures=2, breaker_cooldown=2,
                        batch_size=1, mcq_mode="loglik")  # loglik scoring: no limit of its own
    answerer = Answerer(backend, cfg)
    started = time.perf_counter()
    records = answerer.run([_open(1), _open(2), _mcq(1), _open(3), _mcq(2)])
    assert time.perf_counter() - started < 5.0  # five hard limits of 0.15 s, not the 10 s hang
    assert [r["fallback"] for r in records] == ["timeout", "timeout", "breaker_open", "breaker_open", "timeout"]
    assert all(r["source"] == "context" for r in records)
    assert "접근매체" in records[0]["answer"] and records[2]["answer"] == "1"  # the option the context names
    assert backend.calls == 1  # the model was never called again while busy
    summary = answerer.breaker.summary()
    assert (summary["state"], summary["calls"], summary["abandoned"], summary["refused"]) == ("open", 3, 1, 2)
    assert [(t["call"], t["from"], t["to"]) for t in summary["transitions"]] == \
        [(2, "closed", "open"), (2, "open", "half_open"), (3, "half_open", "open")]


def test_a_failing_model_opens_the_breaker_and_a_trial_call_closes_it():
    backend = FlakyBackend(fail=3)
    answerer = Answerer(backend, PredictConfig(breaker_failures=2, breaker_cooldown=1, batch_size=1))
    records = answerer.run([_open(i) for i in range(1, 8)])
    assert [r["fallback"] for r in records] == ["error", "error", "breaker_open", "error", "breaker_open", None, None]
    assert records[5]["answer"] == ANSWER and backend.calls == 5
    moves = [(t["call"], t["from"], t["to"]) for t in answerer.breaker.summary()["transitions"]]
    assert moves == [(2, "closed", "open"), (2, "open", "half_open"), (3, "half_open", "open"),
                     (3, "open", "half_open"), (4, "half_open", "closed")]


class BadOptionsBackend(FlakyBackend):
    """Option scoring refuses its first ``fail`` questions' input (as options too long to score
    are); the model itself is fine."""

    def option_logprobs(self, prompts, options):
        self.calls += 1
        if self.calls <= self.fail:
            raise ValueError("options too long to score within max_model_len 64")
        return [[[-1.0 - i] for i in range(len(opts))] for opts in options]


def test_a_question_that_cannot_be_scored_is_no_failure_of_the_model():
    backend = BadOptionsBackend(fail=4)
    answerer = Answerer(backend, PredictConfig(breaker_failures=2, batch_size=1, mcq_mode="option"))
    records = answerer.run([_mcq(i) for i in range(1, 7)])
    assert [r["fallback"] for r in records] == ["error"] * 4 + [None, None]
    assert answerer.breaker.summary()["transitions"] == [] and backend.calls == 6


def test_a_resumed_run_asks_the_model_again_for_what_the_context_answered(tmp_path):
    cache = AnswerCache(tmp_path / "answers.jsonl")
    cache.put([{"key": "a", "fallback": "breaker_open", "source": "context"},
               {"key": "b", "fallback": "error", "source": "context"},
               {"key": "c", "fallback": "error", "source": "model"},  # generation failed, scoring answered
               {"key": "d", "fallback": "timeout", "source": "context"}, {"key": "e", "fallback": None}])
    again = AnswerCache(tmp_path / "answers.jsonl")
    assert [again.get(k) is None for k in "abcde"] == [True, True, False, False, False]


def test_a_run_answered_mostly_by_the_fallback_says_so():
    """Past a quarter of the questions abandoned (timeout, error, open breaker), the run names what
    happened and the settings that decide it; degenerate answers and a quarter exactly do not count."""
    from fsku.predict.config import AnswerConfig
    from fsku.predict.health import abandoned, abandoned_problem

    cfg = AnswerConfig(question_timeout_s=60.0, call_grace_s=30.0)
    records = [{"fallback": f} for f in ("timeout", "breaker_open", None, "degenerate:echo")]
    assert abandoned(records) == {"count": 2, "share": 0.5}
    problem = abandoned_problem(records, "models/teacher", 92.4, cfg)
    assert problem.startswith("models/teacher: 2 of 4 answers came from the retrieved context")
    assert "question_timeout_s 60.0" in problem and "took 92.4 s a question" in problem
    assert "CPU kernels" in problem
    quarter = [{"fallback": "error"}, {"fallback": None}, {"fallback": None}, {"fallback": None}]
    assert abandoned_problem(quarter, "m", None, cfg) is None
    assert abandoned([]) == {"count": 0, "share": None} and abandoned_problem([], "m", None, cfg) is None
