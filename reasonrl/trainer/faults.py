"""Faults end the run instead of hanging it: a bounded vLLM client, a named collective time-out, a time limit on
each reward call (train_grpo.py's docstring, item 7).

Test: python -m pytest tests/test_faults.py -q
"""

import asyncio
import functools
import inspect
import os
import socket
from contextlib import contextmanager

from reasonrl.timelimit import TimeLimitExceeded, run_with_time_limit


def bound_requests(client, timeout_s: float) -> None:
    """Every request `client` (TRL's VLLMClient) sends gets `timeout_s` unless it names its own, and a read is never
    retried; a timeout or a refused connection raises, naming the server and the key.

    TRL's session retries a failed read 5 times: a generation that timed out would be sent again, so the real bound
    would be ~6x timeout_s and a slow server would get the same work again. Reads are not retried here (a response
    cut off or never sent ends the request); connection failures still are (TRL's 5, with back-off), since a request
    that never connected did no work. timeout_s bounds the connection and the wait for the response: the vLLM server
    sends nothing until a generation is done, so it bounds the generation."""
    for adapter in client.session.adapters.values():
        adapter.max_retries = adapter.max_retries.new(read=False)  # urllib3: False raises the read error at once
    request = client.session.request

    def request_with_timeout(method, url, **kwargs):
        kwargs.setdefault("timeout", timeout_s)
        try:
            return request(method, url, **kwargs)
        except OSError as error:  # requests' ConnectionError and Timeout are OSErrors
            raise RuntimeError(f"the vLLM server at {client.base_url} did not answer {method} {url} "
                               f"({type(error).__name__}: {error}); timeout {kwargs['timeout']} s "
                               "(vllm_request_timeout_s). Is it still running? Relaunch to resume from the last "
                               "checkpoint.") from error

    client.session.request = request_with_timeout


@contextmanager
def collective_timeout_named(seconds: float):
    """gloo's collective time-out names milliseconds only ("Timed out waiting 5000ms ..."): re-raised naming the
    ddp_timeout key it comes from. (NCCL's watchdog aborts the process itself, printing "Timeout(ms)=...".)"""
    try:
        yield
    except RuntimeError as error:
        if "Timed out waiting" not in str(error):
            raise
        raise RuntimeError(f"rank {os.environ.get('RANK', '0')} ({socket.gethostname()}) waited longer than "
                           f"ddp_timeout={seconds:g} s in a collective: another process is stuck or dead. Find it in "
                           "the log; if it was busy on purpose, raise ddp_timeout. Relaunch to resume from the last "
                           f"checkpoint. ({error})") from error


def time_limited(reward_func, seconds: float):
    """reward_func, raising a RuntimeError that names it when one call takes longer than `seconds` (recipe key
    reward_timeout_s). A reward that hangs on one process would otherwise leave every other process waiting at the
    next collective until its 30-minute watchdog; this process fails instead, and the launcher stops the rest."""
    name = getattr(reward_func, "__name__", repr(reward_func))
    message = (f"reward '{name}' did not return within reward_timeout_s={seconds:g} s on rank "
               f"{os.environ.get('RANK', '0')} ({socket.gethostname()}); stopping so that no other process waits for "
               "it. Fix or speed up the reward (or raise reward_timeout_s), then relaunch: the run resumes from its "
               "last checkpoint.")
    if inspect.iscoroutinefunction(reward_func):  # TRL awaits async rewards together
        @functools.wraps(reward_func)
        async def limited_async(*args, **kwargs):
            try:
                return await asyncio.wait_for(reward_func(*args, **kwargs), seconds)
            except asyncio.TimeoutError:
                raise RuntimeError(message) from None

        return limited_async

    @functools.wraps(reward_func)
    def limited(*args, **kwargs):
        try:
            return run_with_time_limit(lambda: reward_func(*args, **kwargs), seconds)
        except TimeLimitExceeded:
            raise RuntimeError(message) from None

    return limited
