"""Layer 3 of reasonrl/grading/grader.py: are two normalised LaTeX atoms equal, by sympy? Never "yes" on doubt.

reasonrl/grading/grader.py decides everything it can on strings and exact numbers, and calls `equal(pred, ref)` in a
killable child process for the rest. This module turns each side into sympy with latex2sympy2_extended
(the parser math-verify uses) and answers True only on proof or near-proof:

  - expressions in symbols: `expand` or `simplify` of the difference is 0 (after a numeric test at two
    points that can only reject);
  - constants: evalf finds the difference to be 0 to 45 digits, raising its working precision up to
    400 digits to resolve cancellation (a resolved non-zero digit is a proof of inequality). This decides
    nested radicals such as sqrt(sqrt 7 + sqrt 47) / (9 + 2 sqrt 14) in milliseconds where simplify()
    runs past the time limit; a wrong-but-close answer differs by far more than 1e-45;
  - equations: the two sides' differences are proportional; inequalities: the same relation.

A parse that could lose information is refused instead of compared, because two different strings
that parse to the same wrong value compare equal (the reason this module exists, issue 9):

  - `\\gamma`, `\\Gamma` are symbols. The grammar reads `\\gamma` as the gamma function, so that
    `(\\gamma^2 - 2)` became Gamma(-2)^2 = zoo^2, the same value as `(\\gamma^2 - 1)`, and a wrong
    Minerva answer was accepted; bare `\\gamma` was the Euler-Mascheroni constant 0.577.
  - Juxtaposition is multiplication. The library reads any integer followed by a positive rational as a
    mixed number (`2(3)` = 5, `3\\frac{4}{2}` = 5); here only a whole atom `2\\frac{1}{2}` with a proper
    fraction is a mixed number (the MATH convention; PRM800K's grader reads "7 3/4" as 7 + 3/4), and an
    integer juxtaposed with a numeric fraction anywhere else (`3\\frac{1}{2}x`) is ambiguous: refused.
  - Digits separated by a space that is not a thousands group (`2 3`: 6 or 23?) are refused.
  - A value that is not finite (zoo, nan, oo) is refused: zoo - zoo cancels structurally to 0.
  - Odd roots of negative numbers are real (`\\sqrt[3]{-8}` is -2, not sympy's principal complex root).
"""

import re
from functools import lru_cache

import sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig, _Latex2Sympy
from sympy.core.evalf import PrecisionExhausted

CONVERSION = ConversionConfig(lowercase_symbols=False)
# Constants are evaluated to DIGITS digits, with evalf's working precision raised up to MAXN digits to
# resolve cancellations; a difference below AGREE relative that evalf cannot resolve is zero.
DIGITS = 60
MAXN = 400
AGREE = sympy.Float("1e-45")
# Differences larger than this at the sample points are a proof of inequality (the fast reject).
CLEARLY_NONZERO = sympy.Float("1e-20")

