"""A time limit on one call (rewards, math-verify, the trainer's reward timeout): run_with_time_limit.

Test: python -m pytest tests/test_reward.py -q -k time_limit
"""

import signal
import threading
import time


class TimeLimitExceeded(BaseException):
    """Raised by run_with_time_limit. A BaseException so that math-verify's `except Exception` cannot swallow it."""


def run_with_time_limit(fn, seconds: float, *args):
    """fn(*args), or raise TimeLimitExceeded after `seconds` of wall time.

    In the main thread (where TRL calls reward functions) a SIGALRM interrupts fn. Signals cannot reach other
    threads, so there fn runs in a daemon thread that we stop waiting for: a runaway check then keeps one
    abandoned thread busy instead of stalling training.
    """
    if not seconds > 0:
        raise ValueError(f"time limit must be > 0 seconds, got {seconds}")
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum, frame):
            raise TimeLimitExceeded(f"gave up after {seconds} s")

        previous_handler = signal.signal(signal.SIGALRM, on_alarm)
        previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_delay > 0:  # re-arm a timer someone else had set (e.g. pytest-timeout)
                remaining = max(previous_delay - (time.monotonic() - started), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)
    outcome = []

    def worker():
        try:
            outcome.append((True, fn(*args)))
        except BaseException as error:  # handed to the caller below
            outcome.append((False, error))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise TimeLimitExceeded(f"gave up after {seconds} s (thread left running)")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
