"""Accuracy and speed of grader.grade() against math-verify's defaults and a JustRL-like rule.

The labelled set, tests/fixtures/grading/labelled.jsonl, is hand-written: one JSON line per case
{response, reference, label, note}, references taken from the nine benchmarks' real answers, and a
large share of wrong-but-close answers (off by one, sign, order, openness, 0.33 vs 1/3, one of two
roots, an extra root, the wrong unit power, the wrong power of ten). `label` is the truth. Cases
477-617 (issue 9) are parses that lose information (the Minerva formula with `\\gamma`, `2(3)` vs 5,
`2xy` vs 2, `f \\circ g` vs `g \\circ f`, ...) and right and wrong-but-close answers for named tuples
`(p,q)=(3,2)`, sets written with or/;/plain braces, repeated elements, mixed numbers, implicit
multiplication, trigonometric functions of degrees and nested radicals. The last 18 (issue 15) are right and
wrong-but-close answers of three families that were rejected: a percentage written as a word ("35 pct", "35 per
cent", "4 percentage points") against "35\\%", a reference written as a mixed number with a space ("1 1/2",
"2 \\frac{3}{4}", "3\\ 1/4"), and one subscripted symbol spelt two ways ({v}_{0} / v_0, m_{\\rm e} / m_e, v_0{}^2).

Graders compared:
  grade        grader.grade (this project)
  math-verify  math_verify.verify(parse(gold), parse(response)), default configs, where gold is the
               reference wrapped in $...$ unless it already has $ or \\boxed (unwrapped, it reads "1,-2" as 1)
  justrl-like  last \\boxed{}; Hendrycks strip_string equality (plus its "x=" drop) OR sympy
               simplify(a - b) == 0, tuples/intervals element by element (recipes.md section 3)

Throughput is measured on long responses: each labelled final part after ~3,000 characters of
reasoning text, graded one by one with grade() and with grade_many(workers=N).

    python -m benchmarks.bench_grader                 # table, throughput with 2 workers
    python -m benchmarks.bench_grader --workers 8 --show_errors
"""

import argparse
import json
import signal
import time
from pathlib import Path

import sympy
from latex2sympy2_extended.latex2sympy2 import latex2sympy
from math_verify import parse, verify

from reasonrl.grading.grader import extract_answer, grade, grade_many, strip_string, unwrap_reference

LABELLED = Path(__file__).parent.parent / "tests" / "fixtures" / "grading" / "labelled.jsonl"
REASONING = (
    "Let me set up the problem. Write $f(x) = ax^2 + bx + c$ and use the conditions $f(1) = 3$ and "
    "$f(-1) = 5$, so $b = -1$ and $a + c = 4$. Earlier I guessed $\\boxed{7}$ but that ignored the "
    "constraint, so I check again: substituting gives \\[ \\frac{a+c}{2} = 2, \\quad \\sqrt{a^2 + 1} \\ge 1. \\] "
)


def math_verify_default(response: str, reference: str) -> bool:
    gold = parse(reference) if "$" in reference or "\\boxed" in reference else parse(f"${reference}$")
    return verify(gold, parse(response))


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def justrl_like(response: str, reference: str, timeout_s: int = 2) -> bool:
    """The rule of recipes.md section 3, written plainly: string match or zero difference."""
    pred, ref = extract_answer(response), unwrap_reference(reference)
    if not pred:
        return False

    def hendrycks(s: str) -> str:
        s = strip_string(s)
        parts = s.split("=")
        return parts[1] if len(parts) == 2 and len(parts[0]) <= 2 else s

    if hendrycks(pred) == hendrycks(ref):
        return True

    def same(a, b) -> bool:
        if isinstance(a, (sympy.Tuple, sympy.Interval)) and type(a) is type(b) and len(a.args) == len(b.args):
            return all(same(x, y) for x, y in zip(a.args, b.args))
        if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
            return sympy.simplify(a - b) == 0
        return a == b

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    try:
        return bool(same(latex2sympy(pred), latex2sympy(ref)))
    except Exception:
        return False
    finally:
        signal.alarm(0)


def score(name: str, grader, cases: list[dict], show_errors: bool) -> dict:
    start = time.perf_counter()
    verdicts = [bool(grader(c["response"], c["reference"])) for c in cases]
    seconds = time.perf_counter() - start
    false_accepts = [c for c, v in zip(cases, verdicts) if v and not c["label"]]
    false_rejects = [c for c, v in zip(cases, verdicts) if c["label"] and not v]
    if show_errors:
        for kind, wrong in (("FALSE ACCEPT", false_accepts), ("false reject", false_rejects)):
            for c in wrong:
                print(f"  {name:12s} {kind:12s} {extract_answer(c['response'])!r:45s} ref {c['reference']!r}  ({c['note']})")
    return {
        "grader": name,
        "accuracy": 1 - (len(false_accepts) + len(false_rejects)) / len(cases),
        "false_accepts": len(false_accepts),
        "false_rejects": len(false_rejects),
        "per_s": len(cases) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labelled", type=Path, default=LABELLED)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--show_errors", action="store_true")
    args = parser.parse_args()

    cases = [json.loads(line) for line in args.labelled.read_text().splitlines() if line.strip()]
    wrong = sum(not c["label"] for c in cases)
    print(f"{len(cases)} labelled cases from {args.labelled} ({wrong} wrong answers, {len(cases) - wrong} right)\n")
    rows = [
        score("grade", grade, cases, args.show_errors),
        score("math-verify", math_verify_default, cases, args.show_errors),
        score("justrl-like", justrl_like, cases, args.show_errors),
    ]
    print(f"\n{'grader':12s} {'accuracy':>8s} {'false acc':>9s} {'false rej':>9s} {'answers/s':>9s}")
    for r in rows:
        print(f"{r['grader']:12s} {r['accuracy']:8.3f} {r['false_accepts']:9d} {r['false_rejects']:9d} {r['per_s']:9.1f}")

    long_pairs = [(REASONING * 10 + c["response"], c["reference"]) for c in cases]
    chars = sum(len(r) for r, _ in long_pairs) / len(long_pairs)
    start = time.perf_counter()
    serial = [grade(r, a) for r, a in long_pairs]
    serial_s = time.perf_counter() - start
    start = time.perf_counter()
    pooled = grade_many(long_pairs, workers=args.workers)
    pooled_s = time.perf_counter() - start
    differ = sum(p != s for p, s in zip(pooled, serial))
    print(f"\nthroughput on {len(long_pairs)} responses of {chars:.0f} chars on average:")
    print(f"  grade() one by one          {len(long_pairs) / serial_s:8.1f} responses/s")
    print(f"  grade_many(workers={args.workers})       {len(long_pairs) / pooled_s:8.1f} responses/s (incl. pool start)")
    # Only answers near the symbolic time limit can differ, when the machine is busier in one run.
    print(f"  grade_many disagrees with grade on {differ} of {len(long_pairs)}")


if __name__ == "__main__":
    main()
