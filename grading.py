"""Rule-based grading of math answers: is the last \\boxed{} of a response equivalent to the reference?

JustRL grades by "normalised strings match, or sympy says the difference is zero" (recipes.md section 3).
This grader keeps that contract and tightens it in both directions: it accepts more correct forms
(units, `x = 5` for `5`, sets in any order, `1 \\pm \\sqrt{2}`, 4.49e33 for a reference of 4.5e33) and it
never accepts an answer that is only close. Layers, fastest first; a layer that cannot decide defers:

  0. Structure. Both answers are split, as strings, into atoms inside tuples `(a, b)`, intervals `[a, b)`,
     sets `\\{a, b\\}`, bare lists `a, b`, unions `A \\cup B` and matrices. Tuples and intervals compare
     element by element in order and their brackets must be identical (so openness matters); sets and
     bare lists compare as multisets (a bare list in a reference is nearly always "all solutions");
     union pieces compare in any order. Doing this on strings avoids sympy's ambiguity of `(1, 2)`.
  1. Strings. Hendrycks MATH `strip_string`-style normalisation plus units, \\text{}, degrees,
     percent, dollars and thousands separators; equal strings are equal answers. Letters A-E in a
     multiple-choice reference must match exactly. `x = 5` matches `5`; `x = 5` never matches `y = 5`.
  2. Numbers, exactly, with Python Fractions: integers, decimals, \\frac, a/b, mixed numbers, 4.5e33
     and 4.5 \\times 10^{33}. A reference written as a decimal or in scientific notation states its
     precision: the prediction must round to it at the reference's last stated digit (half up), so
     "1.6" accepts 1.62 and 8/5 but not 1.5 or 2, and "0.33" accepts 1/3. Integers and fractions are
     exact: "\\frac{1}{3}" rejects 0.33 and 0.333333.
  3. Symbols, in a forked child process that is killed after `timeout_s`: latex2sympy2_extended parses
     each atom and `simplify(a - b) == 0` decides. Floats become exact rationals first, so a numeric
     near miss stays a miss. Equations match when one side difference is a non-zero multiple of the
     other. The child process exists because sympy can hang inside C big-integer arithmetic
     (`9^{9^{9^{9}}}`), where neither signal.alarm nor a thread can stop it; a kill always works, in the
     main thread, in worker threads and in pool workers alike. A fork costs ~3 ms and only answers that
     layers 0-2 cannot decide pay it.

Use:

    from grading import grade, grade_many, extract_answer
    grade("... so the answer is $\\boxed{\\dfrac{1}{2}}$.", "0.5")            # True
    grade_many([(response, answer), ...], workers=8, progress=True)         # list[bool], in order

Measure accuracy, false accepts and throughput against math-verify and a JustRL-like rule:

    python bench_grader.py
"""

import multiprocessing
import os
import re
import select
import signal
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from functools import lru_cache

import sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig, latex2sympy

from reward import extract_boxed

# Longer predictions are refused (after a string check): no correct boxed answer in the benchmarks is
# close to this, and it bounds every regex and parse below.
MAX_ANSWER_CHARS = 1000
# Exponents and digit strings beyond these are left to the killable child instead of Fraction.
MAX_EXPONENT = 400
MAX_DIGITS = 400
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


# ---------------------------------------------------------------- layer 1: strings


def strip_string(s: str) -> str:
    """Hendrycks MATH normalisation (the JustRL rule): spacing, \\left/\\right, dfrac, degrees, dollars,
    percent, \\text{ unit}, fraction shorthands, leading zeros. Spaces are removed at the end."""
    s = s.replace("\n", " ").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])\.?", "", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree", "", s)
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\\text\{\s+[^{}]*\}$", "", s.strip())  # Hendrycks: a trailing "\text{ unit}"
    s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)
    s = s.replace(" ", "")
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"^(-?\d+)/(\d+)$", r"\\frac{\1}{\2}", s)
    return s.rstrip(".")


DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree")
UNIT_BLOCK = re.compile(r"\\(?:text|mbox|textrm|textnormal|mathrm)\s*\{([^{}]*)\}(\s*\^\s*\{?\d\}?)?")
TRAILING_UNIT_WORDS = re.compile(r"^(.*?[\d}])\s*([a-zA-Z]{2,}(?:\s+[a-zA-Z]{2,})*)\s*(\^\s*\{?\d\}?)?$")


