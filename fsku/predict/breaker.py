"""A circuit breaker around every model call of the answer path.

Each call (a generation batch, one question's option scoring) runs in a worker thread and is given
a hard limit: its questions' time (``question_timeout_s`` each) plus ``call_grace_s``. Generation
also gets the soft limit itself (transformers stops at ``max_time``), but vLLM and the option
scorings have none, and a wedged device never returns: past the hard limit the caller stops
waiting, the question is answered by the fallback, and the call is left to finish in the
background (a Python thread cannot be killed; it is a daemon, so it never holds the process).

The breaker has state. ``breaker_failures`` consecutive failures or timeouts open it: the model is
not called again and every question is answered by the fallback. After ``breaker_cooldown_s`` it
half-opens: the next call is a trial, which closes it on success and opens it again on failure.
While an abandoned call still runs the model is busy: no other call starts, whatever the state, and
those questions fall back too (``breaker_open``). Every transition is recorded (``summary``: the
eval rows' and ``metrics/predict.json``'s ``breaker``), numbered by model call, without clock times,
so a rerun that meets the same events records the same transitions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class BreakerOpen(RuntimeError):
    """The breaker is open: the model is not asked."""


class CallTimeout(RuntimeError):
    """A model call ran past its hard limit and was abandoned."""


class Breaker:
    def __init__(self, failures: int = 3, cooldown_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self.state = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self.calls = 0           # model calls started
        self.refused = 0         # calls refused while open
        self.abandoned = 0       # calls past their hard limit
        self.transitions: list[dict] = []
        self._running: threading.Thread | None = None  # the last abandoned call, while it runs

    def _move(self, to: str, reason: str) -> None:
        self.transitions.append({"call": self.calls, "from": self.state, "to": to, "reason": reason})
        log.warning("circuit breaker %s -> %s after model call %d: %s", self.state, to, self.calls, reason)
        self.state = to
        if to == "open":
            self.opened_at = self.clock()

    def _admit(self) -> None:
        if self._running is not None and self._running.is_alive():  # the model is still busy with it
            self.refused += 1
            raise BreakerOpen("an abandoned model call is still running")
        self._running = None
        if self.state != "open":
            return
        if self.clock() - self.opened_at < self.cooldown_s:
            self.refused += 1
            raise BreakerOpen("circuit breaker open")
        self._move("half_open", f"cool-down of {self.cooldown_s:g} s over: one trial call")

    def _failed(self, why: str) -> None:
        self.consecutive += 1
        if self.state == "half_open":
            self._move("open", f"trial call failed ({why})")
        elif self.state == "closed" and self.consecutive >= self.failures:
            self._move("open", f"{self.consecutive} consecutive failed model calls (last: {why})")

    def call(self, fn: Callable[[], T], limit_s: float, what: str = "model call") -> T:
        """``fn()``'s result; raises BreakerOpen without calling it when open, CallTimeout past
        ``limit_s`` seconds, or what ``fn`` raised. Only one call runs at a time."""
        self._admit()
        self.calls += 1
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
            self._failed(f"error: {type(box['error']).__name__}")
            raise box["error"]
        self.consecutive = 0
        if self.state == "half_open":
            self._move("closed", "trial call answered")
        return box["value"]

    def summary(self) -> dict:
        return {"state": self.state, "calls": self.calls, "refused": self.refused, "abandoned": self.abandoned,
                "transitions": self.transitions}
