"""Rule-based grading of math answers: is the last \\boxed{} of a response equivalent to the reference?

JustRL grades by "normalised strings match, or sympy says the difference is zero" (recipes.md section 3).
This grader keeps that contract and tightens it in both directions: it accepts more correct forms
(units, `x = 5` for `5`, sets in any order, `1 \\pm \\sqrt{2}`, 4.49e33 for a reference of 4.5e33) and it
never accepts an answer that is only close. Layers, fastest first; a layer that cannot decide defers:

  0. Structure (parse.parse_structure). Both answers are split, as strings, into atoms inside
     tuples `(a, b)` or `(0; -2; 6)`, intervals `[a, b)`, sets `\\{a, b\\}` or `{a, b}`, bare lists
     `a, b` (also "a or b", "a; b"), unions `A \\cup B` and matrices; a named tuple `(p, q) = (3, 2)` is
     its values, ordered by its names when both sides name them. Tuples and intervals compare element
     by element in order and their brackets must be identical (so openness matters); sets and bare
     lists compare in any order. A set (braces, or a list of tuples: the solutions of a system) may
     repeat an element; a bare list of numbers is a multiset, so "3, 4, 4" is not "3, 3, 4". Union
     pieces compare in any order. Doing this on strings avoids sympy's ambiguity of `(1, 2)`.
  1. Strings (parse.normalize). Hendrycks MATH `strip_string`-style normalisation plus units,
     \\text{}, degrees, percent, dollars and thousands separators; equal strings are equal answers.
     Letters A-E in a multiple-choice reference must match exactly. `x = 5` matches `5`; `x = 5` never
     matches `y = 5`. Nothing that changes the meaning is normalised away: letters after a number are a
     unit only when set apart and known ("15 cm", not "2xy"), case is folded only for words ("East",
     not "AB"), degrees inside a trigonometric function become radians, and a space between digits or
     after a command ("2^3 3", "\\cos h") stays.
  2. Numbers, exactly, with Python Fractions: integers, decimals, \\frac, a/b, mixed numbers, 4.5e33
     and 4.5 \\times 10^{33}. A reference written as a decimal or in scientific notation states its
     precision: the prediction must round to it at the reference's last stated digit (half up), so
     "1.6" accepts 1.62 and 8/5 but not 1.5 or 2, and "0.33" accepts 1/3. Integers and fractions are
     exact: "\\frac{1}{3}" rejects 0.33 and 0.333333. A mixed number is a whole answer `2\\frac{1}{2}`
     or `2 1/2` with a proper fraction (the MATH convention).
  3. Symbols (symbolic.equal), in a forked child process that is killed after `timeout_s`:
     latex2sympy2_extended parses each atom, conservatively (see that module: `\\gamma` is a symbol,
     juxtaposition is multiplication, a parse that could lose information is refused), and
     `simplify(a - b) == 0` decides; constants are compared to 45 digits instead, which decides nested
     radicals fast. Floats become exact rationals first, so a numeric near miss stays a miss. Equations
     match when one side difference is a non-zero multiple of the other. The child process exists
     because sympy can hang inside C big-integer arithmetic (`9^{9^{9^{9}}}`), where neither
     signal.alarm nor a thread can stop it; a kill always works, in the main thread, in worker threads
     and in pool workers alike, and a killed comparison is "not equal". A fork costs ~3 ms and only
     answers that layers 0-2 cannot decide pay it.

Use:

    from reasonrl.grading.grader import grade, grade_many, extract_answer
    grade("... so the answer is $\\boxed{\\dfrac{1}{2}}$.", "0.5")            # True
    grade_many([(response, answer), ...], workers=8, progress=True)         # list[bool], in order

Measure accuracy, false accepts and throughput against math-verify and a JustRL-like rule:

    python -m benchmarks.bench_grader
"""

import multiprocessing
import os
import re
import select
import signal
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from functools import lru_cache

from reasonrl.grading import symbolic
# normalize, numbers_equal, strip_string and to_number are re-exported for the tests and benchmarks/bench_grader.py.
from reasonrl.grading.parse import normalize, numbers_equal, parse_structure, prepare, strip_string, to_number  # noqa: F401
from reasonrl.grading.answers import check_solutions, completion_text, extract_boxed, log_accuracy