def normalize(atom: str) -> tuple[str, str]:
    """One atom -> (value, unit). A unit is a \\text{}/\\mbox{} word other than i, e (with its power) or plain
    words after a number; it is returned apart so "15 cm^2" matches "15" but not "15 cm^3". An atom
    that is only text ("\\text{Evelyn}") is its text, lower-cased. Degrees are dropped."""
    atom = DEGREES.sub("", atom)
    blocks = [m for m in UNIT_BLOCK.finditer(atom) if re.search(r"[a-zA-Z]", m.group(1)) and m.group(1).strip() not in ("i", "e")]
    rest = atom
    for m in reversed(blocks):
        rest = rest[: m.start()] + " " + rest[m.end():]
    unit = ""
    if blocks and re.search(r"\w", rest.replace("\\$", "").replace("\\%", "")):
        unit, atom = " ".join(m.group(1) + (m.group(2) or "") for m in blocks), rest
    atom = UNIT_BLOCK.sub(lambda m: m.group(1) + (m.group(2) or ""), atom)
    words = TRAILING_UNIT_WORDS.match(atom.strip())
    if words and not unit:
        atom, unit = words.group(1), words.group(2) + (words.group(3) or "")
    value = strip_string(atom)
    while value.startswith("{") and _closes_at_end(value):
        value = value[1:-1]
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", value):
        value = value.replace(",", "")
    if re.fullmatch(r"[a-zA-Z]{2,}", value):
        value = value.lower()
    unit = re.sub(r"(?:square|sq)\s+(\w+)", r"\1^2", unit.lower())
    unit = re.sub(r"cubic\s+(\w+)", r"\1^3", unit)
    unit = re.sub(r"s(?=\^|$)", "", re.sub(r"[\s{}\\]", "", unit))
    return value, unit


# ---------------------------------------------------------------- layer 0: structure


