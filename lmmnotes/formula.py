"""Parsing lme4 model formulas.

An lme4 formula is an ordinary model formula for the fixed effects plus random-effects terms
in parentheses: ``(expr | group)`` for correlated random effects of the columns of ``expr``
within the levels of ``group``, ``(expr || group)`` for uncorrelated ones. ``group`` may be a
factor ``g``, an interaction ``a:b``, or a nesting ``a/b`` (short for ``a`` and ``a:b``).

``parse_formula`` splits the formula into the response, the fixed-effects right-hand side (for
formulaic) and a tuple of :class:`RandomTerm`; nothing is evaluated here.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass


class FormulaError(ValueError):
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


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` at occurrences of the one-character ``sep`` outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced parentheses in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise FormulaError(f"unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return parts


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


def _expand_group(group: str) -> list[tuple[str, ...]]:
    """``a/b/c`` -> [(a,), (a, b), (a, b, c)]; ``a:b`` -> [(a, b)]; ``a`` -> [(a,)]."""
    nested = [g.strip() for g in group.split("/")]
    if any(not g for g in nested):
        raise FormulaError(f"cannot read the grouping factor {group!r}")
    out = []
    for depth in range(1, len(nested) + 1):
        factors = tuple(f.strip().strip("`") for part in nested[:depth] for f in part.split(":"))
        if any(not f or not re.fullmatch(r"[\w.]+", f) for f in factors):
            raise FormulaError(
                f"grouping factor {group!r}: use column names joined by ':' or '/', "
                "e.g. (1 | school) or (1 | lab/technician)"
            )
        out.append(factors)
    return out if len(nested) > 1 else [out[-1]]


def _uncorrelated(expr: str) -> list[str]:
    """Split the terms of ``expr`` for ``||``: the intercept and each other term separately."""
    terms = [t.strip() for t in _split_top_level(expr, "+") if t.strip()]
    has_intercept = not any(t in ("0", "-1") for t in terms)
    others = [t for t in terms if t not in ("0", "1", "-1")]
    out = ["1"] if has_intercept else []
    out += [f"0 + {t}" for t in others]
    return out


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random-effects terms."""
    if not isinstance(formula, str) or "~" not in formula:
        raise FormulaError(f"a formula must be a string 'response ~ terms', got {formula!r}")
    lhs, _, rhs = formula.partition("~")
    response = lhs.strip()
    if not response:
        raise FormulaError(f"the formula {formula!r} has no response on the left of '~'")
    if "~" in rhs:
        raise FormulaError(f"the formula {formula!r} has more than one '~'")

    fixed_parts: list[str] = []
    random: list[RandomTerm] = []
    for part in _split_top_level(rhs, "+"):
        term = part.strip()
        if not term:
            continue
        inner = term[1:-1] if term.startswith("(") and term.endswith(")") else None
        if inner is not None and "|" in inner and len(_split_top_level(inner, "|")) > 1:
            pieces = _split_top_level(inner, "|")
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
                random.extend(RandomTerm(_quote_keywords(_r_powers(e)), factors) for e in exprs)
        elif "|" in term:
            raise FormulaError(
                f"the term {term!r} uses '|' outside parentheses; write random effects as (expr | group)"
            )
        else:
            fixed_parts.append(term)

    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    # A right-hand side of only "0" or "-1" leaves no columns: formulaic reads "0" fine.
    return ParsedFormula(
        formula=formula,
        response=_quote_keywords(_r_powers(response)),
        fixed=_quote_keywords(_r_powers(fixed)),
        random=tuple(random),
    )
