"""Reading math answers for reasonrl/grading/grader.py: an answer string -> a structure of atoms -> each atom's value.

  parse_structure   tuples, intervals, sets, bare lists, unions, matrices and "(p, q) = (3, 2)", split as
                    strings into atoms (layer 0 of reasonrl/grading/grader.py)
  normalize         one atom -> (value string, unit): Hendrycks MATH normalisation plus units, \\text{},
                    degrees, percent, dollars and thousands separators (layer 1)
  to_number         a normalised atom -> an exact Fraction and the precision a decimal states (layer 2)

Each step keeps what changes the meaning: a space between digits or between a command and a letter, a
composition \\circ, letters after a number that are no known unit ("2xy"), the case of "AB".
"""

import re
from fractions import Fraction

# Exponents and digit strings beyond these are left to the killable child instead of Fraction.
MAX_EXPONENT = 400
MAX_DIGITS = 400

# ---------------------------------------------------------------- structure (layer 0)


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
    s = re.sub(r"(?<=[)\]}])\s*(?:or|and)\s*(?=[(\[{\\])", ",", s)  # "(11,7)or(7,11)"
    s = re.sub(r"\\(?:textbf|mathbf|boldsymbol|mathit|textit)\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])\s*", "", s)
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


NAME = r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?"
NAMED_TUPLE = re.compile(rf"\(\s*({NAME}(?:\s*,\s*{NAME})+)\s*\)\s*=(?!=)(.+)", re.S)


def parse_structure(s: str):
    """Answer string -> nested tuples: ("atom", s), ("ordered", brackets, [..]), ("unordered", [..]) for a
    bare list, ("set", [..]) for one in braces, ("union", [..]), ("matrix", [[..], ..]) or
    ("named", (names..), tree) for "(p, q) = (3, 2)"."""
    s = s.strip()
    named = NAMED_TUPLE.fullmatch(s)
    if named:
        names = tuple(re.sub(r"[\s{}]", "", n) for n in named.group(1).split(","))
        return ("named", names, parse_structure(named.group(2)))
    if s.startswith("{") and _closes_at_end(s):  # a group of braces around a list: "{1, 2}" is a set
        inner = parse_structure(s[1:-1])
        return ("set", inner[1]) if inner[0] == "unordered" else inner
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
        return ("set", [parse_structure(p) for p in _expand_pm(_split_top(s[2:-2], (",", ";")))])
    if len(s) > 1 and s[0] in "([" and s[-1] in ")]" and _closes_at_end(s):
        inner = _split_top(s[1:-1], (",",))
        if len(inner) == 1:  # "(0; -2; 6)", "[0; 1]": semicolons separate coordinates when there is no comma
            inner = _split_top(s[1:-1], (";",))
        if len(inner) > 1:
            return ("ordered", s[0] + s[-1], [parse_structure(p) for p in inner])
        if s[0] == "(":
            return parse_structure(s[1:-1])
    pm = _expand_pm([s])
    if len(pm) == 2:
        return ("unordered", [("atom", a) for a in pm])
    return ("atom", s)


# ---------------------------------------------------------------- atoms (layer 1)


def strip_string(s: str, hendrycks: bool = True) -> str:
    """Hendrycks MATH normalisation (the JustRL rule): spacing, \\left/\\right, dfrac, degrees, dollars,
    percent, \\text{ unit}, fraction shorthands, leading zeros. hendrycks=False (this grader) keeps what
    changes the meaning: spaces between a command and a letter ("\\cos h" is not "\\cosh") and between
    digits ("2^3 3" is not "2^33"; "10 000" is 10000), and a \\circ that is a composition ("f \\circ g")."""
    s = s.replace("\n", " ").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])\.?", "", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree", "", s) if hendrycks else DEGREES.sub("", s)
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\\text\{\s+[^{}]*\}$", "", s.strip())  # Hendrycks: a trailing "\text{ unit}"
    s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)
    if not hendrycks:
        s = _drop_spaces(re.sub(r"\\frac\s*(\d)\s*(\d)(?!\d)", r"\\frac{\1}{\2}", s))
    else:
        s = s.replace(" ", "")
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"^(-?\d+)/(\d+)$", r"\\frac{\1}{\2}", s)
    return s.rstrip(".")


def _drop_spaces(s: str) -> str:
    keep = "\x00"  # marks a space that separates tokens while the others are removed
    s = re.sub(r"(?<![\d.^_{])\d{1,3}(?: \d{3})+(?!\d)", lambda m: m.group(0).replace(" ", ""), s)
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", lambda m: m.group(1) + keep, s)
    s = re.sub(r"(?<=\d)\s+(?=\d)", keep, s)
    return re.sub(r"\s+", "", s).replace(keep, " ")