def prepare(s: str) -> str:
    """Whole-answer cleanup that keeps structure: dollars, spacing commands, \\left/\\right, "or"/"and"."""
    s = re.sub(r"(?<!\\)\$", " ", s).replace("\\$", "")
    s = re.sub(r",\\!\s*", ",", s.replace("{,}", ","))
    s = re.sub(r"(?<!\\)\\[,;: !]|~|\\q?quad", " ", s.replace("\n", " "))
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])\.?", "", s)
    s = s.replace("\\lbrace", "\\{").replace("\\rbrace", "\\}").replace("\\displaystyle", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac").replace("∞", "\\infty").replace("\\infin ", "\\infty ")
    s = re.sub(r"\+\s*\\infty", r"\\infty", s)
    s = re.sub(r"\\(?:text|mbox)\s*\{\s*(?:or|and)\s*\}|\s+(?:or|and)\s+", ",", s)
    s = re.sub(r"\\(?:textbf|mathbf|boldsymbol|mathit|textit)\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in\s*", "", s)
    return s.strip().rstrip(".").strip()


OPENERS, CLOSERS = "([{", ")]}"


def _split_top(s: str, separators: tuple[str, ...]) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s[i] in OPENERS:
            depth += 1
        elif s[i] in CLOSERS:
            depth -= 1
        elif depth == 0:
            sep = next((t for t in separators if s.startswith(t, i)), None)
            if sep:
                parts.append(s[start:i])
                start = i = i + len(sep)
                continue
        i += 1
    return parts + [s[start:]]


def _closes_at_end(s: str) -> bool:
    depth = 0
    for i, ch in enumerate(s):
        depth += ch in OPENERS
        depth -= ch in CLOSERS
        if depth == 0:
            return i == len(s) - 1
    return False


def _expand_pm(atoms: list[str]) -> list[str]:
    out = []
    for a in atoms:
        if a.count("\\pm") + a.count("\\mp") == 1:
            out += [a.replace("\\pm", "+").replace("\\mp", "-"), a.replace("\\pm", "-").replace("\\mp", "+")]
        else:
            out.append(a)
    return out


def parse_structure(s: str):
    """Answer string -> nested tuples: ("atom", s), ("ordered", brackets, [..]), ("unordered", [..]),
    ("union", [..]) or ("matrix", [[..], ..])."""
    s = s.strip()
    matrix = re.fullmatch(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}", s, re.S)
    if matrix:
        rows = [r for r in matrix.group(2).split("\\\\") if r.strip()]
        return ("matrix", [[parse_structure(c) for c in r.split("&")] for r in rows])
    pieces = _split_top(s, ("\\cup", "∪"))
    if len(pieces) > 1:
        return ("union", [parse_structure(p) for p in pieces])
    items = [p for p in _split_top(s, (",", ";")) if p.strip()]
    if len(items) > 1 and not re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        return ("unordered", [parse_structure(p) for p in _expand_pm(items)])
    if s.startswith("\\{") and s.endswith("\\}") and _closes_at_end(s[1:]):
        return ("unordered", [parse_structure(p) for p in _expand_pm(_split_top(s[2:-2], (",", ";")))])
    if len(s) > 1 and s[0] in "([" and s[-1] in ")]" and _closes_at_end(s):
        inner = _split_top(s[1:-1], (",",))
        if len(inner) > 1:
            return ("ordered", s[0] + s[-1], [parse_structure(p) for p in inner])
        if s[0] == "(":
            return parse_structure(s[1:-1])
    pm = _expand_pm([s])
    if len(pm) == 2:
        return ("unordered", [("atom", a) for a in pm])
    return ("atom", s)


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


def structures_equal(pred, ref, atoms_equal) -> bool | None:
    """Compare two parsed structures with `atoms_equal(pred_atom, ref_atom) -> bool | None`."""
    kind = pred[0]
    if kind != ref[0]:
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


# ---------------------------------------------------------------- layer 2: numbers

DECIMAL = r"[+-]?(?:\d+\.?\d*|\.\d+)"


def to_number(value: str) -> tuple[Fraction, Fraction | None] | None:
    """Normalised atom -> (exact value, quantum). The quantum is the place value of the last stated digit
    for decimals and scientific notation (the reference's precision), None for exact forms."""
    if len(value) > MAX_DIGITS:
        return None
    m = re.fullmatch(DECIMAL, value)
    if m:
        decimals = len(value.split(".")[1]) if "." in value else None
        return Fraction(value), (Fraction(1, 10**decimals) if decimals is not None else None)
    m = re.fullmatch(rf"({DECIMAL})(?:[eE]|(?:\\times|\\cdot|\*|x)10\^)\{{?([+-]?\d+)\}}?", value)
    if m and abs(int(m.group(2))) <= MAX_EXPONENT:
        mantissa, exponent = m.group(1), int(m.group(2))
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return Fraction(mantissa) * Fraction(10) ** exponent, Fraction(10) ** (exponent - decimals)
    m = re.fullmatch(rf"(-?)\\frac\{{({DECIMAL})\}}\{{({DECIMAL})\}}|(-?)({DECIMAL})/({DECIMAL})", value)
    if m:
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5), m.group(6))
        if Fraction(den) != 0:
            return (-1 if sign else 1) * Fraction(num) / Fraction(den), None
    m = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", value)  # mixed number 1\frac{4}{5}
    if m and int(m.group(4)) != 0:
        whole = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return (-whole if m.group(1) else whole), None
    return None


def numbers_equal(pred: Fraction, ref: Fraction, quantum: Fraction | None) -> bool:
    """Exact equality, or for a reference with stated precision: pred rounded (half up) to it."""
    if quantum is None:
        return pred == ref
    steps = abs(pred) / quantum
    rounded = (steps.numerator * 2 + steps.denominator) // (steps.denominator * 2)
    return (rounded if pred >= 0 else -rounded) * quantum == ref


# ---------------------------------------------------------------- atoms: layers 1 and 2