MIXED = re.compile(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
JUXTAPOSED_FRACTION = re.compile(r"(?<![\d.^_])\d+\\frac\{\d+\}\{\d+\}")
SPACED_DIGITS = re.compile(r"(?<![\d.^_])\d+ \d")
NUMBER_SUBSCRIPT = re.compile(r"(?<![a-zA-Z\\])\d+\s*_")
# \gamma with its subscript, if any: \gamma_0 and \gamma_{0} are the symbol gamma_0, \gamma_{12} is gamma_{12}.
GAMMA = re.compile(r"\\(gamma|Gamma)(?![a-zA-Z])(?:\s*_\s*(?:\{\s*(\w+)\s*\}|(\w)))?")
# Spellings of one subscripted symbol that the grammar reads as different symbols or fails on: {v}_0, m_{\rm e},
# m_{\mathrm{e}}, m_\mathrm{e}, v_0{}^2 become v_0, m_{e}, m_{e}, m_{e}, v_0^2; a one-letter subscript is braced
# (m_e c: the grammar fails on "_e", a TeX subscript is one letter). v_0 and v_{0} already parse alike.
SUBSCRIPT_SPELLINGS = [
    (re.compile(r"(?<![a-zA-Z])\{\s*([A-Za-z]|\\[a-zA-Z]+)\s*\}(?=\s*_)"), r"\1"),
    (re.compile(r"_\s*\{\s*\\(?:mathrm|textrm|text|mathit)\s*\{\s*(\w+)\s*\}\s*\}"), r"_{\1}"),
    (re.compile(r"_\s*\{\s*\\(?:rm|it)(?![a-zA-Z])\s*(\w+)\s*\}"), r"_{\1}"),
    (re.compile(r"_\s*\\(?:mathrm|textrm|text|mathit)\s*\{\s*(\w+)\s*\}"), r"_{\1}"),
    (re.compile(r"_\s*([a-zA-Z])"), r"_{\1}"),
    (re.compile(r"(?<=[\w}])\s*\{\s*\}(?=\s*[_^])"), ""),
]


class Refused(ValueError):
    """The parse of an atom could lose information, so the atom is not compared."""


class _Parser(_Latex2Sympy):
    """latex2sympy2_extended's converter with juxtaposition read as multiplication only."""

    def convert_postfix_list(self, arr, i=0):
        factors = [self.convert_postfix(p) for p in arr[i:]]
        if len(factors) == 1 and not isinstance(factors[0], list):
            return factors[0]
        # The library returns the first factor and drops the rest when it is not an expression
        # (a tuple, a set, a derivative operator): that loses information, so refuse.
        if not all(isinstance(f, (sympy.Expr, sympy.MatrixBase)) for f in factors):
            raise Refused("juxtaposed factors that are not expressions")
        product = factors[-1]
        for f in reversed(factors[:-1]):
            if getattr(f, "is_Matrix", False) or getattr(product, "is_Matrix", False):
                product = self.mat_mul_flat(f, product)
            else:
                product = self.mul_flat(f, product)
        return product


def _real_odd_roots(expr):
    """(-8)^(1/3) -> -2: an odd root of a negative number means the real root in competition math."""
    def is_negative_odd_root(e):
        return (e.is_Pow and e.exp.is_Rational and e.exp.q % 2 == 1 and e.exp.q > 1
                and e.base.is_number and e.base.is_extended_negative is True)

    def real_root(e):
        magnitude = (-e.base) ** e.exp
        return -magnitude if e.exp.p % 2 else magnitude

    return expr.replace(is_negative_odd_root, real_root)


def _gamma_symbol(m: re.Match) -> str:
    sub = m.group(2) or m.group(3)
    return f"\\variable{{{m.group(1)}" + ("" if not sub else f"_{sub}" if len(sub) == 1 else f"_{{{sub}}}") + "}"


@lru_cache(maxsize=256)  # an atom of a list is compared with every atom of the other list
def to_sympy(latex: str):
    """A normalised atom -> a sympy object, or Refused when the parse could lose information."""
    mixed = MIXED.fullmatch(latex)
    if mixed and 0 < int(mixed.group(3)) < int(mixed.group(4)):
        latex = f"{mixed.group(1)}({mixed.group(2)}+\\frac{{{mixed.group(3)}}}{{{mixed.group(4)}}})"
    elif JUXTAPOSED_FRACTION.search(latex):
        raise Refused("an integer juxtaposed with a fraction: a mixed number or a product")
    if SPACED_DIGITS.search(latex):
        raise Refused("digits separated by a space")
    if NUMBER_SUBSCRIPT.search(latex):
        raise Refused("a subscript on a number, which the grammar drops")
    for pattern, replacement in SUBSCRIPT_SPELLINGS:
        latex = pattern.sub(replacement, latex)
    latex = GAMMA.sub(_gamma_symbol, latex)
    expr = _Parser(config=CONVERSION).parse(latex)
    if isinstance(expr, (sympy.Basic, sympy.MatrixBase)):
        if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            raise Refused("a value that is not finite")
        expr = expr.xreplace({s: sympy.I for s in expr.free_symbols if s.name == "i"})
        expr = expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)})
        if isinstance(expr, sympy.Expr):
            expr = _real_odd_roots(expr)
    return expr


