"""Parsing lme4 model formulas.

An lme4 formula is an ordinary model formula for the fixed effects plus random-effects terms
in parentheses: ``(expr | group)`` for correlated random effects of the columns of ``expr``
within the levels of ``group``, ``(expr || group)`` for uncorrelated ones. ``group`` may be a
factor ``g``, an interaction ``a:b``, or a nesting ``a/b`` (short for ``a`` and ``a:b``).

``parse_formula`` splits the formula into the response, the fixed-effects right-hand side (for
formulaic), the ``offset(...)`` terms and a tuple of :class:`RandomTerm`; nothing is evaluated
here. R's spelling is translated for formulaic by ``to_formulaic``: a dotted name
(``Informed.liking``) is one name, ``^`` inside ``I()`` is a power, and a name that is a Python
keyword (``yield``) is quoted. Redundant parentheses around a term are dropped, as R drops them.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from functools import lru_cache

from .checks import DataError


class FormulaError(DataError):
    """The formula cannot be read as an lme4 mixed-model formula."""


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | factors)``: ``factors`` are joined by ``:``."""

    expr: str
    factors: tuple[str, ...]

    @property
    def group(self) -> str:
        """The grouping factor's name, as lme4 prints it (``Lab:Technician``)."""
        return ":".join(self.factors)


@dataclass(frozen=True)
class ParsedFormula:
    """An lme4 formula split into its parts."""

    formula: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...] = ()  # the expressions inside offset(...), for formulaic


def _top_level(text: str, separators: str) -> list[int]:
    """Where in ``text`` the one-character ``separators`` stand outside parentheses and outside
    backtick-quoted names (```a (b)```); unbalanced parentheses are a FormulaError."""
    positions, depth, quoted = [], 0, False
    for i, ch in enumerate(text):
        if ch == "`":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced parentheses in {text!r}")
        elif ch in separators and depth == 0:
            positions.append(i)
    if depth != 0:
        raise FormulaError(f"unbalanced parentheses in {text!r}")
    return positions


def split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` at the one-character ``sep`` outside parentheses and backtick-quoted names."""
    bounds = [-1, *_top_level(text, sep), len(text)]
    return [text[a + 1:b] for a, b in zip(bounds, bounds[1:])]


def _r_powers(text: str) -> str:
    """Translate R's ``^`` to Python's ``**`` inside ``I(...)``, where it means a power."""
    out, i = [], 0
    for match in re.finditer(r"\bI\(", text):
        if match.start() < i:
            continue
        depth, j = 1, match.end()
        while j < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        out.append(text[i : match.end()])
        out.append(text[match.end() : j].replace("^", "**"))
        i = j
    out.append(text[i:])
    return "".join(out)


def _quote_keywords(text: str) -> str:
    """Backtick-quote names that are Python keywords (``yield``, ``class``) for formulaic."""
    def quote(match: re.Match) -> str:
        word = match.group(0)
        return f"`{word}`" if keyword.iskeyword(word) and word not in ("True", "False", "None") else word

    pieces = re.split(r"(`[^`]*`)", text)  # leave names that are already quoted alone
    return "".join(p if p.startswith("`") else re.sub(r"\b[A-Za-z_]\w*\b", quote, p) for p in pieces)


# an R name with a dot in it (not a call such as np.log(x), not a number such as 0.5)
_DOTTED_NAME = re.compile(r"(?<![\w.`])([A-Za-z][\w]*(?:\.[\w]*)+|\.[A-Za-z_][\w.]*)(?![\w.]*\s*\()")


def _quote_dotted(text: str) -> str:
    """Backtick-quote R names with dots (``Informed.liking``), which formulaic would read as an
    attribute; names already in backticks are left alone."""
    pieces = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else _DOTTED_NAME.sub(r"`\1`", p) for p in pieces)


def to_formulaic(text: str) -> str:
    """An R formula expression written as formulaic reads it (module docstring); ``as.factor(x)``
    is ``factor(x)``."""
    text = re.sub(r"(?<![\w.])as\.factor\(", "factor(", text)  # R's other spelling of factor()
    text = re.sub(r"(?<![\w.`])(TRUE|FALSE)(?![\w.`])", lambda m: m.group(1).title(), text)  # R's logicals
    return _quote_keywords(_quote_dotted(_r_powers(text)))


def _strip_parentheses(term: str) -> str:
    """``((1 | g))`` -> ``(1 | g)``; ``(x)`` -> ``x``: parentheses around a whole term mean nothing,
    except the one pair that a random-effects term needs."""
    while term.startswith("(") and term.endswith(")") and len(split_top_level(term[1:-1], ")")) == 1:
        inner = term[1:-1].strip()
        try:
            split_top_level(inner, "+")  # balanced inside: the outer pair encloses the whole term
        except FormulaError:
            break
        if "|" in inner and not (inner.startswith("(") and inner.endswith(")")):
            break  # (expr | g): keep the pair that makes it a random-effects term
        term = inner
    return term


_FACTOR_CALL = re.compile(r"^(?:factor|as\.factor)\(\s*(.+?)\s*\)$")


def group_name(name: str) -> str:
    """A grouping factor's column: ``g``, ```a b``` or ``factor(g)`` (a grouping factor is a factor
    already) -> the column's name."""
    name = name.strip()
    call = _FACTOR_CALL.match(name)
    if call:
        name = call.group(1)
    if name.startswith("`") and name.endswith("`") and len(name) > 2 and name.count("`") == 2:
        return name[1:-1]
    if not re.fullmatch(r"[A-Za-z_.][\w.]*", name):
        raise FormulaError(
            f"cannot read {name!r} as a grouping factor: use column names joined by ':' or '/', e.g. "
            "(1 | school) or (1 | lab/technician), with `backticks` around a name with spaces"
        )
    return name


