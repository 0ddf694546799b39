"""reward.dapo_verify against veRL's own math_dapo.py on generated responses (project issue 15).

JustRL trained with a fork of veRL 0.4.0 and its DAPO rule verifier, `verl/utils/reward_score/math_dapo.py`.
`reward.dapo_verify` reimplements it (linear time on hostile input). This script fetches veRL's file at run time,
from veRL's wheel on PyPI (`pip download --no-deps verl==0.4.0` into .cache/verl; the wheel is checked by its
sha256 and never installed, and the file is read from it, never copied into this repository), loads it as a
module and compares `compute_score` with `dapo_verify` in both modes (strict box, as JustRL; "Answer:", as DAPO)
on random and adversarial responses (a quarter of them a soup of the special tokens): boxes (nested, unclosed, escaped braces, several), "Answer:" lines, the
normaliser's substitutions and unit words, "$" spans, "=", newlines, responses longer than the 300/100 characters
read. Every field of the result (score, acc, pred) must agree. CPU only, ~1-2 minutes for 200k responses.

    python -m benchmarks.bench_dapo_verl                       # 200k responses x 2 modes
    python -m benchmarks.bench_dapo_verl --n 20000 --seed 1
"""

import argparse
import ast
import hashlib
import os
import random
import sys
import time
import types
import zipfile

import reward

PACKAGE = "verl==0.4.0"  # JustRL's training code is a fork of veRL 0.4.0 (../shared/reference/recipes.md)
WHEEL_SHA256 = "3f6ee8836cb179adf3cf1a3b40157c6b28718fb22407403de64fcbe1d16f8750"
FILE_IN_WHEEL = "verl/utils/reward_score/math_dapo.py"
CACHE = os.path.join(".cache", "verl")


