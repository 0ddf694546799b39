"""reward.py as a specification: literal responses in, exact scores out.

Run: python -m pytest tests/test_reward.py -q
"""

import functools
import os
import random
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reward import (  # noqa: E402
    REWARDS,
    TimeLimitExceeded,
    completion_text,
    cosine_scaled,
    dapo_score,
    dapo_verify,
    extract_boxed,
    format_reward,
    load_reward_funcs,
    make_accuracy_reward,
    make_cosine_reward,
    make_dapo_reward,
    make_overlong_penalty,
    normalize_final_answer,
    run_with_time_limit,
)

MUST_NOT_HANG_S = 2.0


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


# ---------------------------------------------------------------- extract_boxed

def test_extract_boxed_returns_the_content():
    assert extract_boxed("so the answer is \\boxed{42}.") == "42"


def test_extract_boxed_matches_nested_braces():
    assert extract_boxed("\\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"


def test_extract_boxed_takes_the_last_box():
    assert extract_boxed("\\boxed{1} or rather \\boxed{2}") == "2"


def test_extract_boxed_does_not_fall_back_when_the_last_box_is_unclosed():
    assert extract_boxed("\\boxed{1} or rather \\boxed{2") is None


def test_extract_boxed_without_a_box_is_none():
    assert extract_boxed("the answer is 42") is None


def test_boxed_without_brace_is_not_a_box():
    assert extract_boxed("\\boxed 5") is None
    assert extract_boxed("\\boxed{3} then \\boxed 5") == "3"


def test_extract_boxed_of_an_empty_box_is_empty():
    assert extract_boxed("\\boxed{}") == ""


def test_extract_boxed_counts_escaped_braces_like_any_brace():
    assert extract_boxed("\\boxed{\\{1\\}}") == "\\{1\\}"


def test_extract_boxed_of_a_non_string_is_none():
    assert extract_boxed(None) is None


# ---------------------------------------------------------------- DAPO strict-box mode (JustRL)

def test_strict_box_correct():
    assert dapo_verify("so \\boxed{7}", "7") == {"score": 1.0, "acc": True, "pred": "7"}


def test_strict_box_wrong_reports_the_prediction():
    assert dapo_verify("so \\boxed{8}", "7") == {"score": -1.0, "acc": False, "pred": "8"}


def test_strict_box_compares_without_normalisation():
    assert dapo_verify("\\boxed{7.0}", "7") == {"score": -1.0, "acc": False, "pred": "7.0"}
    assert dapo_verify("\\boxed{ 7}", "7") == {"score": -1.0, "acc": False, "pred": " 7"}
    assert dapo_verify("\\boxed{$7$}", "7") == {"score": -1.0, "acc": False, "pred": "$7$"}


def test_strict_box_box_starting_100_chars_from_the_end_is_read():
    response = "a" * 400 + "\\boxed{7}" + "b" * 91
    assert len(response) - response.index("\\boxed{") == 100
    assert dapo_verify(response, "7") == {"score": 1.0, "acc": True, "pred": "7"}


def test_strict_box_box_starting_101_chars_from_the_end_is_cut_off():
    response = "a" * 400 + "\\boxed{7}" + "b" * 92
    assert dapo_verify(response, "7") == {"score": -1.0, "acc": False, "pred": None}


def test_strict_box_nested_braces():
    assert dapo_verify("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}")["acc"] is True


def test_strict_box_last_of_several_boxes_counts():
    assert dapo_verify("\\boxed{3} or rather \\boxed{7}", "7")["acc"] is True
    assert dapo_verify("\\boxed{3} or rather \\boxed{7}", "3")["acc"] is False


def test_strict_box_unclosed_box_is_incorrect():
    assert dapo_verify("\\boxed{7} or rather \\boxed{7", "7") == {"score": -1.0, "acc": False, "pred": None}


def test_strict_box_without_box_is_incorrect():
    assert dapo_verify("the answer is 7", "7") == {"score": -1.0, "acc": False, "pred": None}
    assert dapo_verify("\\boxed 7", "7") == {"score": -1.0, "acc": False, "pred": None}
    assert dapo_verify("Answer: 7", "7") == {"score": -1.0, "acc": False, "pred": None}


def test_dapo_score_is_the_score():
    assert dapo_score("\\boxed{7}", "7") == 1.0
    assert dapo_score("\\boxed{7}", "8") == -1.0
    assert dapo_score("Answer: 7", "7", strict_box=False) == 1.0


def test_non_string_inputs_are_read_as_text():
    assert dapo_verify(None, "7") == {"score": -1.0, "acc": False, "pred": None}
    assert dapo_verify("\\boxed{7}", 7) == {"score": 1.0, "acc": True, "pred": "7"}
    assert dapo_verify(b"Answer: 7", "7", strict_box=False)["acc"] is True


# ---------------------------------------------------------------- DAPO "Answer:" mode

def test_answer_mode_correct_after_normalising_both_sides():
    response = "so\nAnswer: $\\frac{1}{2}$"
    assert dapo_verify(response, "\\frac12", strict_box=False) == {
        "score": 1.0, "acc": True, "pred": "\\frac{1}{2}"}


def test_answer_mode_without_answer_line_is_invalid():
    assert dapo_verify("the answer is 7", "7", strict_box=False) == {
        "score": -1.0, "acc": False, "pred": "[INVALID]"}


def test_answer_mode_is_case_insensitive():
    assert dapo_verify("ANSWER: 7", "7", strict_box=False)["acc"] is True
    assert dapo_verify("answer : 7", "7", strict_box=False)["acc"] is True


def test_answer_mode_last_answer_line_wins():
    assert dapo_verify("Answer: 3\nAnswer: 7", "7", strict_box=False)["acc"] is True
    assert dapo_verify("Answer: 3\nAnswer: 7", "3", strict_box=False)["acc"] is False


def test_answer_mode_two_answers_on_one_line_are_one_match():
    assert dapo_verify("Answer: 3 Answer: 7", "7", strict_box=False)["pred"] == "3Answer:7"


def test_answer_mode_answer_on_the_next_line_is_read():
    assert dapo_verify("Answer:\n7", "7", strict_box=False)["pred"] == "7"


def test_answer_mode_answer_starting_300_chars_from_the_end_is_read():
    response = "x" * 100 + "Answer: 7\n" + "f" * 290
    assert len(response) - response.index("Answer") == 300
    assert dapo_verify(response, "7", strict_box=False) == {"score": 1.0, "acc": True, "pred": "7"}


def test_answer_mode_answer_starting_301_chars_from_the_end_is_cut_off():
    response = "x" * 100 + "Answer: 7\n" + "f" * 291
    assert dapo_verify(response, "7", strict_box=False)["pred"] == "[INVALID]"


def test_answer_mode_drops_thousands_commas():
    assert dapo_verify("Answer: 1,000", "1000", strict_box=False) == {"score": 1.0, "acc": True, "pred": "1000"}


def test_answer_mode_keeps_commas_of_a_non_integer():
    assert dapo_verify("Answer: 1,000.5", "1000.5", strict_box=False)["pred"] == "1,000.5"


# One test per normalisation step, in verl's order.
@pytest.mark.parametrize("raw, normalised", [
    ("x = y = 5", "5"),                     # text after the last "="
    ("an 8", "8"),                          # substitutions ...
    ("a 8", "8"),
    ("8.$", "8"),                           # ".$" -> "$" (then "$" is removed)
    ("\\$8", "8"),
    ("8\\ 000", "8000"),                    # "\ " goes before " ", or "8\000" would remain
    ("8 000", "8000"),
    ("8\\mbox{x}", "8x"),                   # mbox -> text, later unwrapped
    ("x,\\text{and}y", "x,y"),
    ("x\\text{and}y", "x,y"),
    ("8\\text{m}", "8"),                    # -> \text{}, then removed
    ("so $x+1$ and $y$", "x+1"),            # first $...$ span
    ("\\text{yes}", "yes"),                 # unwrap \text{} (lazy: up to the first "}")
    ("\\text{x}y}", "xy}"),
    ("\\textbf{8}", "8"),
    ("\\overline{8}", "8"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # unwrap \boxed{} (greedy: up to the last "}")
    ("\\frac12", "\\frac{1}{2}"),           # fracab -> frac{a}{b}
    ("\\frac123", "\\frac{1}{2}3"),
    ("\\sqrt2", "\\sqrt{2}"),               # sqrta -> sqrt{a}
    ("\\frac{1}{2}", "\\frac{1}{2}"),
    ("$8", "8"),                            # remove "$"
    ("1,000,000", "1000000"),               # thousands commas of an all-digit string
    ("8\n", "8"),                           # strip
])
def test_normalisation_step(raw, normalised):
    assert normalize_final_answer(raw) == normalised


@pytest.mark.parametrize("word", [
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
    "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
    "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;",
    ",\\!", "{,}", '"', "\\dots",
])
def test_normalisation_removes_unit_and_filler_words(word):
    assert normalize_final_answer("8 " + word) == "8"


# ---------------------------------------------------------------- hostile inputs

def test_one_megabyte_response_is_cut_to_the_window():
    response = "x" * 1_000_000 + "\\boxed{7}"
    for strict_box, expected in ((True, "7"), (False, "[INVALID]")):
        result, seconds = timed(dapo_verify, response, "7", strict_box)
        assert result["pred"] == expected
        assert seconds < MUST_NOT_HANG_S


def test_hundred_thousand_nested_braces():
    response = "\\boxed{" + "{" * 100_000 + "}" * 100_001
    result, seconds = timed(dapo_verify, response, "7")
    assert result == {"score": -1.0, "acc": False, "pred": None}
    content, extract_seconds = timed(extract_boxed, response)
    assert content == "{" * 100_000 + "}" * 100_000
    assert seconds < MUST_NOT_HANG_S and extract_seconds < MUST_NOT_HANG_S


def test_random_bytes_decoded_as_latin1_never_raise():
    junk = random.Random(0).randbytes(1_000_000).decode("latin-1")
    for strict_box in (True, False):
        result, seconds = timed(dapo_verify, junk, "7", strict_box)
        assert (result["score"], result["acc"]) == (-1.0, False)
        assert seconds < MUST_NOT_HANG_S


def test_a_hundred_thousand_answer_lines():
    response = "Answer: 1\n" * 100_000 + "Answer: 7"
    result, seconds = timed(dapo_verify, response, "7", False)
    assert result == {"score": 1.0, "acc": True, "pred": "7"}
    assert seconds < MUST_NOT_HANG_S


def test_hostile_ground_truth_is_normalised_in_linear_time():
    # verl's regexes take seconds on 5k unclosed "\text{"; 200k must still be fast here.
    for ground_truth in ("\\text{" * 200_000, "\\boxed{" * 150_000, "$" + "x" * 1_000_000):
        result, seconds = timed(dapo_verify, "Answer: 7", ground_truth, False)
        assert result["acc"] is False
        assert seconds < MUST_NOT_HANG_S


def test_lone_surrogates_are_text_like_any_other():
    assert dapo_verify("\ud800 \\boxed{7}", "7")["acc"] is True


# ---------------------------------------------------------------- TRL reward functions

class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, name, value):
        self.calls.append((name, value))


def trl_call(func, completions, solution, **columns):
    """Call a reward the way TRL 1.16's GRPOTrainer does."""
    log_metric = Recorder()
    rewards = func(prompts=["q"] * len(completions), completions=completions,
                   completion_ids=[[1] * len(completion_text(c)) for c in completions], solution=solution,
                   trainer_state=None, log_extra=lambda column, values: None, log_metric=log_metric, **columns)
    return rewards, log_metric.calls


def test_dapo_reward_scores_plain_completions_and_logs_accuracy():
    rewards, logged = trl_call(make_dapo_reward(), ["\\boxed{7}", "\\boxed{8}"], ["7", "7"], data_source=["x", "x"])
    assert rewards == [1.0, -1.0]
    assert logged == [("accuracy", 0.5)]


def test_dapo_reward_scale_is_configurable_and_accuracy_is_not_rescaled():
    rewards, logged = trl_call(make_dapo_reward(correct=1.0, incorrect=0.0), ["\\boxed{7}"] * 3 + ["no"], ["7"] * 4)
    assert rewards == [1.0, 1.0, 1.0, 0.0]
    assert logged == [("accuracy", 0.75)]


def test_dapo_reward_reads_the_last_assistant_message_of_a_conversation():
    conversation = [{"role": "assistant", "content": "\\boxed{3}"}, {"role": "tool", "content": "\\boxed{9}"},
                    {"role": "assistant", "content": "\\boxed{7}"}]
    rewards, _ = trl_call(make_dapo_reward(), [conversation, [{"role": "assistant", "content": "\\boxed{3}"}]],
                          ["7", "7"])
    assert rewards == [1.0, -1.0]


def test_dapo_answer_reward_uses_answer_lines():
    rewards, _ = trl_call(make_dapo_reward(strict_box=False), ["Answer: 7", "\\boxed{7}"], ["7", "7"])
    assert rewards == [1.0, -1.0]


def test_reward_names_are_what_trl_logs():
    names = [f.__name__ for f in (make_dapo_reward(), make_dapo_reward(strict_box=False),
                                  make_overlong_penalty(10, 4), format_reward, make_accuracy_reward(),
                                  make_cosine_reward())]
    assert names == ["dapo_reward", "dapo_answer_reward", "overlong_penalty", "format_reward",
                     "accuracy_reward", "cosine_reward"]


def test_missing_solution_column_names_the_column():
    with pytest.raises(ValueError, match="dataset column named 'solution'"):
        make_dapo_reward()(completions=["\\boxed{7}"], trainer_state=None)


def test_completion_text_skips_messages_after_the_last_assistant_message():
    conversation = [{"role": "assistant", "content": "\\boxed{7}"}, {"role": "tool", "content": "\\boxed{9}"}]
    assert completion_text(conversation) == "\\boxed{7}"


def test_completion_text_of_multimodal_content_joins_text_parts():
    message = {"role": "assistant", "content": [{"type": "text", "text": "\\boxed"}, {"type": "text", "text": "{7}"}]}
    assert completion_text([message]) == "\\boxed{7}"


# Overlong penalty with L_max = 10, B = 4: free up to 6 tokens, -1 at 10.
@pytest.mark.parametrize("length, penalty", [(5, 0.0), (6, 0.0), (8, -0.5), (10, -1.0), (12, -1.5)])
def test_overlong_penalty_below_at_inside_and_past_the_buffer(length, penalty):
    reward = make_overlong_penalty(max_completion_length=10, buffer_length=4)
    assert reward(completions=["c"], completion_ids=[[0] * length]) == [penalty]


def test_overlong_penalty_factor_scales_the_penalty():
    assert make_overlong_penalty(10, 4, penalty_factor=2.0)(completion_ids=[[0] * 8]) == [-1.0]


def test_overlong_buffer_longer_than_the_completion_is_refused():
    with pytest.raises(ValueError, match=re.escape("buffer_length (11) must be > 0 and at most "
                                                   "max_completion_length (10)")):
        make_overlong_penalty(max_completion_length=10, buffer_length=11)


@pytest.mark.parametrize("completion, score", [
    ("<think>a</think>b", 0.0),                       # no "\n</think>\n"
    ("<think>a\n</think>\nb", 1.0),
    ("a\n</think>\nb\n</think>\nc", 0.0),
    ("a\n</think>\n</think>\n", 1.0),                 # overlapping second closing is not counted (str.count)
])
def test_format_reward_wants_exactly_one_think_closing(completion, score):
    assert format_reward([completion]) == [score]
    assert format_reward([[{"role": "assistant", "content": completion}]]) == [score]


def test_accuracy_reward_by_math_verify_logs_accuracy():
    completions = ["\\boxed{\\frac{1}{2}}", "\\boxed{3}", "it is 0.5"]  # an unboxed bare number is not read
    rewards, logged = trl_call(make_accuracy_reward(), completions, ["0.5", "0.5", "0.5"])
    assert rewards == [1.0, 0.0, 0.0]
    assert logged == [("accuracy", 1 / 3)]


def test_accuracy_reward_skips_an_unparsable_gold_answer():
    rewards, logged = trl_call(make_accuracy_reward(), ["\\boxed{7}", "\\boxed{7}"], ["hello", "7"])
    assert rewards == [None, 1.0]
    assert logged == [("accuracy", 1.0)]


def test_accuracy_reward_gives_up_on_a_pathological_answer_within_the_limit():
    # sympy evaluates 9^(9^(9^9)) for as long as it is allowed to.
    rewards, seconds = timed(make_accuracy_reward(timeout_s=0.5), ["\\boxed{9^{9^{9^{9}}}}"], ["1"])
    assert rewards == [0.0]
    assert seconds < 0.5 + MUST_NOT_HANG_S


def test_time_limit_returns_the_result_in_time():
    assert run_with_time_limit(sum, 1.0, [1, 2]) == 3


def test_time_limit_interrupts_the_main_thread_and_restores_an_outer_timer():
    previous = signal.signal(signal.SIGALRM, lambda *args: None)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        started = time.perf_counter()
        with pytest.raises(TimeLimitExceeded):
            run_with_time_limit(time.sleep, 0.2, 10)
        assert time.perf_counter() - started < MUST_NOT_HANG_S
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 25.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_time_limit_off_the_main_thread_stops_waiting():
    outcome = []

    def in_thread():
        try:
            run_with_time_limit(time.sleep, 0.2, 5)
        except TimeLimitExceeded:
            outcome.append("gave up")

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(MUST_NOT_HANG_S)
    assert outcome == ["gave up"]


def test_time_limit_off_the_main_thread_passes_errors_on():
    errors = []

    def in_thread():
        try:
            run_with_time_limit(int, 1.0, "x")
        except ValueError as error:
            errors.append(type(error))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(MUST_NOT_HANG_S)
    assert errors == [ValueError]


# "\boxed{7}" is 9 characters: max_len 9 gives p = 1, max_len 18 gives p = 0.5.
@pytest.mark.parametrize("max_len, solution, score", [
    (18, "7", 0.75), (9, "7", 0.5), (4, "7", 0.5),     # p = 9/4 is clamped to 1
    (18, "8", -0.25), (9, "8", -0.5),
])
def test_cosine_reward_values(max_len, solution, score):
    rewards, logged = trl_call(make_cosine_reward(max_len=max_len), ["\\boxed{7}"], [solution])
    assert rewards == [score]
    assert logged == [("accuracy", 1.0 if solution == "7" else 0.0)]


def test_cosine_reward_at_zero_length():
    assert cosine_scaled(0.0, 1.0, 0.5) == 1.0      # correct
    assert cosine_scaled(0.0, 0.0, -0.5) == 0.0     # wrong
    rewards, _ = trl_call(make_cosine_reward(), [""], ["7"])
    assert rewards == [0.0]


def test_cosine_reward_end_values_are_configurable():
    reward = make_cosine_reward(max_len=9, correct_long=0.25, wrong_long=-1.0)
    assert trl_call(reward, ["\\boxed{7}", "\\boxed{8}"], ["7", "7"])[0] == [0.25, -1.0]


def test_cosine_reward_skips_an_unparsable_gold_answer():
    assert trl_call(make_cosine_reward(), ["\\boxed{7}"], ["hello"])[0] == [None]


# ---------------------------------------------------------------- registry

HELPER_MODULE = '''
def length_reward(completions, scale=1.0, **kwargs):
    return [scale * len(c) for c in completions]


def make_constant_reward(value):
    def constant_reward(completions, **kwargs):
        return [value] * len(completions)
    return constant_reward
'''


@pytest.fixture(scope="module")
def helper_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("helpers")
    (folder / "reward_test_helpers.py").write_text(HELPER_MODULE)
    sys.path.insert(0, str(folder))
    yield "reward_test_helpers"
    sys.path.remove(str(folder))
    sys.modules.pop("reward_test_helpers", None)


def test_registry_short_names():
    assert list(REWARDS) == ["dapo", "dapo_answer", "robust", "overlong", "format", "accuracy", "cosine",
                             "code"]


def test_robust_reward_accepts_equivalent_forms_the_dapo_verifier_rejects():
    logged = []
    robust = load_reward_funcs(["robust"])[0]
    dapo = load_reward_funcs(["dapo"])[0]
    completions = ["so \\boxed{\\frac{1}{2}}", "so \\boxed{0.5}", "so \\boxed{1/3}"]
    solutions = ["\\frac{1}{2}", "\\frac{1}{2}", "\\frac{1}{2}"]
    assert robust(completions, solution=solutions, log_metric=lambda k, v: logged.append((k, v))) == [1.0, 1.0, -1.0]
    assert dapo(completions, solution=solutions) == [1.0, -1.0, -1.0]
    assert logged == [("accuracy", 2 / 3)]
    assert robust.__name__ == "robust_reward"


def test_load_reward_funcs_builds_registered_rewards_in_order():
    funcs = load_reward_funcs(["dapo", "overlong", "format"], {"overlong": {"max_completion_length": 10,
                                                                           "buffer_length": 4}})
    assert [f.__name__ for f in funcs] == ["dapo_reward", "overlong_penalty", "format_reward"]
    assert funcs[1](completion_ids=[[0] * 8]) == [-0.5]


def test_load_reward_funcs_passes_factory_arguments():
    [reward] = load_reward_funcs(["dapo_answer"], {"dapo_answer": {"incorrect": 0.0}})
    assert reward(completions=["Answer: 7", "Answer: 8"], solution=["7", "7"]) == [1.0, 0.0]


def test_unknown_reward_name_lists_the_known_names():
    with pytest.raises(ValueError, match=re.escape("unknown reward 'dapoo'; known rewards: dapo, dapo_answer, "
                                                   "robust, overlong, format, accuracy, cosine, code")):
        load_reward_funcs(["dapoo"])


def test_unknown_factory_argument_names_the_reward_and_the_key():
    with pytest.raises(ValueError, match=re.escape("reward 'overlong': unknown argument 'buffer'")):
        load_reward_funcs(["overlong"], {"overlong": {"max_completion_length": 10, "buffer": 4}})


def test_missing_factory_argument_names_the_reward_and_the_key():
    with pytest.raises(ValueError, match=re.escape("reward 'overlong': missing argument 'max_completion_length'")):
        load_reward_funcs(["overlong"])


def test_arguments_for_a_reward_not_in_the_list_are_refused():
    with pytest.raises(ValueError, match=re.escape("reward arguments given for 'cosine'")):
        load_reward_funcs(["dapo"], {"cosine": {"max_len": 100}})


def test_dotted_path_to_a_missing_module_names_the_module():
    with pytest.raises(ValueError, match=re.escape("cannot import module 'no_such_module_xyz'")):
        load_reward_funcs(["no_such_module_xyz.reward"])


def test_dotted_path_to_a_missing_function_names_the_function(helper_module):
    with pytest.raises(ValueError, match=re.escape("module 'reward_test_helpers' has no function 'nope'")):
        load_reward_funcs(["reward_test_helpers.nope"])


def test_dotted_path_to_a_reward_function_is_used_as_is(helper_module):
    [reward] = load_reward_funcs(["reward_test_helpers.length_reward"])
    assert reward(completions=["ab", "abcd"], trainer_state=None) == [2.0, 4.0]
    assert reward.__name__ == "length_reward"


def test_dotted_path_arguments_are_bound_keeping_the_name(helper_module):
    name = "reward_test_helpers.length_reward"
    [reward] = load_reward_funcs([name], {name: {"scale": 0.5}})
    assert isinstance(reward, functools.partial)
    assert reward.__name__ == "length_reward"
    assert reward(completions=["ab"], trainer_state=None) == [1.0]


def test_dotted_path_argument_typo_is_refused(helper_module):
    name = "reward_test_helpers.length_reward"
    with pytest.raises(ValueError, match=re.escape(f"reward '{name}': unknown argument 'scal'")):
        load_reward_funcs([name], {name: {"scal": 0.5}})


def test_dotted_path_to_a_factory_is_called_with_its_arguments(helper_module):
    name = "reward_test_helpers.make_constant_reward"
    [reward] = load_reward_funcs([name], {name: {"value": 3.0}})
    assert reward.__name__ == "constant_reward"
    assert reward(completions=["a", "b"], trainer_state=None) == [3.0, 3.0]