def _expand_group(group: str) -> list[tuple[str, ...]]:
    """``a/b/c`` -> [(a,), (a, b), (a, b, c)]; ``a:b`` -> [(a, b)]; ``a`` -> [(a,)]."""
    nested = [g.strip() for g in split_top_level(group, "/")]
    if any(not g for g in nested):
        raise FormulaError(f"cannot read the grouping factor {group!r}")
    out = []
    for depth in range(1, len(nested) + 1):
        out.append(tuple(group_name(f) for part in nested[:depth] for f in split_top_level(part, ":")))
    return out if len(nested) > 1 else [out[-1]]


def _signed_terms(text: str) -> list[tuple[str, str]]:
    """The terms of a right-hand side joined by ``+`` or ``-`` outside parentheses and backticks,
    each with its sign: ``a + (1 | g) - 1`` -> [("+", "a"), ("+", "(1 | g)"), ("-", "1")]."""
    cuts = [i for i in _top_level(text, "+-") if not re.search(r"\d[eE]$", text[:i])]  # not the - of 1e-5
    bounds = [-1, *cuts, len(text)]
    return [("+" if a < 0 else text[a], text[a + 1:b]) for a, b in zip(bounds, bounds[1:])]


_OFFSET = re.compile(r"^offset\((.*)\)$", re.S)


def _uncorrelated(expr: str) -> list[str]:
    """Split the terms of ``expr`` for ``||``: the intercept and each other term separately."""
    terms = [t.strip() for t in split_top_level(expr, "+") if t.strip()]
    has_intercept = not any(t in ("0", "-1") for t in terms)
    others = [t for t in terms if t not in ("0", "1", "-1")]
    out = ["1"] if has_intercept else []
    out += [f"0 + {t}" for t in others]
    return out


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random-effects terms.

    The answer is a pure function of the string and immutable (frozen dataclasses of strings and
    tuples), so a string's parse is kept (``_parse``) for the next fit of the same formula."""
    if not isinstance(formula, str) or "~" not in formula:
        raise FormulaError(f"a formula must be a string 'response ~ terms', got {formula!r}")
    # a subclass of str may hash or compare as it likes: parsed afresh, and kept as given
    return _parse(formula) if type(formula) is str else _parse.__wrapped__(formula)


@lru_cache(maxsize=256)
def _parse(formula: str) -> ParsedFormula:
    """``parse_formula`` of a string with a '~' (a FormulaError is raised again on every call:
    lru_cache keeps answers, not exceptions)."""
    lhs, _, rhs = formula.partition("~")
    response = lhs.strip()
    if not response:
        raise FormulaError(f"the formula {formula!r} has no response on the left of '~'")
    if "~" in rhs:
        raise FormulaError(f"the formula {formula!r} has more than one '~'")

    if re.search(r"(?<![\w.`])\.(?![\w.])", rhs):
        raise FormulaError(
            f"the formula {formula!r} uses '.' (all other columns), which lmmnotes does not expand: "
            "name the columns, e.g. 'y ~ x1 + x2 + (1 | g)'"
        )
    fixed_parts: list[str] = []
    offsets: list[str] = []
    random: list[RandomTerm] = []
    for sign, part in _signed_terms(rhs):
        term = _strip_parentheses(part.strip())
        if not term:
            continue
        if sign == "-":  # y ~ x + (1 | g) - 1: removes a fixed term (the intercept, here)
            if "|" in term or _OFFSET.match(term):
                raise FormulaError(f"'- {term}' removes a term, which only fixed-effects terms can be")
            fixed_parts.append(f"-{term}" if term in ("1", "0") else f"-({term})")
            continue
        offset = _OFFSET.match(term)
        if offset:
            if not offset.group(1).strip():
                raise FormulaError(f"the term {term!r} needs a column, e.g. offset(log(exposure))")
            offsets.append(to_formulaic(offset.group(1).strip()))
            continue
        inner = term[1:-1] if term.startswith("(") and term.endswith(")") else None
        if inner is not None and "|" in inner and len(split_top_level(inner, "|")) > 1:
            pieces = split_top_level(inner, "|")
            if len(pieces) == 3 and pieces[1] == "":  # (expr || group)
                expr, group, correlated = pieces[0].strip(), pieces[2].strip(), False
            elif len(pieces) == 2:
                expr, group, correlated = pieces[0].strip(), pieces[1].strip(), True
            else:
                raise FormulaError(f"cannot read the random-effects term {term!r}")
            if not expr or not group:
                raise FormulaError(
                    f"the random-effects term {term!r} needs an expression and a grouping factor, "
                    "e.g. (1 | group) or (x | group)"
                )
            exprs = [expr] if correlated else _uncorrelated(expr)
            for factors in _expand_group(group):
                random.extend(RandomTerm(to_formulaic(e), factors) for e in exprs)
        elif "|" in term:
            raise FormulaError(
                f"the term {term!r} uses '|' outside parentheses; write random effects as (expr | group)"
            )
        else:
            fixed_parts.append(term)

    fixed = " + ".join(p for p in fixed_parts if not p.startswith("-(")) or "1"
    fixed += "".join(f" - {p[2:-1]}" for p in fixed_parts if p.startswith("-("))
    # A right-hand side of only "0" or "-1" leaves no columns: formulaic reads "0" fine.
    return ParsedFormula(
        formula=formula,
        response=to_formulaic(response),
        fixed=to_formulaic(fixed),
        random=tuple(random),
        offsets=tuple(offsets),
    )
