"""Reward functions for GRPO: the DAPO rule verifier (JustRL, DAPO) and the Open-RS rewards, ready for TRL.

What is here (facts: ../shared/reference/recipes.md, sections 2 and 4):
  dapo_verify, dapo_score    verl's math_dapo scorer: strict-box mode (JustRL) or "Answer:" mode (DAPO); +1 / -1
  extract_boxed              content of the last \\boxed{...}, brace matched (grading.py uses it too)
  make_dapo_reward           TRL reward built on dapo_verify; logs "accuracy" whatever the reward scale
  robust (grading.py)        eval.py's symbolic grader as a reward (JustRL's "robust verifier" ablation)
  make_overlong_penalty      DAPO's soft overlong penalty, in tokens (the JustRL ablation)
  code (code_reward.py)      AceReason's test-case reward for programs, run in sandbox.py (code_reward.py)
  format_reward, make_accuracy_reward, make_cosine_reward    Open-RS, correctness by math-verify
  REWARDS, load_reward_funcs how a recipe names its rewards

A recipe lists reward names; each is a short name from REWARDS or a dotted path to your own function
(`my_rewards.length_bonus`, importable from the working directory), with optional keyword arguments per name:
    load_reward_funcs(["dapo", "overlong"], {"overlong": {"max_completion_length": 15360}})
Per-reward weights are TRL's GRPOConfig.reward_weights (one per name, same order); nothing here handles them.
Every reward is f(completions, solution, **kwargs) -> list[float | None]: TRL passes the dataset columns as
keywords, and train_grpo.py maps the dataset's answer column onto `solution`. None means "skip this sample".

Test: python -m pytest tests/test_reward.py -q
"""

import functools
import importlib
import inspect
import math
import re
import signal
import threading
import time

from latex2sympy2_extended import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify

# ---------------------------------------------------------------- DAPO rule verifier (verl math_dapo)

# verl's order, which JustRL and DAPO ran. recipes.md lists the same pairs in another order, and order matters:
# "\ " must go before " " or "8\ 000" normalises to "8\000" instead of "8000".
SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]
REMOVED_EXPRESSIONS = [
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
    "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
    "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;",
    ",\\!", "{,}", '"', "\\dots",
]
ANSWER_PATTERN = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
_DOLLAR_SPAN = re.compile(r"(.*?)(\$)(.*?)(\$)(.*)")
_UNWRAPS = [re.compile(p) for p in (r"(\\text\{)(.*?)(\})", r"(\\textbf\{)(.*?)(\})",
                                    r"(\\overline\{)(.*?)(\})", r"(\\boxed\{)(.*)(\})")]