def constant_is_zero(diff, scale) -> bool | None:
    """A constant difference of two answers of size `scale`: zero to 45 digits (True), a resolved non-zero
    value (False), or undecided (None). evalf raises its working precision up to MAXN digits to resolve
    a cancellation; if even that finds no significant digit, |diff| is below the bound it reports."""
    try:
        parts = diff.evalf(DIGITS, maxn=MAXN, strict=True).as_real_imag()
        if not all(part.is_Number for part in parts):
            return None  # no numeric value (an undefined function f(2)): leave it to simplify()
        return all(part == 0 for part in parts)
    except PrecisionExhausted:
        bound = diff.evalf(DIGITS, maxn=MAXN)
    scale = abs(sympy.N(scale, 15))
    tolerance = AGREE * (min(1, scale) if scale != 0 else 1)
    parts = bound.as_real_imag()
    if all(part.is_Number and abs(part) <= tolerance for part in parts):
        return True
    return None


def is_zero(diff, scale=1) -> bool:
    """Proof (or, for constants, a 45-digit check) that diff == 0. Expressions in symbols are first
    estimated at two rational points, so that a wrong answer is rejected without the slow simplify()."""
    if isinstance(diff, sympy.MatrixBase):
        return all(is_zero(d) for d in diff)
    if diff == 0:
        return True
    symbols = sorted(diff.free_symbols, key=str)
    if not symbols:
        decided = constant_is_zero(diff, scale)
        if decided is not None:
            return decided
    for point in (sympy.Rational(7, 11), sympy.Rational(-13, 5))[: 2 if symbols else 0]:
        estimate = sympy.N(diff.subs({s: point + k for k, s in enumerate(symbols)}), 30)
        if estimate.is_number and estimate.is_comparable and abs(estimate) > CLEARLY_NONZERO:
            return False
    return sympy.expand(diff) == 0 or sympy.simplify(diff) == 0


def equal(pred: str, ref: str) -> bool:
    """Layer 3 for one pair of normalised atoms. Any parse error or refusal is "not equal"."""
    try:
        a, b = to_sympy(pred), to_sympy(ref)
        if isinstance(a, sympy.Equality) and isinstance(b, sympy.Equality):
            da, db = a.lhs - a.rhs, b.lhs - b.rhs
            if not da.free_symbols or not db.free_symbols:
                return False  # "2=3" is no equation to compare
            ratio = sympy.simplify(da / db)
            return is_zero(da - db) or (ratio.is_number and ratio != 0 and ratio.is_finite is True)
        if isinstance(a, sympy.core.relational.Relational) or isinstance(b, sympy.core.relational.Relational):
            if type(a) is type(b):
                return is_zero((a.lhs - a.rhs) - (b.lhs - b.rhs))
            return type(a) is type(b.reversed) and is_zero((a.lhs - a.rhs) - (b.rhs - b.lhs))
        if isinstance(a, sympy.Set) or isinstance(b, sympy.Set) or isinstance(a, sympy.Tuple):
            return a == b
        if isinstance(a, sympy.MatrixBase) != isinstance(b, sympy.MatrixBase):
            return False
        if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
            return is_zero(a - b, scale=b if not b.free_symbols else 1)
        return is_zero(a - b)
    except Exception:
        return False


def real_value(pred: str, digits: int = 40):
    """A constant atom's real value to `digits` digits (a sympy Float), else None: for decimal references."""
    try:
        expr = to_sympy(pred)
        if not isinstance(expr, sympy.Expr) or expr.free_symbols:
            return None
        value = sympy.N(expr, digits)
    except Exception:
        return None
    return value if value.is_Float else None


def warm() -> None:
    """Load the ANTLR tables and simplify's machinery so that forked children inherit them. The parser
    also caches its predictions per grammar decision: parsing typical shapes here (a product of
    subscripted Greek symbols with a trig power, a fraction in an exponent) makes a child's parse of a
    similar answer several times faster (0.9 s -> 0.2 s for a Minerva formula)."""
    for latex in [r"(\alpha^2-1)m_pc^2\sin^2\theta", r"I(0)e^{-\frac{t}{RC}}"]:
        to_sympy(latex)
    for latex in [r"\frac{\sqrt{3}}{2}+x^{2}", r"\sin(\pi t) \cdot e^{-t}", r"\binom{2n}{n}"]:
        expr = to_sympy(latex)
        sympy.simplify(expr - 1)
        sympy.N(expr.subs({s: sympy.Rational(7, 11) for s in expr.free_symbols}))
    constant_is_zero(sympy.sqrt(5 + 2 * sympy.sqrt(6)) - sympy.sqrt(2) - sympy.sqrt(3), 1)
