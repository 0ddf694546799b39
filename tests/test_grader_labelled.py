"""bench_grader's labelled set as a regression test: grader.grade must get every case right.

The README's "grade 100% (0 false accepts, 0 false rejects)" is this test. A symbolic comparison that runs past
its time limit reads as "wrong", so a busy machine could turn a right answer into a false reject; the limit here
is 60 s instead of the grader's default 2 s (measured at load 3.5: the slowest case, the first to load sympy,
4 s; the whole set 20-40 s), which leaves load no say in the verdicts.

    python -m pytest tests/test_grader_labelled.py -q
"""

import json
import os

from reasonrl.grading.grader import extract_answer, grade

LABELLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "grading", "labelled.jsonl")
CASES = [json.loads(line) for line in open(LABELLED) if line.strip()]


def test_the_labelled_set_has_right_and_wrong_answers():
    assert len(CASES) >= 617 and sum(not c["label"] for c in CASES) >= 267


def test_grade_has_no_false_accept_and_no_false_reject_on_the_labelled_set():
    wrong = [(c["note"], extract_answer(c["response"]), c["reference"], c["label"]) for c in CASES
             if grade(c["response"], c["reference"], timeout_s=60.0) is not c["label"]]
    assert wrong == []
