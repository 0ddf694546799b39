"""Reward functions for GRPO: the DAPO rule verifier (JustRL, DAPO) and the Open-RS rewards, ready for TRL.

What is here (facts: ../shared/reference/recipes.md, sections 2 and 4):
  dapo_verify, dapo_score    verl's math_dapo scorer: strict-box mode (JustRL) or "Answer:" mode (DAPO); +1 / -1
  extract_boxed              content of the last \\boxed{...}, brace matched
                             (these two live in reasonrl/grading/answers.py, shared with the graders; re-exported here)
  make_dapo_reward           TRL reward built on dapo_verify; logs "accuracy" whatever the reward scale
  robust                     eval.py's symbolic grader as a reward (JustRL's "robust verifier" ablation;
                             reasonrl/grading/grader.py)
  make_overlong_penalty      DAPO's soft overlong penalty, in tokens (the JustRL ablation)
  code                       AceReason's test-case reward for programs, run in a sandbox
                             (reasonrl/sandbox/code_reward.py, reasonrl/sandbox/runner.py)
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

from latex2sympy2_extended import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify

from reasonrl.grading.answers import (  # noqa: F401  re-exported: reward.extract_boxed etc. keep working
    ANSWER_PATTERN, REMOVED_EXPRESSIONS, SUBSTITUTIONS, as_text, check_solutions, completion_text, dapo_score,
    dapo_verify, extract_boxed, log_accuracy, normalize_final_answer)
from reasonrl.timelimit import TimeLimitExceeded, run_with_time_limit  # noqa: F401  re-exported


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
        return run_with_time_limit(_math_verify, timeout_s, as_text(completion), as_text(gold))
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
    "robust": "reasonrl.grading.grader.make_robust_reward",  # by path: only recipes that use it load the grader
    "overlong": make_overlong_penalty,
    "format": make_format_reward,
    "accuracy": make_accuracy_reward,
    "cosine": make_cosine_reward,
    "code": "reasonrl.sandbox.code_reward.make_code_reward",  # by path: only code recipes import the sandbox
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