# Longer predictions are refused (after a string check): no correct boxed answer in the benchmarks is
# close to this, and it bounds every regex and parse below.
MAX_ANSWER_CHARS = 1000
# Multiset matching is quadratic; longer lists fall back to order-sensitive comparison.
MAX_UNORDERED = 64

# ---------------------------------------------------------------- extraction


def extract_answer(response: str) -> str | None:
    """Content of the last \\boxed{...} (brace matched), also accepting \\fbox{...}, "\\boxed {...}" and
    "\\boxed 5" (a single token). None when the response has no closed box."""
    text = re.sub(r"\\(?:boxed|fbox)\s*\{", r"\\boxed{", response)
    last = text.rfind("\\boxed")
    if last == -1:
        return None
    bare = re.match(r"\\boxed\s+([^\s${}]+)", text[last:])
    if bare:
        return bare.group(1)
    return extract_boxed(text)


def unwrap_reference(answer: str) -> str:
    """Reference answers arrive as "204", "\\boxed{204}" (AIME24) or "$\\frac{1}{2}$" (OlympiadBench)."""
    answer = answer.strip()
    if "\\boxed" in answer or "\\fbox" in answer:
        answer = extract_answer(answer) or ""
    return answer.strip()


# ---------------------------------------------------------------- layer 0: comparing structures


def _all3(results) -> bool | None:
    """Three-valued AND: False wins, then unknown (None), then True."""
    unknown = False
    for r in results:
        if r is False:
            return False
        unknown |= r is None
    return None if unknown else True


def _perfect_matching(ok: list[list[bool]]) -> bool:
    match_of_ref: dict[int, int] = {}

    def augment(p: int, seen: set) -> bool:
        for r, good in enumerate(ok[p]):
            if good and r not in seen:
                seen.add(r)
                if r not in match_of_ref or augment(match_of_ref[r], seen):
                    match_of_ref[r] = p
                    return True
        return False

    return all(augment(p, set()) for p in range(len(ok)))


def _reorder(tree, order: list[int]):
    """Coordinates of a tuple, or of every tuple in a list, put in `order`; None if the shapes differ."""
    if tree[0] == "ordered" and len(tree[2]) == len(order):
        return ("ordered", tree[1], [tree[2][i] for i in order])
    if tree[0] in ("unordered", "set"):
        items = [_reorder(t, order) for t in tree[1]]
        return None if None in items else (tree[0], items)
    return None


def _distinct(items: list) -> list:
    """Items without repeats that layers 0-2 prove equal: {1, 1, 2} is the set {1, 2}."""
    out = []
    for item in items:
        if not any(structures_equal(item, kept, atoms_equal_fast) is True for kept in out):
            out.append(item)
    return out


def structures_equal(pred, ref, atoms_equal) -> bool | None:
    """Compare two parsed structures with `atoms_equal(pred_atom, ref_atom) -> bool | None`."""
    if "named" in (pred[0], ref[0]):  # "(p, q) = (3, 2)": the names order the values, if both sides have them
        p_names, pred = (pred[1], pred[2]) if pred[0] == "named" else (None, pred)
        r_names, ref = (ref[1], ref[2]) if ref[0] == "named" else (None, ref)
        if p_names and r_names and p_names != r_names:
            if sorted(p_names) != sorted(r_names) or len(set(p_names)) != len(p_names):
                return False
            pred = _reorder(pred, [p_names.index(n) for n in r_names])
            if pred is None:
                return False
        return structures_equal(pred, ref, atoms_equal)
    # A list written in braces, or a list of tuples (the solutions of a system), is a set: a repeat in the
    # prediction is the same element again. A bare list of numbers may be a multiset (side lengths 3, 3, 4).
    is_set = "set" in (pred[0], ref[0]) or (ref[0] == "unordered" and all(r[0] == "ordered" for r in ref[1]))
    kind = "unordered" if pred[0] == "set" else pred[0]
    if kind != ("unordered" if ref[0] == "set" else ref[0]):
        return False
    if kind == "atom":
        return atoms_equal(pred[1], ref[1])
    if kind == "matrix":
        if [len(r) for r in pred[1]] != [len(r) for r in ref[1]]:
            return False
        return _all3(structures_equal(p, r, atoms_equal) for pr, rr in zip(pred[1], ref[1]) for p, r in zip(pr, rr))
    if kind == "ordered" and pred[1] != ref[1]:
        return False
    preds, refs = pred[-1], ref[-1]
    if kind == "unordered" and is_set and len(preds) <= MAX_UNORDERED and len(_distinct(refs)) == len(refs):
        preds = _distinct(preds)
    if len(preds) != len(refs):
        return False
    if kind == "ordered" or len(refs) > MAX_UNORDERED:
        return _all3(structures_equal(p, r, atoms_equal) for p, r in zip(preds, refs))
    table = [[structures_equal(p, r, atoms_equal) for r in refs] for p in preds]
    if _perfect_matching([[v is True for v in row] for row in table]):
        return True
    if not _perfect_matching([[v is not False for v in row] for row in table]):
        return False
    return None


