"""What a grader reads in a response, shared by the rewards (reward.py), the rule grader and the held-out accuracy.

  dapo_verify, dapo_score    verl's math_dapo scorer: strict-box mode (JustRL) or "Answer:" mode (DAPO); +1 / -1
  extract_boxed              content of the last \\boxed{...}, brace matched
  as_text, completion_text   any value / a TRL completion (string or conversation) as text
  check_solutions, log_accuracy    what every correctness reward checks and logs

reward.py re-exports these names (`reward.extract_boxed` ...), so a recipe or a test may use either.

Test: python -m pytest tests/test_reward.py -q
"""

import functools
import re

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


def as_text(value) -> str:
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
    answer = as_text(answer).split("=")[-1]
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
    tail = as_text(response)[-300:]
    ground_truth = as_text(ground_truth)
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
                return as_text(content)
        return ""
    return as_text(completion)


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
