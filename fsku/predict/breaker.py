"""A circuit breaker around every model call of the answer path.

Each call (a generation batch, one question's option scoring) runs in a worker thread and is given
a hard limit: its questions' time (``question_timeout_s`` each) plus ``call_grace_s``. Generation
also gets the soft limit itself (transformers stops at ``max_time``), but vLLM and the option
scorings have none, and a wedged device never returns: past the hard limit the caller stops
waiting, the question is answered by the fallback, and the call is left to finish in the
background (a Python thread cannot be killed; it is a daemon, so it never holds the process).
Only one call runs at a time: the next call first waits for an abandoned one, up to its own limit;
if that runs out too, the next call has timed out as well.

The breaker has state. ``breaker_failures`` consecutive failed calls (past their limit, or raising
anything but a ``ValueError``, which is the question's own problem: options too long to score, say)
open it: the model is not called, and each question is answered by the fallback. The cool-down is
counted in questions, not seconds (a batch run answers a question from the fallback in
milliseconds, so a clock would let the whole run through while open): after
``breaker_cooldown`` calls refused, the next call is a trial, which closes the breaker on success
and opens it again on failure. Every transition is recorded (``summary``: the eval rows' and
``metrics/predict.json``'s ``breaker``), numbered by model call, with no clock times in it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class BreakerOpen(RuntimeError):
    """The breaker is open: the model is not asked."""


class CallTimeout(RuntimeError):
    """A model call ran past its hard limit and was abandoned (or never started: the model was still
    busy with an abandoned one)."""


class Breaker:
    def __init__(self, failures: int = 3, cooldown: int = 8):
        self.failures, self.cooldown = failures, cooldown
        self.state = "closed"
        self.consecutive = 0
        self.calls = 0           # model calls asked for (refused ones not counted)
        self.refused = 0         # calls refused while open
        self.abandoned = 0       # calls left running past their limit
        self.transitions: list[dict] = []
        self._waited = 0         # refusals in this open spell
        self._running: threading.Thread | None = None  # the last abandoned call, while it runs

    def _move(self, to: str, reason: str) -> None:
        self.transitions.append({"call": self.calls, "from": self.state, "to": to, "reason": reason})
        log.warning("circuit breaker %s -> %s at model call %d: %s", self.state, to, self.calls, reason)
        self.state, self._waited = to, 0
        if to == "closed":
            self.consecutive = 0

    def _failed(self, why: str) -> None:
        self.consecutive += 1
        if self.state == "half_open":
            self._move("open", f"trial call failed ({why})")
        elif self.state == "closed" and self.consecutive >= self.failures:
            self._move("open", f"{self.consecutive} consecutive failed model calls (last: {why})")

    def call(self, fn: Callable[[], T], limit_s: float, what: str = "model call") -> T:
        """``fn()``'s result. Raises BreakerOpen without calling it while open, CallTimeout past
        ``limit_s`` seconds (waiting for an abandoned call included), or what ``fn`` raised."""
        if self.state == "open":
            if self._waited < self.cooldown:
                self._waited += 1
                self.refused += 1
                raise BreakerOpen(f"circuit breaker open ({self._waited} of {self.cooldown} questions before a trial)")
            self._move("half_open", f"{self.cooldown} questions answered without the model: one trial call")
        self.calls += 1
        if self._running is not None:
            self._running.join(limit_s)  # the model is busy until the abandoned call ends
            if self._running.is_alive():
                self._failed("timeout")
                raise CallTimeout(f"{what}: the model is still busy with an abandoned call after {limit_s:.1f} s")
            self._running = None
        box: dict = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e
            finally:
                done.set()

        worker = threading.Thread(target=target, name=f"fsku-{what}", daemon=True)
        worker.start()
        if not done.wait(limit_s):
            self.abandoned += 1
            self._running = worker
            self._failed("timeout")
            raise CallTimeout(f"{what}: no result within {limit_s:.1f} s; left running, answered by the fallback")
        if "error" in box:
            error = box["error"]
            if isinstance(error, ValueError):  # this question's input, not the model: no failure of the model
                if self.state == "half_open":
                    self._move("closed", "trial call reached the model")
                raise error
            self._failed(f"error: {type(error).__name__}")
            raise error
        self.consecutive = 0
        if self.state == "half_open":
            self._move("closed", "trial call answered")
        return box["value"]

    def summary(self) -> dict:
        return {"state": self.state, "calls": self.calls, "refused": self.refused, "abandoned": self.abandoned,
                "transitions": self.transitions}