WORD = re.compile(r"[a-z]{3,}")  # "evelyn", "east": a text answer, not a product of symbols
BASE = re.compile(r"([0-9A-Z]+)_\{?(\d+)\}?")
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
    p_base, r_base = BASE.fullmatch(pv), BASE.fullmatch(rv)
    if p_base or r_base:  # 52_8: the subscript is a base, and "52" alone names the same digits
        p_digits, r_digits = (p_base.group(1) if p_base else pv), (r_base.group(1) if r_base else rv)
        return p_digits == r_digits and (not p_base or not r_base or p_base.group(2) == r_base.group(2))
    pn, rn = to_number(pv), to_number(rv)
    if pn and rn:
        return numbers_equal(pn[0], rn[0], rn[1])
    return None


# ---------------------------------------------------------------- layer 3: sympy (child process only)

CONVERSION = ConversionConfig(lowercase_symbols=False, interpret_as_mixed_fractions=True)


def _to_sympy(value: str):
    expr = latex2sympy(value, normalization_config=None, conversion_config=CONVERSION)
    if isinstance(expr, sympy.Basic):
        expr = expr.xreplace({s: sympy.I for s in expr.free_symbols if s.name == "i"})
        expr = expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)})
    return expr


def _is_zero(diff) -> bool:
    """Proof that diff == 0. Numbers are first estimated to 30 digits, and expressions in symbols at a
    few rational points, so that a wrong answer is rejected without the slow simplify()."""
    if isinstance(diff, sympy.MatrixBase):
        return all(_is_zero(d) for d in diff)
    if diff == 0:
        return True
    symbols = sorted(diff.free_symbols, key=str)
    for point in ([], [sympy.Rational(7, 11)], [sympy.Rational(-13, 5)])[: 3 if symbols else 1]:
        at = diff.subs({s: point[0] + k for k, s in enumerate(symbols)}) if point else diff
        estimate = sympy.N(at, 30)
        if estimate.is_number and estimate.is_comparable and abs(estimate) > sympy.Float("1e-20"):
            return False
    return sympy.expand(diff) == 0 or sympy.simplify(diff) == 0


def atoms_equal_symbolic(pred: str, ref: str) -> bool:
    """Layer 3 for one atom: latex2sympy both sides, then simplify(a - b) == 0."""
    fast = atoms_equal_fast(pred, ref)
    if fast is not None:
        return fast
    sides = _assignment_sides(normalize(pred)[0], normalize(ref)[0])
    pv, rv = sides
    try:
        a, b = _to_sympy(pv), _to_sympy(rv)
        rn = to_number(rv)
        if rn and rn[1] is not None and isinstance(a, sympy.Expr) and not a.free_symbols:
            value = sympy.N(a, 40)
            return value.is_real is True and numbers_equal(Fraction(str(value)), rn[0], rn[1])
        if isinstance(a, sympy.Equality) and isinstance(b, sympy.Equality):
            da, db = a.lhs - a.rhs, b.lhs - b.rhs
            ratio = sympy.simplify(da / db)
            return _is_zero(da - db) or (ratio.is_number and ratio != 0 and ratio.is_finite is True)
        if isinstance(a, sympy.core.relational.Relational) or isinstance(b, sympy.core.relational.Relational):
            if type(a) is type(b):
                return _is_zero((a.lhs - a.rhs) - (b.lhs - b.rhs))
            return type(a) is type(b.reversed) and _is_zero((a.lhs - a.rhs) - (b.rhs - b.lhs))
        if isinstance(a, sympy.Set) or isinstance(b, sympy.Set) or isinstance(a, sympy.Tuple):
            return a == b
        if isinstance(a, sympy.MatrixBase) != isinstance(b, sympy.MatrixBase):
            return False
        return _is_zero(a - b)
    except Exception:
        return False


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
    # so that every forked child inherits them instead of paying again. Fixed, known-fast inputs.
    for latex in [r"\frac{\sqrt{3}}{2}+x^{2}", r"\sin(\pi t) \cdot e^{-t}", r"y=2x+1", r"\binom{2n}{n}"]:
        try:
            expr = latex2sympy(latex, normalization_config=None, conversion_config=CONVERSION)
            sympy.simplify(expr.lhs - expr.rhs if isinstance(expr, sympy.Equality) else expr - 1)
            sympy.N(expr.subs({s: sympy.Rational(7, 11) for s in expr.free_symbols}) if expr.free_symbols else expr)
        except Exception:
            pass


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