def _as_text(value) -> str:
    # The verifier must never raise: None, numbers from a parquet column or bytes still get a verdict.
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def extract_boxed(text: str) -> str | None:
    """Content of the LAST `\\boxed{` in text up to its matching brace; None if there is none or it is unclosed.

    Like verl, an unclosed last box does not fall back to an earlier one, and "\\boxed 5" is not a box.
    Braces are counted literally (an escaped "\\{" counts too). Linear time.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for brace in re.finditer(r"[{}]", text[start + len("\\boxed"):]):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return text[start + len("\\boxed{"): start + len("\\boxed") + brace.start()]
    return None


def _each_line(text: str, edit) -> str:
    # verl applies its regexes to the whole string, but "." never crosses a newline, so line by line is the same.
    return "\n".join(edit(line) for line in text.split("\n"))


def _first_dollar_span(line: str) -> str:
    # Without two "$" the regex cannot match; skipping such lines keeps a hostile ground truth linear.
    return _DOLLAR_SPAN.sub(r"$\3$", line) if line.count("$") >= 2 else line


def _unwrap(pattern: re.Pattern, line: str) -> str:
    # Every match ends at a "}", so nothing after the line's last "}" can change; leaving that tail out of the
    # regex makes each attempt succeed, which keeps a line of 100k unclosed "\text{" linear, not quadratic.
    end = line.rfind("}") + 1
    return pattern.sub(r"\2", line[:end]) + line[end:]


def normalize_final_answer(answer: str) -> str:
    """verl's Minerva/Hendrycks normalisation (math_dapo.normalize_final_answer), same output, linear time."""
    answer = _as_text(answer).split("=")[-1]
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in REMOVED_EXPRESSIONS:
        answer = answer.replace(expression, "")
    answer = _each_line(answer, _first_dollar_span)
    for pattern in _UNWRAPS:
        answer = _each_line(answer, functools.partial(_unwrap, pattern))
    answer = re.sub(r"(frac)([^{])(.)", r"frac{\2}{\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", r"sqrt{\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer.strip()


def dapo_verify(response: str, ground_truth: str, strict_box: bool = True) -> dict:
    """verl's math_dapo.compute_score: {"score": +1.0 or -1.0, "acc": bool, "pred": str | None}.

    Only the last 300 characters are read (the last 100 in strict-box mode), sliced before any scan, so the
    cost does not grow with the response. Strict box compares the boxed text with ground_truth as is;
    "Answer:" mode normalises both sides. Non-str inputs are read as text (None -> "").
    """
    tail = _as_text(response)[-300:]
    ground_truth = _as_text(ground_truth)
    if strict_box:
        # No box -> pred None, as in verl 0.4 (JustRL's fork). Later verl reports "[INVALID]", which differs
        # only by scoring a ground truth of "[INVALID]" as correct.
        pred = extract_boxed(tail[-100:])
        correct = pred is not None and pred == ground_truth
    else:
        # findall, as verl: matches do not overlap, so "Answer: 3 Answer: 7" on one line is one match.
        matches = ANSWER_PATTERN.findall(tail)
        pred = normalize_final_answer(matches[-1] if matches else "[INVALID]")
        correct = pred == normalize_final_answer(ground_truth)
    return {"score": 1.0 if correct else -1.0, "acc": correct, "pred": pred}


def dapo_score(response: str, ground_truth: str, strict_box: bool = True) -> float:
    """+1.0 if the DAPO rule verifier accepts the response, else -1.0 (see dapo_verify)."""
    return dapo_verify(response, ground_truth, strict_box)["score"]


# ---------------------------------------------------------------- helpers shared by the TRL rewards

def completion_text(completion) -> str:
    """The text of a TRL completion: a string, or the last assistant message of a conversation."""
    if isinstance(completion, list):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                content = message.get("content")
                if isinstance(content, list):  # multimodal content parts
                    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
                return _as_text(content)
        return ""
    return _as_text(completion)


def check_solutions(solution, completions, reward_name: str) -> list:
    if solution is None:
        raise ValueError(f"reward '{reward_name}' needs the ground truth in a dataset column named 'solution'; "
                         "map your dataset's answer column onto 'solution'")
    if len(solution) != len(completions):
        raise ValueError(f"reward '{reward_name}': {len(completions)} completions but {len(solution)} solutions")
    return list(solution)


def log_accuracy(kwargs: dict, verdicts: list) -> None:
    # TRL averages each named metric per logging step; two correctness rewards in one run share the series.
    log_metric = kwargs.get("log_metric")
    scored = [v for v in verdicts if v is not None]
    if callable(log_metric) and scored:
        log_metric("accuracy", sum(scored) / len(scored))


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


# Open-RS's completion parser settings: LaTeX only, \boxed first, no bare-number fallback.
_ANSWER_EXTRACTION = [LatexExtractionConfig(
    normalization_config=NormalizationConfig(nits=False, malformed_operators=False, basic_latex=True,
                                             equations=True, boxed="all", units=True),
    boxed_match_priority=0, try_extract_without_anchor=False)]


def _math_verify(completion: str, gold: str) -> bool | None:
    # Open-RS parsed the gold answer with LaTeX extraction only, which cannot read a bare "12"; math-verify's
    # default extractors (LaTeX + plain expressions) can. verify(gold, answer) is math-verify's documented order
    # (Open-RS passed them swapped; it matters only for equations and intervals). Our timer replaces
    # math-verify's own (None), which would reset the same SIGALRM timer.
    gold_parsed = parse(gold, parsing_timeout=None)
    if not gold_parsed:
        return None
    answer_parsed = parse(completion, extraction_config=_ANSWER_EXTRACTION, extraction_mode="first_match",
                          parsing_timeout=None)
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def math_verify_correct(completion: str, gold: str, timeout_s: float = 5.0) -> bool | None:
    """math-verify's verdict on a completion; None if the gold answer cannot be parsed, False past timeout_s."""
    try:
        return run_with_time_limit(_math_verify, timeout_s, _as_text(completion), _as_text(gold))
    except TimeLimitExceeded:
        return False
    except Exception:  # a parser bug on odd text must not stop training: count it as not verified
        return False


# ---------------------------------------------------------------- TRL reward factories

def make_dapo_reward(correct: float = 1.0, incorrect: float = -1.0, strict_box: bool = True):
    """DAPO rule verifier as a TRL reward: `correct` / `incorrect` per completion; logs "accuracy"."""
    name = "dapo_reward" if strict_box else "dapo_answer_reward"

    def dapo_reward(completions, solution=None, **kwargs):
        solutions = check_solutions(solution, completions, name)
        verdicts = [dapo_verify(completion_text(c), s, strict_box)["acc"] for c, s in zip(completions, solutions)]
        log_accuracy(kwargs, verdicts)
        return [correct if ok else incorrect for ok in verdicts]

    dapo_reward.__name__ = dapo_reward.__qualname__ = name
    return dapo_reward


def make_overlong_penalty(max_completion_length: int, buffer_length: int = 4096, penalty_factor: float = 1.0):
    """DAPO's soft overlong penalty: 0 up to max_completion_length - buffer_length tokens, then falling linearly
    to -penalty_factor at max_completion_length: min(-(L - (L_max - B)) / B * factor, 0), L in tokens."""
    if not 0 < buffer_length <= max_completion_length:
        raise ValueError(f"overlong penalty: buffer_length ({buffer_length}) must be > 0 and at most "
                         f"max_completion_length ({max_completion_length})")
    expected_length = max_completion_length - buffer_length

    def overlong_penalty(completions=None, completion_ids=None, **kwargs):
        if completion_ids is None:
            raise ValueError("overlong penalty needs completion_ids (token ids), which GRPOTrainer passes")
        return [min(-(len(ids) - expected_length) / buffer_length * penalty_factor, 0.0) for ids in completion_ids]

    return overlong_penalty


def format_reward(completions, **kwargs) -> list[float]:
    """Open-RS format reward: 1.0 iff the completion holds exactly one "\\n</think>\\n" (str.count, which does
    not count overlapping occurrences), else 0.0."""
    return [1.0 if completion_text(c).count("\n</think>\n") == 1 else 0.0 for c in completions]


def make_accuracy_reward(timeout_s: float = 5.0):
    """Open-RS accuracy: 1.0 / 0.0 by math-verify, None (skipped by TRL) when the gold answer does not parse.
    Each completion gets at most timeout_s seconds; past that it scores 0.0."""
    if not timeout_s > 0:
        raise ValueError(f"accuracy reward: timeout_s must be > 0, got {timeout_s}")

    def accuracy_reward(completions, solution=None, **kwargs):
        solutions = check_solutions(solution, completions, "accuracy_reward")
        verdicts = [math_verify_correct(completion_text(c), s, timeout_s) for c, s in zip(completions, solutions)]
        log_accuracy(kwargs, verdicts)
        return [None if ok is None else float(ok) for ok in verdicts]

    return accuracy_reward


def cosine_scaled(progress: float, short_value: float, long_value: float) -> float:
    """long + 0.5 * (short - long) * (1 + cos(pi * p)): short_value at p = 0, long_value at p = 1.
    p is clamped to [0, 1], so a completion longer than max_len scores like one of exactly max_len."""
    p = min(max(progress, 0.0), 1.0)
    return long_value + 0.5 * (short_value - long_value) * (1.0 + math.cos(math.pi * p))


def make_cosine_reward(max_len: int = 3584, correct_short: float = 1.0, correct_long: float = 0.5,
                       wrong_short: float = 0.0, wrong_long: float = -0.5, timeout_s: float = 5.0):
    """Open-RS cosine reward, p = characters / max_len: correct answers in [0.5, 1.0], wrong in [-0.5, 0.0],
    shorter is better for both. Open-RS/open-r1 config names: cosine_max_value_correct = correct_short,
    cosine_min_value_correct = correct_long, cosine_min_value_wrong = wrong_short (0.0; open-r1 maps it to the
    short end), cosine_max_value_wrong = wrong_long (-0.5). None when the gold answer does not parse."""
    if not max_len > 0 or not timeout_s > 0:
        raise ValueError(f"cosine reward: max_len ({max_len}) and timeout_s ({timeout_s}) must be > 0")

    def cosine_reward(completions, solution=None, **kwargs):
        solutions = check_solutions(solution, completions, "cosine_reward")
        texts = [completion_text(c) for c in completions]
        verdicts = [math_verify_correct(text, s, timeout_s) for text, s in zip(texts, solutions)]
        log_accuracy(kwargs, verdicts)
        return [None if ok is None else cosine_scaled(len(text) / max_len, *(
            (correct_short, correct_long) if ok else (wrong_short, wrong_long))) for text, ok in zip(texts, verdicts)]

    return cosine_reward


# ---------------------------------------------------------------- registry

def make_dapo_answer_reward(correct: float = 1.0, incorrect: float = -1.0):
    """The original DAPO verifier ("Answer:" line, normalised comparison)."""
    return make_dapo_reward(correct, incorrect, strict_box=False)


def make_format_reward():
    return format_reward


REWARDS = {
    "dapo": make_dapo_reward,
    "dapo_answer": make_dapo_answer_reward,
    "robust": "grading.make_robust_reward",  # by path: the grader imports this module, not the reverse
    "overlong": make_overlong_penalty,
    "format": make_format_reward,
    "accuracy": make_accuracy_reward,
    "cosine": make_cosine_reward,
    "code": "code_reward.make_code_reward",  # by path: only code recipes import the sandbox
}


def _check_arguments(target, arguments: dict, reward_name: str) -> None:
    parameters = inspect.signature(target).parameters
    named = [p.name for p in parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in arguments:
        if key not in named:
            raise ValueError(f"reward '{reward_name}': unknown argument '{key}'; it accepts: {', '.join(named)}")


def _import_callable(path: str):
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raised while importing
        raise ValueError(f"reward '{path}': cannot import module '{module_name}' ({error})") from error
    if not callable(getattr(module, attribute, None)):
        raise ValueError(f"reward '{path}': module '{module_name}' has no function '{attribute}'")
    return getattr(module, attribute)


def load_reward_funcs(names: list[str], kwargs: dict[str, dict] | None = None) -> list:
    """Reward functions for GRPOTrainer(reward_funcs=...), one per name, in order.

    A short name (see REWARDS) calls its factory with kwargs[name]. A dotted path `module.func` is imported:
    if func takes **kwargs it is a reward function (TRL always passes extra keywords) and kwargs[name] are bound
    with functools.partial, keeping its __name__; without **kwargs it cannot be a reward, so it is treated as a
    factory and called once with kwargs[name]. Everything is checked here so a typo fails at start-up.
    """
    kwargs = dict(kwargs or {})
    for name in kwargs:
        if name not in names:
            raise ValueError(f"reward arguments given for '{name}', which is not among the rewards {list(names)}")
    funcs = []
    for name in names:
        arguments = dict(kwargs.get(name) or {})
        if name in REWARDS:
            target, is_factory = REWARDS[name], True
            target = _import_callable(target) if isinstance(target, str) else target
        elif "." in name:
            target = _import_callable(name)
            is_factory = not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())
        else:
            raise ValueError(f"unknown reward '{name}'; known rewards: {', '.join(REWARDS)}, "
                             "or a dotted path to a function (my_module.my_reward)")
        _check_arguments(target, arguments, name)
        if is_factory:
            missing = [p.name for p in inspect.signature(target).parameters.values()
                       if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                       and p.name not in arguments]
            if missing:
                raise ValueError(f"reward '{name}': missing argument '{missing[0]}'")
            func = target(**arguments)
            if not callable(func):
                raise ValueError(f"reward '{name}': factory returned {type(func).__name__}, not a function")
        else:
            func = functools.update_wrapper(functools.partial(target, **arguments), target) if arguments else target
        funcs.append(func)
    return funcs