def fetch_verl_source(cache_dir: str = CACHE) -> str:
    """The text of veRL 0.4.0's math_dapo.py, read from its wheel (downloaded into cache_dir once)."""
    from reasonrl.demo.real_model import download_wheel

    wheel_path = download_wheel(PACKAGE, "verl-0.4.0-*.whl", cache_dir)
    with open(wheel_path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != WHEEL_SHA256:
            raise SystemExit(f"{wheel_path} is not the verl 0.4.0 wheel this was measured with (sha256 "
                             f"{WHEEL_SHA256}); delete it and run again")
    with zipfile.ZipFile(wheel_path) as wheel:
        return wheel.read(FILE_IN_WHEEL).decode("utf-8")


def load_module(source: str, name: str = "verl_math_dapo") -> types.ModuleType:
    """Executes source as a module. Imports outside the standard library get empty stand-ins (0.4.0 has none)."""
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for full in names:
            if full.split(".")[0] not in sys.stdlib_module_names:
                for i in range(1, full.count(".") + 2):
                    sys.modules.setdefault(".".join(full.split(".")[:i]), types.ModuleType(full))
    module = types.ModuleType(name)
    exec(compile(source, FILE_IN_WHEEL, "exec"), module.__dict__)
    return module


# Pieces the normaliser, the box extractor and the "Answer:" pattern treat specially, and plain ones.
ANSWERS = ["7", "-3", "42", "1000", "1,000", "1{,}000", "3\\ 000", "0.5", ".5", "\\frac{1}{2}", "\\frac12",
           "\\frac 1 2", "\\dfrac{3}{4}", "\\sqrt2", "\\sqrt{2}", "2\\sqrt3", "45^\\circ", "45^{\\circ}", "\\$5",
           "5 dollars", "10 cm", "an apple", "a 3", "\\text{(A)}", "\\textbf{B}", "\\overline{12}", "\\text{m}",
           "5\\mathrm{th}", "x = 4", "a = b = 3", "$5$", "$x$ and $y$", "\\{1,2\\}", "(1, 2)", "[INVALID]",
           "\\boxed{3}", "3\\text{ and }4", "1,\\text{and}2", "\\pi", "\\infty", "", " ", "٣", "x^{2}", "\\dots"]
NOISE = ["\\boxed{", "\\boxed ", "{", "}", "\\{", "\\}", "$", "=", "\n", " ", "Answer:", "answer :", "ANSWER: ",
         "\\text{", "mbox{", "\\;", ",\\!", '"', "frac", "sqrt", ".$", "\\ ", "so", "the answer is ", "\\]", "\\["]
FILLER = "Let us think step by step. We add the numbers and carry the one. "


def random_answer(rng: random.Random) -> str:
    parts = [rng.choice(ANSWERS) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    if rng.random() < 0.2:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(NOISE))
    return "".join(parts)


SOUP = NOISE + ["1", "2", "x", "a ", "an ", ",", "\\$", "\\textbf{", "\\overline{", "\\text{and}", "\\text{m}",
                "\\dots", "\\ldots", "square", "\\text{}^2", "\\text{\ns}", "^\\circ", "^{\\circ}", "}", "}"]


def random_response(rng: random.Random, truth: str) -> str:
    """A response built from filler, noise, boxes and "Answer:" lines, often around the truth; or a token soup."""
    if rng.random() < 0.25:
        return "".join(rng.choice(SOUP + [truth]) for _ in range(rng.randrange(1, 80)))
    pieces = []
    if rng.random() < 0.3:
        pieces.append(FILLER * rng.randrange(1, 12))  # pushes earlier text past the 300/100 characters read
    for _ in range(rng.randrange(1, 6)):
        answer = truth if rng.random() < 0.5 else random_answer(rng)
        kind = rng.random()
        if kind < 0.35:
            inner = answer if rng.random() < 0.7 else "{" + answer + "}" * rng.randrange(0, 3)
            pieces.append("\\boxed{" + inner + ("}" if rng.random() < 0.9 else ""))
        elif kind < 0.65:
            pieces.append(rng.choice(["Answer: ", "Answer:", "answer : ", "ANSWER:\t", "Final Answer: "]) + answer
                          + rng.choice(["\n", "", ". ", " $"]))
        elif kind < 0.8:
            pieces.append(rng.choice(NOISE))
        elif kind < 0.9:
            pieces.append("".join(rng.choice("ab{}$=\\ \n,.:Ax19") for _ in range(rng.randrange(1, 40))))
        else:
            pieces.append(FILLER[: rng.randrange(len(FILLER))])
    if rng.random() < 0.2:
        pieces.append(rng.choice([" ", "\n", ".", " " * rng.randrange(80, 120), FILLER]))
    return "".join(pieces)


def random_truth(rng: random.Random) -> str:
    return random_answer(rng) if rng.random() < 0.8 else rng.choice(["7", "42", "-3", "\\frac{1}{2}"])


def compare(verl, n: int, seed: int) -> tuple[list, dict]:
    """(differences, how many responses veRL accepted per mode)."""
    rng = random.Random(seed)
    differences, accepted = [], {True: 0, False: 0}
    for _ in range(n):
        truth = random_truth(rng)
        response = random_response(rng, truth)
        for strict_box in (True, False):
            theirs = verl.compute_score(response, truth, strict_box_verify=strict_box)
            ours = reward.dapo_verify(response, truth, strict_box)
            accepted[strict_box] += theirs["acc"] is True
            if theirs != ours:
                differences.append({"response": response, "ground_truth": truth, "strict_box": strict_box,
                                    "verl": theirs, "ours": ours})
    return differences, accepted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="responses (each scored in both modes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    verl = load_module(fetch_verl_source())
    start = time.perf_counter()
    differences, accepted = compare(verl, args.n, args.seed)
    seconds = time.perf_counter() - start
    big = "x" * (1 << 20) + "\\boxed{7}"
    t0 = time.perf_counter()
    for _ in range(100):
        reward.dapo_verify(big, "7", strict_box=False)
    per_call_ms = (time.perf_counter() - t0) * 10
    print(f"verl {PACKAGE} {FILE_IN_WHEEL} vs reward.dapo_verify: {args.n} responses x 2 modes (seed {args.seed}) "
          f"in {seconds:.0f} s")
    print(f"accepted by veRL: strict box {accepted[True]}, 'Answer:' {accepted[False]}")
    print(f"1 MB response, 'Answer:' mode: {per_call_ms:.3f} ms per call")
    print(f"differences: {len(differences)}")
    for difference in differences[:10]:
        print(repr(difference))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