# ---------------------------------------------------------------- atoms: layers 1 and 2

WORD = re.compile(r"[a-z]{3,}")  # "evelyn", "east": a text answer, not a product of symbols
BASE = re.compile(r"([0-9A-Z]+)_\{?(\d+)\}?")


def _base_number(value: str):
    """"52_8" -> its match, if the subscript is a base (2-36) and every digit is valid in it; "X_1" is not."""
    m = BASE.fullmatch(value)
    return m if m and 2 <= int(m.group(2)) <= 36 and all(int(d, 36) < int(m.group(2)) for d in m.group(1)) else None
SIMPLE_LHS = re.compile(r"(?:[A-Za-z]|\\[a-zA-Z]+)(?:_\{[^{}=]*\}|_\w)?(?:\([a-z,]*\))?")


def _split_equation(value: str) -> tuple[str, str] | None:
    parts = re.split(r"(?<![<>!\\])=(?!=)", value)
    return (parts[0], parts[1]) if len(parts) == 2 and parts[0] and parts[1] else None


def _assignment_sides(pv: str, rv: str) -> tuple[str, str] | None:
    """Drop a simple left-hand side ("x=", "f(n)=", "m_{\\max}=") so `x=5` matches 5. None: x=5 vs y=5."""
    pe, re_ = _split_equation(pv), _split_equation(rv)
    p_simple = pe is not None and SIMPLE_LHS.fullmatch(pe[0])
    r_simple = re_ is not None and SIMPLE_LHS.fullmatch(re_[0])
    if pe and re_ and p_simple and r_simple:
        return (pe[1], re_[1]) if pe[0] == re_[0] else None
    if r_simple and pe is None:
        return pv, re_[1]
    if p_simple and re_ is None:
        return pe[1], rv
    return pv, rv


def atoms_equal_fast(pred: str, ref: str) -> bool | None:
    """Layers 1 and 2 for one atom; None means "ask sympy"."""
    pv, pu = normalize(pred)
    rv, ru = normalize(ref)
    if not pv or not rv:
        return False
    if pu and ru and pu != ru:
        return False
    if pv == rv:
        return True
    choice = re.fullmatch(r"\(?([A-E])\)?", rv)
    if choice:
        return re.fullmatch(r"\(?([A-E])\)?", pv) is not None and pv.strip("()") == choice.group(1)
    if WORD.fullmatch(pv) or WORD.fullmatch(rv):
        return False
    sides = _assignment_sides(pv, rv)
    if sides is None:
        return False
    pv, rv = sides
    if pv == rv:
        return True
    p_base, r_base = _base_number(pv), _base_number(rv)
    if p_base or r_base:  # 52_8: the subscript is a base, and "52" alone names the same digits
        p_digits, r_digits = (p_base.group(1) if p_base else pv), (r_base.group(1) if r_base else rv)
        return p_digits == r_digits and (not p_base or not r_base or p_base.group(2) == r_base.group(2))
    pn, rn = to_number(pv), to_number(rv)
    if pn and rn:
        return numbers_equal(pn[0], rn[0], rn[1])
    return None


# ---------------------------------------------------------------- layer 3: sympy (child process only)


