"""Finding the final answer in a completion: the last \\boxed{...} or <answer>...</answer>, else the text.

Shared by every verifier, so "what counts as the model's answer" is decided in one place.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL | re.IGNORECASE)


def last_boxed(text: str | None) -> tuple[int, str] | None:
    """(position, content) of the last balanced \\boxed{...} or \\fbox{...}; None if there is none."""
    if not text:
        return None
    best = None
    for macro in ("\\boxed{", "\\fbox{"):
        start = text.rfind(macro)
        while start != -1:
            i, depth = start + len(macro), 1
            while i < len(text):
                ch = text[i]
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            if depth == 0:
                if best is None or start > best[0]:
                    best = (start, text[start + len(macro):i].strip())
                break
            start = text.rfind(macro, 0, start)  # unbalanced: try an earlier one
    return best


def last_answer_tag(text: str | None) -> tuple[int, str] | None:
    """(position, content) of the last <answer>...</answer>; None if there is none."""
    if not text:
        return None
    matches = list(_ANSWER_TAG.finditer(text))
    if not matches:
        return None
    return matches[-1].start(), matches[-1].group(1).strip()


def marked_answer(text: str | None) -> str | None:
    """The content of whichever of \\boxed{} and <answer> tags comes last; None if neither is present."""
    found = [m for m in (last_boxed(text), last_answer_tag(text)) if m is not None]
    return max(found)[1] if found else None


# A number as people write it: optional sign, thousands separators only in groups of three, decimals,
# or a plain fraction.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|(?<![\w\d])-?\.\d+")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")


def last_number(text: str | None) -> str | None:
    """The last number in `text` (LaTeX \\frac{a}{b} counts as a/b); None if there is none."""
    if not text:
        return None
    text = _LATEX_FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    text = text.replace("\u2212", "-")  # unicode minus
    matches = _NUMBER.findall(text)
    return matches[-1] if matches else None


def to_fraction(text: str | None) -> Fraction | None:
    """Parse "2,125", "$18.50", "-3/4", "45%", "7." into an exact Fraction; None if it is not a number."""
    if text is None:
        return None
    t = unicodedata.normalize("NFKC", text).strip().replace("\u2212", "-")
    t = re.sub(r"^\\\(|\\\)$|^\$+|\$+$", "", t).strip()
    t = t.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").replace("\\!", "")
    t = t.replace(",", "").replace(" ", "").rstrip(".")
    m = _LATEX_FRAC.fullmatch(t)
    if m:
        t = f"{m.group(1)}/{m.group(2)}"
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            return Fraction(num) / Fraction(den)
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def format_number(value: Fraction) -> str:
    """A canonical text for an exact number: 2125, 18.5, -3/4."""
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value:
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"


def normalise_text(text: str | None) -> str:
    """Case-, width- and space-insensitive form; surrounding quotes, $ and a trailing period removed."""
    t = unicodedata.normalize("NFKC", text or "").strip().lower()
    t = re.sub(r"\s+", " ", t)
    t = t.strip().strip("\"'`$").strip().rstrip(".").strip()
    return t
