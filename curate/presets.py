"""Presets for well-known dataset formats, column auto-detection, and answer typing.

A `ColumnPlan` says which source columns become the canonical prompt/answer/solution/id and how
(a preset such as `gsm8k` parses the final answer out of a longer text). Each plan converts one
record at a time (`convert`, used by `load_problems`, which needs row-level errors) and also as
polars expressions (`polars_exprs`, used by `profile`, which must stream millions of rows).
The two paths share their regular expressions; tests check they agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from stagewise.curate.errors import InputError

PRESETS = ("gsm8k", "math", "reasoning-gym")

# Candidate column names, most specific first (matched case-insensitively).
PROMPT_NAMES = ("prompt", "question", "problem", "input", "instruction", "query")
ANSWER_NAMES = ("answer", "final_answer", "expected_answer", "ground_truth", "gold", "target", "label",
                "output")
SOLUTION_NAMES = ("solution", "rationale", "explanation", "reasoning", "answer_cot", "cot", "steps")
ID_NAMES = ("id", "uid", "unique_id", "problem_id", "qid", "idx")

# GSM8K: "<<48/2=24>>" calculator annotations are tool calls, not prose: strip them from solutions.
GSM8K_MARKER = "####"
CALC_ANNOTATION = r"<<[^<>]*>>"
_CALC_RE = re.compile(CALC_ANNOTATION)

# \boxed{...} with up to four levels of nested braces, for polars (its regex engine has no recursion).
# The Python path scans braces exactly (`last_boxed`); answers nested deeper than this are rare.
_NEST = r"[^{}]*"
for _ in range(4):
    _NEST = r"(?:[^{}]|\{" + _NEST + r"\})*"
BOXED_PATTERN = r"\\boxed\{(" + _NEST + r")\}"

# Answer types, checked in this order on the stripped answer.
ANSWER_TYPES = ("integer", "decimal", "fraction", "latex", "text", "empty")
INTEGER_PATTERN = r"^[+-]?\d+$"
DECIMAL_PATTERN = r"^[+-]?(?:\d+\.\d*|\.\d+)$"
FRACTION_PATTERN = r"^[+-]?(?:\d+\s*/\s*\d+|\\[dt]?frac\{\d+\}\{\d+\})$"
LATEX_PATTERN = r"[\\^_{}$]"


def answer_type(answer) -> str:
    """integer, decimal, fraction, latex, text or empty (the same rules as the polars expression)."""
    text = "" if answer is None else str(answer).strip()
    if not text:
        return "empty"
    for name, pattern in (("integer", INTEGER_PATTERN), ("decimal", DECIMAL_PATTERN),
                          ("fraction", FRACTION_PATTERN)):
        if re.search(pattern, text):
            return name
    return "latex" if re.search(LATEX_PATTERN, text) else "text"


def answer_type_expr(col: str = "answer"):
    import polars as pl

    a = pl.col(col).str.strip_chars()
    return (
        pl.when(a.is_null() | (a == "")).then(pl.lit("empty"))
        .when(a.str.contains(INTEGER_PATTERN)).then(pl.lit("integer"))
        .when(a.str.contains(DECIMAL_PATTERN)).then(pl.lit("decimal"))
        .when(a.str.contains(FRACTION_PATTERN)).then(pl.lit("fraction"))
        .when(a.str.contains(LATEX_PATTERN)).then(pl.lit("latex"))
        .otherwise(pl.lit("text"))
    )


def last_boxed(text: str | None) -> str | None:
    """The content of the last \\boxed{...} in `text`, with balanced braces; None if there is none."""
    if not text:
        return None
    start = text.rfind("\\boxed{")
    while start != -1:
        i, depth = start + len("\\boxed{"), 1
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len("\\boxed{"):i].strip()
            i += 1
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try an earlier one
    return None


def parse_gsm8k(raw: str) -> tuple[str, str] | None:
    """(answer, solution) from a GSM8K answer text, or None if it has no `####` marker."""
    if GSM8K_MARKER not in raw:
        return None
    head, _, tail = raw.rpartition(GSM8K_MARKER)
    # Thousands separators: GSM8K writes "2,125"; the gold answer is 2125.
    answer = tail.strip().replace(",", "")
    solution = _CALC_RE.sub("", head).strip()
    return answer, (solution or None)


class RowError(Exception):
    """One unusable row: what is wrong, in which column, and how to fix it."""

    def __init__(self, message: str, column: str | None = None, fix: str | None = None, kind: str = "parse"):
        super().__init__(message)
        # kind: "parse" (the preset could not find the answer), "missing" (null answer), "type", "prompt"
        self.message, self.column, self.fix, self.kind = message, column, fix, kind


SKIP_FIX = "pass --skip-bad to skip such rows (and --rejects PATH to keep them)"


def _scalar_text(value, logical: str, column: str | None = None) -> str | None:
    """A scalar cell as text; lists and objects are an error (an answer must be one value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    kind = "list" if isinstance(value, (list, tuple)) else type(value).__name__
    raise RowError(f"expected one value, got a {kind}: {json.dumps(value, default=str)[:80]}",
                   column or logical, f"pass --{column_flag(logical)} naming a column with a single value, or {SKIP_FIX}",
                   kind="type")


def column_flag(column: str) -> str:
    return {"prompt": "prompt-col", "answer": "answer-col", "solution": "solution-col",
            "id": "id-col"}.get(column, "answer-col")


@dataclass
class ColumnPlan:
    """How one source's columns become canonical problem fields."""

    preset: str | None  # None = generic columns
    prompt: str
    answer: str | None
    solution: str | None = None
    id: str | None = None
    task: str = "math"
    task_col: str | None = None  # a per-row task column (e.g. re-reading a stagewise export)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        answer = self.answer
        if self.preset == "gsm8k":
            answer = f"{self.answer} after ####"
        elif self.answer is None and self.solution:
            answer = f"\\boxed in {self.solution}"
        elif self.preset == "math":
            answer = f"{self.answer} or \\boxed in {self.solution}"
        solution = self.solution
        if self.preset == "gsm8k":
            solution = f"{self.answer} before ####"
        return {"preset": self.preset or "generic", "prompt": self.prompt, "answer": answer,
                "solution": solution, "id": self.id,
                "task": f"{self.task_col} column, else {self.task}" if self.task_col else self.task,
                "notes": list(self.notes)}

    # -- one record at a time ------------------------------------------------------------------
    def convert(self, rec: dict, *, require_prompt: bool = True) -> dict:
        """Canonical fields {id, prompt, answer, solution, task, meta} or raise RowError.

        A profile counts missing prompts instead of stopping: it passes require_prompt=False."""
        prompt = _scalar_text(rec.get(self.prompt), "prompt", self.prompt)
        if require_prompt and (prompt is None or not prompt.strip()):
            raise RowError("empty prompt", self.prompt, f"fill it, or {SKIP_FIX}", kind="prompt")
        solution = _scalar_text(rec.get(self.solution), "solution", self.solution) if self.solution else None
        task = self.task
        meta = {}
        if self.preset == "gsm8k":
            raw = _scalar_text(rec.get(self.answer), "answer", self.answer)
            if raw is None:
                raise RowError("null answer", self.answer, f"fill it, or {SKIP_FIX}", kind="missing")
            parsed = parse_gsm8k(raw)
            if parsed is None:
                raise RowError(f"no '####' final-answer marker in {raw[:60]!r}", self.answer,
                               "this row is not in GSM8K format; drop the 'gsm8k:' prefix and pass "
                               f"--answer-col, or {SKIP_FIX}")
            answer, solution = parsed
            if not answer:
                raise RowError("nothing after '####'", self.answer, f"fill it, or {SKIP_FIX}")
        elif self.preset == "reasoning-gym":
            entry = {k: v for k, v in rec.items() if not k.startswith("_")}
            answer = _scalar_text(rec.get("answer"), "answer", "answer") or ""
            md = rec.get("metadata") or {}
            if isinstance(md, str):
                md = json.loads(md)
            solution = solution or md.get("answer_cot") or _expression_solution(md, answer)
            task = "rg:" + str(md.get("source_dataset") or rec.get("_rg_name") or "unknown")
            # The whole entry, so the rg verifier can call the dataset's score_answer(answer, entry).
            meta = {"rg_entry": json.loads(json.dumps(entry, default=_jsonable))}
        else:
            answer = _scalar_text(rec.get(self.answer), "answer", self.answer) if self.answer else None
            if answer is None or (self.preset == "math" and not answer.strip()):
                if self.answer is None or self.preset == "math":
                    answer = last_boxed(solution)
                    if answer is None:
                        raise RowError("no answer and no \\boxed{} in the solution",
                                       self.solution or self.answer,
                                       f"pass --answer-col naming the final-answer column, or {SKIP_FIX}")
                else:
                    raise RowError("null answer", self.answer, f"fill it, or {SKIP_FIX}", kind="missing")
        used = {self.prompt, self.answer, self.solution, self.id}
        if self.task_col and is_task_name(rec.get(self.task_col)):
            task = str(rec[self.task_col])
            used.add(self.task_col)  # otherwise (a category such as "algebra") it stays in meta
        if self.preset != "reasoning-gym":
            for k, v in rec.items():
                if k not in used and not k.startswith("_"):
                    if k == "meta" and isinstance(v, str):
                        try:
                            meta.update(json.loads(v))
                            continue
                        except ValueError:
                            pass
                    meta[k] = v
        pid = _scalar_text(rec.get(self.id), "id", self.id) if self.id else None
        return {"id": pid or "", "prompt": prompt, "answer": answer, "solution": solution or None,
                "task": task, "meta": meta}

    # -- polars, for streaming profiles --------------------------------------------------------
    def polars_exprs(self, schema) -> list:
        """Expressions producing prompt, answer, solution, id, task, parse_fail from a scanned frame."""
        import polars as pl

        def text(col):
            if col is None or col not in schema:
                return pl.lit(None, dtype=pl.String)
            return pl.col(col).cast(pl.String)

        prompt = text(self.prompt)
        solution = text(self.solution)
        task = pl.lit(self.task)
        if self.task_col and self.task_col in schema:
            col = text(self.task_col)
            task = pl.when(col.str.contains(TASK_NAME_PATTERN).fill_null(False)).then(col).otherwise(task)
        if self.preset == "gsm8k":
            raw = text(self.answer)
            tail = raw.str.split(GSM8K_MARKER).list.last()  # after the last marker, like rpartition
            has = raw.str.contains(GSM8K_MARKER, literal=True).fill_null(False)
            answer = pl.when(has).then(tail.str.strip_chars().str.replace_all(",", "", literal=True))
            head = raw.str.slice(0, raw.str.len_chars() - tail.str.len_chars() - len(GSM8K_MARKER))
            head = head.str.replace_all(CALC_ANNOTATION, "").str.strip_chars()
            solution = pl.when(has & (head != "")).then(head)  # no text before '####': no solution
            fail = ~has | (answer.fill_null("") == "")
        else:
            answer = text(self.answer)
            boxed = solution.str.extract_all(BOXED_PATTERN).list.last().str.extract(BOXED_PATTERN, 1)
            if self.answer is None or self.preset == "math":
                answer = pl.when(answer.is_null() | (answer.str.strip_chars() == "")).then(
                    boxed.str.strip_chars()).otherwise(answer)
                fail = answer.is_null()
            else:
                fail = pl.lit(False)
        return [prompt.alias("prompt"), answer.alias("answer"), solution.alias("solution"),
                text(self.id).alias("id"), task.alias("task"), fail.alias("parse_fail")]


# Values of a `task` column that name a verifier (not a category like "algebra").
TASK_NAME_PATTERN = r"^(?:gsm8k|math|exact|rg:[A-Za-z0-9_]+|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$"


def is_task_name(value) -> bool:
    return isinstance(value, str) and re.search(TASK_NAME_PATTERN, value) is not None


def _jsonable(value):
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _find(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def choose_columns(columns: list[str], first: dict | None, *, where: str, preset: str | None = None,
                   prompt_col=None, answer_col=None, solution_col=None, id_col=None,
                   task: str | None = None) -> ColumnPlan:
    """Pick the columns for one source: explicit flags win, then the preset, then common names.

    `first` is an early record, used to recognise a GSM8K answer (`####`) when no preset was named.
    Raises InputError naming the missing column, the columns that exist and the flag to pass.
    """
    notes = []

    def need(col, flag):
        if col is not None and col not in columns:
            raise InputError(f"column '{col}' not found (columns: {', '.join(columns) or 'none'})",
                             path=where, fix=f"pass --{flag} with one of these")
        return col

    need(prompt_col, "prompt-col")
    need(answer_col, "answer-col")
    need(solution_col, "solution-col")
    need(id_col, "id-col")

    if preset is None:
        preset = _guess_preset(columns, first, answer_col, solution_col)
        if preset:
            notes.append(f"preset {preset} auto-detected")
    if preset == "reasoning-gym":
        plan = ColumnPlan("reasoning-gym", prompt_col or _find(columns, ("question",)) or "question",
                          answer_col or "answer", solution_col, id_col or _find(columns, ID_NAMES),
                          task="rg:unknown")
    else:
        prompt = prompt_col or _find(columns, ("question", "problem") if preset else PROMPT_NAMES)
        if prompt is None:
            prompt = _find(columns, PROMPT_NAMES)
        if preset == "gsm8k":
            answer = answer_col or _find(columns, ("answer",))
            solution = None
        elif preset == "math":
            # MATH rows may or may not carry an 'answer'; absent or empty, the last \boxed{} is used.
            answer = answer_col or _find(columns, ("answer",)) or "answer"
            solution = solution_col or _find(columns, ("solution",))
        else:
            answer = answer_col or _find(columns, ANSWER_NAMES)
            solution = solution_col or _find(columns, tuple(n for n in SOLUTION_NAMES if n != answer))
        for name, col, flag in (("prompt", prompt, "prompt-col"),):
            if col is None:
                raise InputError(f"no {name} column found (columns: {', '.join(columns) or 'none'})",
                                 path=where, fix=f"pass --{flag} NAME")
        if answer is None and solution is None:
            raise InputError(f"no answer column found (columns: {', '.join(columns)})", path=where,
                             fix="pass --answer-col NAME (or --solution-col NAME to take the last "
                                 "\\boxed{} of a solution)")
        if preset == "gsm8k" and answer is None:
            raise InputError(f"GSM8K preset needs an 'answer' column (columns: {', '.join(columns)})",
                             path=where, fix="pass --answer-col NAME")
        if preset == "math" and solution is None and answer is None:
            raise InputError(f"MATH preset needs 'answer' or 'solution' (columns: {', '.join(columns)})",
                             path=where, fix="pass --answer-col or --solution-col")
        default_task = {"gsm8k": "gsm8k", "math": "math"}.get(preset, "math")
        task_col = _find(columns, ("task",)) if preset is None else None
        plan = ColumnPlan(preset, prompt, answer, solution, id_col or _find(columns, ID_NAMES),
                          task=default_task, task_col=task_col)
    if task:
        plan.task, plan.task_col = task, None
    plan.notes = notes
    return plan


def _guess_preset(columns, first, answer_col, solution_col) -> str | None:
    if first is None:
        return None
    ans = answer_col or _find(columns, ("answer",))
    if ans and isinstance(first.get(ans), str) and GSM8K_MARKER in first[ans]:
        return "gsm8k"
    md = first.get("metadata")
    if "question" in columns and isinstance(md, dict) and "source_dataset" in md:
        return "reasoning-gym"
    sol = solution_col or _find(columns, ("solution",))
    if "problem" in columns and sol and not answer_col and isinstance(first.get(sol), str) \
            and "\\boxed{" in first[sol]:
        return "math"
    return None


def _expression_solution(metadata: dict, answer: str) -> str | None:
    """A one-line worked solution for reasoning-gym arithmetic ("3 + 4 * 2 = 11"), built from the entry's
    own expression, so unmastered arithmetic items get an SFT demonstration; the exporter still checks it
    with the item's verifier before using it."""
    expression = metadata.get("expression")
    if isinstance(expression, str) and expression.strip() and answer:
        return f"{expression.strip()} = {answer}"
    return None