def atoms_equal_symbolic(pred: str, ref: str) -> bool:
    """Layer 3 for one atom (symbolic.equal); a decimal reference states its precision here too."""
    fast = atoms_equal_fast(pred, ref)
    if fast is not None:
        return fast
    pv, rv = _assignment_sides(normalize(pred)[0], normalize(ref)[0])
    rn = to_number(rv)
    if rn and rn[1] is not None:
        value = symbolic.real_value(pv)
        if value is not None:
            return numbers_equal(Fraction(str(value)), rn[0], rn[1])
    return symbolic.equal(pv, rv)


def _in_child(fn, timeout_s: float) -> bool:
    """fn() in a forked child that is SIGKILLed after timeout_s; a crash or a kill reads as False."""
    if not hasattr(os, "fork"):
        return bool(fn())
    _warm_parser()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.write(write_end, b"1" if fn() else b"0")
        except BaseException:
            os.write(write_end, b"0")
        os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout_s)
        result = os.read(read_end, 1) == b"1" if ready else False
    finally:
        os.close(read_end)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    return result


@lru_cache(maxsize=1)
def _warm_parser() -> None:
    # The ANTLR tables and sympy's simplify machinery load lazily (~0.5 s); load them once in the parent
    # so that every forked child inherits them instead of paying again.
    symbolic.warm()


# ---------------------------------------------------------------- public API

TOWER_OR_HUGE = re.compile(r"\d\s*\}?\s*\^\s*\{?\s*\d+\s*\}?\s*\^|\d{5,}\s*!|\d{3,}\s*!\s*!")


def grade_extracted(pred: str | None, answer: str, timeout_s: float = 2.0) -> bool:
    """grade() for an answer already taken out of its box."""
    ref = unwrap_reference(answer)
    if pred is None or not pred.strip() or not ref:
        return False
    if len(pred) > MAX_ANSWER_CHARS or len(ref) > MAX_ANSWER_CHARS:
        return normalize(pred)[0] == normalize(ref)[0]
    pred_tree, ref_tree = parse_structure(prepare(pred)), parse_structure(prepare(ref))
    fast = structures_equal(pred_tree, ref_tree, atoms_equal_fast)
    if fast is not None:
        return fast
    if TOWER_OR_HUGE.search(pred):
        return False
    return _in_child(lambda: structures_equal(pred_tree, ref_tree, atoms_equal_symbolic) is True, timeout_s)


def grade(response: str, answer: str, timeout_s: float = 2.0) -> bool:
    """True iff the last \\boxed{} of `response` is equivalent to the reference `answer`."""
    return grade_extracted(extract_answer(response), answer, timeout_s)


def _grade_star(args: tuple[str | None, str, float]) -> bool:
    return grade_extracted(*args)


def grade_many(
    pairs: list[tuple[str, str]], workers: int = 0, timeout_s: float = 2.0, progress: bool = False
) -> list[bool]:
    """grade() over (response, answer) pairs, in order. Boxes are extracted here and identical
    (answer, reference) pairs graded once: 32 samples of one problem mostly box the same few strings.
    workers > 1 grades in a pool of fresh ("spawn") processes, safe to call from a process holding a GPU."""
    keys = [(extract_answer(response), answer) for response, answer in pairs]
    unique = list(dict.fromkeys(keys))
    jobs = [(pred, answer, timeout_s) for pred, answer in unique]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="grading", unit="answer")
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = []
            for result in pool.map(_grade_star, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers)))):
                results.append(result)
                bar and bar.update()
    else:
        results = []
        for job in jobs:
            results.append(_grade_star(job))
            bar and bar.update()
    if bar:
        bar.close()
    verdict = dict(zip(unique, results))
    return [verdict[key] for key in keys]


def make_robust_reward(correct: float = 1.0, incorrect: float = -1.0, timeout_s: float = 2.0):
    """JustRL's "robust verifier" ablation: eval.py's symbolic grader (grader.grade: last box, normalised string,
    numeric and sympy equivalence) instead of exact string matching; `correct` / `incorrect`; logs "accuracy"."""

    def robust_reward(completions, solution=None, **kwargs):
        solutions = check_solutions(solution, completions, "robust_reward")
        verdicts = [grade(completion_text(c), str(s), timeout_s=timeout_s) for c, s in zip(completions, solutions)]
        log_accuracy(kwargs, verdicts)
        return [correct if ok else incorrect for ok in verdicts]

    return robust_reward