# A bare \circ is a degree only after a digit: "f \circ g" is a composition, not "f g".
DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|(?<=\d)\s*\\circ|°|\\degree(?![a-zA-Z])")
UNIT_BLOCK = re.compile(r"\\(?:text|mbox|textrm|textnormal|mathrm)\s*\{([^{}]*)\}(\s*\^\s*\{?-?\d\}?)?")
UNIT_TAIL = re.compile(r"(?:\s|\\[,;:! ]|/|\\cdot|\^\s*\{?-?\d\}?|" + UNIT_BLOCK.pattern + ")*")
TRAILING_UNIT_WORDS = re.compile(r"^(.*?[\d}])(\s*)([a-zA-Z]{2,}(?:\s+[a-zA-Z]{2,})*)\s*(\^\s*\{?\d\}?)?$")
# Plain letters after a number are a unit only if a space sets them apart and they are a known unit
# ("15 cm", "3 mph") or words of 4+ letters with a vowel ("12 apples"): "2xy", "2nm", "\frac{1}{2}bh" and
# "3 ab" are products.
UNIT_WORDS = set(
    "mm cm dm km meter metre millimeter centimeter kilometer inch inche ft feet foot yd yard mile mph kph"
    " mg kg gram kilogram lb lbs pound oz ounce ton sec second min minute hr hour day week month yr year"
    " deg degree rad radian ml liter litre gallon quart pint cup dollar cent euro percent unit sq square"
    " cubic ev kev mev gev erg joule watt kw newton pa hz khz mhz ghz nm au pc kpc mpc ly".split()
)
# Percent written as a word ("50 pct", "50 per cent", "5 percentage points") is the unit of "50\\%".
PERCENT_WORDS = re.compile(r"(?<![a-zA-Z\\])(?:per\s*cent|pct\.?)(?![a-zA-Z])")
PERCENT_SIGN = re.compile(r"\s*\\?%\s*$")
PERCENT_UNITS = {"percent", "percentage", "percentagepoint", "pct"}
TRIG_DEGREES = re.compile(r"(\d+(?:\.\d+)?|\{[^{}]*\})\s*(?:" + DEGREES.pattern + ")")
TEXT_ONLY = re.compile(r"\s*\\(?:text|mbox|textrm|textnormal|mathrm)\s*\{[^{}]*\}\s*")


def _is_unit(words: str, spaced: bool) -> bool:
    def known(w: str) -> bool:
        return w in UNIT_WORDS or w.rstrip("s") in UNIT_WORDS or (len(w) >= 4 and re.search(r"[aeiouy]", w) is not None)

    return spaced and all(known(w) for w in words.lower().split())


def normalize(atom: str) -> tuple[str, str]:
    """One atom -> (value, unit). A unit is a \\text{}/\\mbox{} word other than i, e (with its power) or plain
    words after a number; it is returned apart so "15 cm^2" matches "15" but not "15 cm^3". An atom
    that is only text ("\\text{Evelyn}") is its text, lower-cased. Degrees are dropped, except inside a
    trigonometric function, where they become radians: "\\sin 30^\\circ" is 1/2, not sin(30)."""
    if re.search(r"\\(?:sin|cos|tan|cot|sec|csc)(?![a-zA-Z])", atom):
        atom = TRIG_DEGREES.sub(r"(\1\\cdot\\frac{\\pi}{180})", atom)
    atom = DEGREES.sub("", PERCENT_WORDS.sub("percent", atom))
    text_only = TEXT_ONLY.fullmatch(atom) is not None
    blocks = [m for m in UNIT_BLOCK.finditer(atom) if re.search(r"[a-zA-Z]", m.group(1)) and m.group(1).strip() not in ("i", "e")]
    # A unit trails the value: "\frac{3}{2}\mathrm{k}T" and "m_\mathrm{p}" name quantities, they are no units.
    blocks = [m for m in blocks if not re.search(r"[_^]\s*$", atom[: m.start()])
              and UNIT_TAIL.fullmatch(atom[m.end():])]
    rest = atom
    for m in reversed(blocks):
        rest = rest[: m.start()] + " " + rest[m.end():]
    unit = ""
    if blocks and re.search(r"\w", rest.replace("\\$", "").replace("\\%", "")):
        unit, atom = " ".join(m.group(1) + (m.group(2) or "") for m in blocks), re.sub(r"(?:\s|/|\\cdot)*$", "", rest)
    atom = UNIT_BLOCK.sub(lambda m: m.group(1) + (m.group(2) or ""), atom)
    percent = PERCENT_SIGN.search(atom)
    if percent and not unit and atom[: percent.start()].strip():  # "50\%" is 50 in the unit percent
        atom, unit = atom[: percent.start()], "percent"
    words = TRAILING_UNIT_WORDS.match(atom.strip())
    if words and not unit and _is_unit(words.group(3), spaced=bool(words.group(2))):
        atom, unit = words.group(1), words.group(3) + (words.group(4) or "")
    value = strip_string(atom, hendrycks=False)
    while value.startswith("{") and _closes_at_end(value):
        value = value[1:-1]
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", value):
        value = value.replace(",", "")
    if re.fullmatch(r"[a-zA-Z]{2,}" if text_only else r"[A-Z]?[a-z]{2,}", value):
        value = value.lower()  # "\text{EAST}" and "East" are east; "AB" (a segment) is not ab (a product)
    # Case is folded only for words ("Inches"): "MeV" is not "meV", "Ms" is not "ms".
    unit = re.sub(r"\b[A-Z]?[a-z]{2,}\b", lambda m: m.group(0).lower(), unit)
    unit = re.sub(r"(?:square|sq)\s+(\w+)", r"\1^2", unit)
    unit = re.sub(r"cubic\s+(\w+)", r"\1^3", unit)
    unit = re.sub(r"(?<=[a-z]{2})s(?=\^|$)", "", re.sub(r"[\s{}\\]", "", unit))  # a plural; "s" is seconds
    return value, "percent" if unit in PERCENT_UNITS else unit


# ---------------------------------------------------------------- numbers (layer 2)

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
    # A mixed number, 1\frac{4}{5} or "1 4/5" (the space kept by normalize); 2\frac{3}{2} and "2 3/2" are not.
    m = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", value) or re.fullmatch(r"(-?)(\d+) (\d+)/(\d+)", value)
    if m and 0 < int(m.group(3)) < int(m.group(4)):
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
