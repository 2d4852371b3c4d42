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
    backend = HangingBackend(hang_s=0.5)
    cfg = PredictConfig(question_timeout_s=0.05, call_grace_s=0.1, breaker_failures=2, breaker_cooldown_s=3600,
                        batch_size=1, mcq_mode="loglik")
    answerer = Answerer(backend, cfg)
    started = time.perf_counter()
    first = answerer.run([_open(1)])          # abandoned after 0.15 s, still sleeping
    busy = answerer.run([_open(2)])           # the model is busy with it: not called
    time.sleep(1.0)
    second = answerer.run([_mcq(1)])          # loglik scoring has no limit of its own: abandoned too
    time.sleep(1.0)
    after = answerer.run([_open(3), _mcq(2)])  # two consecutive timeouts opened the breaker
    records = first + busy + second + after
    assert [r["fallback"] for r in records] == ["timeout", "breaker_open", "timeout", "breaker_open", "breaker_open"]
    assert all(r["source"] == "context" for r in records)
    assert "접근매체" in records[0]["answer"] and records[2]["answer"] == "1"  # the option the context names
    assert backend.calls == 2
    summary = answerer.breaker.summary()
    assert (summary["state"], summary["calls"], summary["abandoned"], summary["refused"]) == ("open", 2, 2, 3)
    assert [(t["call"], t["from"], t["to"]) for t in summary["transitions"]] == [(2, "closed", "open")]
    # each wait was the hard limit (0.15 s), not the hang: the two sleeps of this test are most of it
    assert time.perf_counter() - started < 2.0 + 2 * 0.5


def test_a_failing_model_opens_the_breaker_and_a_trial_call_closes_it():
    backend = FlakyBackend(fail=3)
    answerer = Answerer(backend, PredictConfig(breaker_failures=2, breaker_cooldown_s=0.3, batch_size=1))
    reasons = [r["fallback"] for i in (1, 2, 3) for r in answerer.run([_open(i)])]
    assert reasons == ["error", "error", "breaker_open"] and backend.calls == 2
    time.sleep(0.4)
    assert answerer.run([_open(4)])[0]["fallback"] == "error"  # the trial call fails: open again
    assert answerer.run([_open(5)])[0]["fallback"] == "breaker_open"
    time.sleep(0.4)
    recovered = answerer.run([_open(6), _open(7)])
    assert [r["fallback"] for r in recovered] == [None, None] and recovered[0]["answer"] == ANSWER
    moves = [(t["from"], t["to"]) for t in answerer.breaker.summary()["transitions"]]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open"),
                     ("half_open", "closed")]
    assert answerer.breaker.summary()["state"] == "closed" and backend.calls == 5


def test_a_resumed_run_asks_the_model_again_for_what_it_was_not_asked(tmp_path):
    cache = AnswerCache(tmp_path / "answers.jsonl")
    cache.put([{"key": "a", "fallback": "breaker_open"}, {"key": "b", "fallback": "error"},
               {"key": "c", "fallback": "timeout"}, {"key": "d", "fallback": None}])
    again = AnswerCache(tmp_path / "answers.jsonl")
    assert [again.get(k) is None for k in "abcd"] == [True, True, False, False]
