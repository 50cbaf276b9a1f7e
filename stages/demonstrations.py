"""SFT demonstrations: find a verified target for each item that goes to SFT.

Sources are tried in the order the user gives; each only sees the items still without a target:
- `solution`: the row's reference solution, formatted the way the probe's prompt asked for the answer;
- `samples`: a verified-correct sample already in the store (RFT-style, opt-in);
- `teacher`: a model (any backend) sampled in rounds until a verified-correct answer appears or the
  per-item budget is spent. It never loops forever: items still unsolved are reported.
- `rationalize` (STaR's rationalisation): the probed model itself, sampled with the gold answer given as
  a hint; a completion the verifier accepts becomes the target for the prompt *without* the hint, so
  the target stays close to what the model itself writes (less off-distribution than a reference).
- `critique` (off unless listed; critique fine-tuning): the model's own wrong attempt from the store, a
  one-line verdict naming its extracted answer and why the verifier rejects it, then the verified
  reference solution. The final answer of the target is always the verified one.

Every target is checked by the item's own verifier before it counts (a reference solution whose final
answer the verifier rejects is not a demonstration), and each demonstration records its provenance.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from stagewise.curate.backends import make_backend
from stagewise.curate.backends.base import GenerationRequest, SamplingParams, sample_seed
from stagewise.curate.errors import ConfigError
from stagewise.curate.prompts import answer_format, build_messages, format_target
from stagewise.curate.verifiers import VerifierPool
from stagewise.stages.routing import NO_DEMO

SOURCES = ("solution", "samples", "teacher", "rationalize", "critique")
# Appended to the user message for `rationalize`; the exported prompt never carries it.
HINT = "\n\n(Hint: the correct final answer is {answer}. Show the reasoning that leads to it; do not mention this hint.)"
DEMO_VERIFY_TIMEOUT_S = 30.0


@dataclass
class Demonstration:
    """A verified SFT target. `provenance` says where it came from (JSON-able)."""

    problem_id: str
    target: str
    source: str
    provenance: dict = field(default_factory=dict)

    def provenance_json(self) -> str:
        return json.dumps({"source": self.source, **self.provenance}, sort_keys=True, default=str)


@dataclass
class DemoResult:
    """Demonstrations found, why the other items have none, and counts per source."""

    demos: dict = field(default_factory=dict)  # problem_id -> Demonstration
    missing: dict = field(default_factory=dict)  # problem_id -> reason in words
    report: dict = field(default_factory=dict)  # source -> {tried, verified, rejected, ...}


def _verify(pairs):
    """Score (completion, problem) pairs with the items' own verifiers, math-verify in worker processes."""
    if not pairs:
        return []

    # A demonstration is checked once, so it gets a generous budget: a worker's first reasoning-gym or
    # sympy scoring call imports a lot, and on a loaded machine that alone can outlast the probe's 5 s.
    tasks = sorted({str(getattr(p, "task", None) or p.get("task")) for _, p in pairs})
    preload = tuple(t for t in tasks if t == "math" or t.startswith("rg:")) or ("math",)
    with VerifierPool(workers=min(2, len(pairs)), timeout_s=DEMO_VERIFY_TIMEOUT_S, preload=preload) as pool:
        return pool.score_many(pairs)


def _status_words(verdict) -> str:
    got = f", extracted {verdict.extracted!r}" if verdict.extracted is not None else ""
    return f"{verdict.status}{got}"


class DemoSource(ABC):
    """One source of demonstrations. `find(problems)` returns (demos by id, reasons for the rest)."""

    name = "base"

    @abstractmethod
    def find(self, problems: list) -> tuple[dict, dict]:
        """Demonstrations by problem id, and a reason for every problem left without one."""


class ReferenceSolutionSource(DemoSource):
    """The row's `solution`, ending with the answer in the format the prompt asked for."""

    name = "solution"

    def __init__(self, prompt_template: str | None = None, system_prompt: str | None = None):
        self.prompt_template, self.system_prompt = prompt_template, system_prompt

    def find(self, problems):
        have = [p for p in problems if (p.solution or "").strip()]
        missing = {p.id: "no reference solution" for p in problems if not (p.solution or "").strip()}
        targets = [format_target(p.solution, p.answer, p, self.prompt_template,
                                 system_prompt=self.system_prompt) for p in have]
        demos = {}
        for p, target, verdict in zip(have, targets, _verify(list(zip(targets, have)))):
            if verdict.correct:
                demos[p.id] = Demonstration(p.id, target, self.name, {"verdict": verdict.status})
            else:
                missing[p.id] = (f"reference solution not accepted by the {p.task} verifier "
                                 f"({_status_words(verdict)}; gold {p.answer!r})")
        return demos, missing


class StoreSampleSource(DemoSource):
    """A verified-correct sample from the probe run itself (rejection-sampling fine-tuning, RFT).

    The shortest correct completion wins: it is the cheapest target to imitate. It is re-verified
    here, so a verifier change since the probe cannot smuggle in a wrong target."""

    name = "samples"

    def __init__(self, samples, run_id: str, model: str | None = None):
        import polars as pl

        self.samples, self.run_id, self.model = samples, run_id, model
        # Checked up front, before any other source runs: a store probed without the text cannot serve.
        if samples is not None and len(samples):
            textless = samples.filter((pl.col("status") == "correct") & pl.col("completion").is_null())
            if len(textless):
                raise ConfigError(
                    f"--demos samples needs the text of correct samples, but run {run_id} stored "
                    f"{len(textless):,} correct sample(s) without it (probed with --keep-completions failed or "
                    "none); use --demos solution or teacher, or re-probe with --keep-completions all")

    def find(self, problems):
        import polars as pl

        ids = [p.id for p in problems]
        correct = (self.samples.filter(pl.col("problem_id").is_in(ids) & (pl.col("status") == "correct"))
                   .with_columns(pl.col("completion").str.len_chars().alias("_len"))
                   .sort(["problem_id", "_len", "sample_idx"]))
        by_id = {}
        for row in correct.iter_rows(named=True):
            by_id.setdefault(row["problem_id"], row)
        have = [p for p in problems if p.id in by_id]
        missing = {p.id: "no correct sample in the store" for p in problems if p.id not in by_id}
        pairs = [(by_id[p.id]["completion"], p) for p in have]
        demos = {}
        for p, verdict in zip(have, _verify(pairs)):
            row = by_id[p.id]
            if verdict.correct:
                demos[p.id] = Demonstration(p.id, row["completion"], self.name, {
                    "run_id": row.get("run_id") or self.run_id, "sample_idx": int(row["sample_idx"]),
                    "model": self.model})
            else:
                missing[p.id] = f"stored correct sample no longer verifies ({_status_words(verdict)})"
        return demos, missing


class TeacherSource(DemoSource):
    """A teacher model sampled in rounds until verified or out of budget (samples per item)."""

    name = "teacher"

    def __init__(self, model: str, *, backend="hf", budget: int = 8, per_round: int = 4,
                 temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 512, seed: int = 0,
                 system_prompt: str | None = None, prompt_template: str | None = None,
                 backend_options: dict | None = None, progress=None):
        if budget < 1:
            raise ConfigError(f"--teacher-budget {budget} must be at least 1 sample per item")
        self.model, self.backend_name, self.budget = model, backend, int(budget)
        self.per_round = max(1, min(int(per_round), self.budget))
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.seed, self.system_prompt, self.prompt_template = seed, system_prompt, prompt_template
        self.backend_options = backend_options or {}
        self.progress = progress
        self.identity = None

    def find(self, problems):
        params = SamplingParams(self.temperature, self.top_p, self.max_new_tokens)
        messages = {p.id: self.messages_for(p, build_messages(p, system_prompt=self.system_prompt,
                                                             prompt_template=self.prompt_template))
                    for p in problems}
        pending = {p.id: p for p in problems}
        drawn = {p.id: 0 for p in problems}
        demos = {}
        # `backend` is a name for make_backend, or a ready Backend (any object with generate/identity/close).
        if isinstance(self.backend_name, str):
            backend, owned = make_backend(self.backend_name, self.model, **self.backend_options), True
        else:
            backend, owned = self.backend_name, False
        try:
            try:
                self.identity = backend.identity()
            except NotImplementedError:
                self.identity = {"model": self.model}
            while pending:  # bounded: every round draws at least one sample per pending item
                requests = []
                for pid in pending:
                    k = min(self.per_round, self.budget - drawn[pid])
                    idx = list(range(drawn[pid], drawn[pid] + k))
                    requests.append(GenerationRequest(pid, messages[pid], idx,
                                                      [sample_seed(self.seed, pid, i) for i in idx], params))
                    drawn[pid] += k
                results = sorted(backend.generate(requests), key=lambda r: (r.key, r.sample_idx))
                results = [r for r in results if self.usable(r.text)]
                verdicts = _verify([(r.text, pending[r.key]) for r in results])
                for r, v in zip(results, verdicts):
                    if v.correct and r.key not in demos:
                        demos[r.key] = Demonstration(r.key, r.text, self.name, {
                            "model": self.identity,
                            "backend": getattr(backend, "name", str(self.backend_name)),
                            "sample_idx": r.sample_idx, "seed": self.seed, "attempts": drawn[r.key],
                            "sampling": params.to_dict(), **self.extra_provenance(pending[r.key])})
                pending = {pid: p for pid, p in pending.items()
                           if pid not in demos and drawn[pid] < self.budget}
                if self.progress is not None:
                    self.progress(len(demos), len(problems))
        finally:
            if owned:
                backend.close()
        missing = {pid: f"{self.who} produced no verified answer in {drawn[pid]} samples "
                        f"(budget {self.budget})" for pid in drawn if pid not in demos}
        return demos, missing

    @property
    def who(self) -> str:
        return f"teacher {self.model}"

    def messages_for(self, problem, messages: list[dict]) -> list[dict]:
        """The messages the model is sampled with (the teacher: the probe's own)."""
        return messages

    def usable(self, text: str) -> bool:
        """Whether a completion may become a target at all (before the verifier sees it)."""
        return True

    def extra_provenance(self, problem) -> dict:
        return {}


class RationalizeSource(TeacherSource):
    """STaR's rationalisation: the probed model, sampled with the gold answer as a hint in the user
    message. A completion the verifier accepts is the target for the prompt without the hint; one that
    talks about the hint is not used (it would not make sense without it)."""

    name = "rationalize"

    def __init__(self, model: str, *, hint: str = HINT, **kwargs):
        super().__init__(model, **kwargs)
        self.hint = hint

    @property
    def who(self) -> str:
        return f"the model {self.model}, given the answer as a hint,"

    def hint_for(self, problem) -> str:
        return self.hint.replace("{answer}", str(problem.answer))

    def messages_for(self, problem, messages):
        out = [dict(m) for m in messages]
        out[-1]["content"] = out[-1]["content"] + self.hint_for(problem)
        return out

    def usable(self, text):
        return "hint" not in (text or "").lower()

    def extra_provenance(self, problem):
        return {"rationalized": True, "hint": self.hint_for(problem), "target_prompt": "without the hint"}


class CritiqueSource(DemoSource):
    """Critique fine-tuning's shape as one target: the model's own wrong attempt (from the store), a
    one-line verdict naming the answer it extracted and why the verifier rejects it, then the verified
    reference solution. The whole target is verified, so its final answer is always the right one."""

    name = "critique"

    def __init__(self, samples, run_id: str, model: str | None = None, prompt_template: str | None = None,
                 system_prompt: str | None = None):
        self.samples, self.run_id, self.model = samples, run_id, model
        self.prompt_template, self.system_prompt = prompt_template, system_prompt

    def _attempts(self, ids) -> dict:
        """The first wrong attempt per item: one with an extracted answer and a natural end first, then
        one without an answer; attempts cut off at max_new_tokens come last."""
        import polars as pl

        # An attempt stored without its text (--keep-completions none) cannot be critiqued.
        wrong = (self.samples.filter(pl.col("problem_id").is_in(ids) & pl.col("status").is_in(["wrong", "no_answer"])
                                     & pl.col("completion").is_not_null())
                 .with_columns((pl.col("status") != "wrong").alias("_no_answer"),
                               (pl.col("finish_reason") == "length").fill_null(False).alias("_cut"))
                 .sort(["problem_id", "_cut", "_no_answer", "sample_idx"]))
        out = {}
        for row in wrong.iter_rows(named=True):
            out.setdefault(row["problem_id"], row)
        return out

    def verdict(self, attempt: dict, problem) -> str:
        fmt = answer_format(problem.task, system_prompt=self.system_prompt, prompt_template=self.prompt_template)
        if attempt["status"] == "wrong" and attempt.get("extracted") not in (None, ""):
            return (f"Verdict: the attempt above answers {attempt['extracted']}, which the {problem.task} "
                    "verifier rejects: it is not the correct answer.")
        where = "<answer></answer> tags" if fmt == "tags" else "\\boxed{}"
        return f"Verdict: the attempt above gives no final answer in {where}, so the {problem.task} verifier cannot accept it."

    def find(self, problems):
        attempts = self._attempts([p.id for p in problems])
        missing, have, targets = {}, [], []
        for p in problems:
            if p.id not in attempts:
                missing[p.id] = "no wrong attempt (with its text) in the store to critique"
            elif not (p.solution or "").strip():
                missing[p.id] = "no reference solution to end the critique with"
            else:
                a = attempts[p.id]
                solution = format_target(p.solution, p.answer, p, self.prompt_template,
                                         system_prompt=self.system_prompt)
                have.append(p)
                targets.append(f"{(a['completion'] or '').strip()}\n\n{self.verdict(a, p)}\n\n"
                               f"Correct solution:\n{solution}")
        demos = {}
        for p, target, v in zip(have, targets, _verify(list(zip(targets, have)))):
            a = attempts[p.id]
            if v.correct:
                demos[p.id] = Demonstration(p.id, target, self.name, {
                    "run_id": self.run_id, "attempt_sample_idx": int(a["sample_idx"]),
                    "attempt_status": a["status"], "attempt_extracted": a.get("extracted"),
                    "model": self.model, "solution": "reference", "verdict": v.status})
            else:
                missing[p.id] = f"critique target not accepted by the {p.task} verifier ({_status_words(v)})"
        return demos, missing


def validate_sources(names, *, teacher: str | None = None, budget: int = 1) -> list[str]:
    """The source names in order (the teacher appended if given but not listed); ConfigError if bad."""
    if isinstance(names, str):  # "solution,samples" from a config file or the command line
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or ())
    if teacher and "teacher" not in names:
        names.append("teacher")
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown demonstration source(s) {', '.join(map(repr, unknown))} in --demos; "
                          f"choose from {', '.join(SOURCES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"a demonstration source is listed twice in --demos {','.join(names)}")
    if "teacher" in names and not teacher:
        raise ConfigError("demonstration source 'teacher' needs a model: pass --teacher MODEL")
    if "teacher" in names and int(budget) < 1:
        raise ConfigError(f"--teacher-budget {budget} must be at least 1 sample per item")
    return names


def make_sources(names, *, store_samples=None, run_id=None, probe_model=None, teacher=None,
                 prompt_template=None, system_prompt=None, rationalize_model=None,
                 **teacher_options) -> list[DemoSource]:
    """Sources in the user's order. `teacher` (a model name) adds the teacher source if not listed.
    `rationalize_model`: the model `rationalize` samples (the probed model's path)."""
    names = validate_sources(names, teacher=teacher, budget=teacher_options.get("budget", 1))
    sources = []
    for name in names:
        if name == "solution":
            sources.append(ReferenceSolutionSource(prompt_template, system_prompt))
        elif name == "samples":
            sources.append(StoreSampleSource(store_samples, run_id, probe_model))
        elif name == "critique":
            sources.append(CritiqueSource(store_samples, run_id, probe_model, prompt_template, system_prompt))
        elif name == "rationalize":
            if not rationalize_model:
                raise ConfigError("demonstration source 'rationalize' samples the probed model, and the probe "
                                  "run records no model path; probe with a local model or drop rationalize")
            sources.append(RationalizeSource(rationalize_model, prompt_template=prompt_template,
                                             system_prompt=system_prompt, **teacher_options))
        else:
            sources.append(TeacherSource(teacher, prompt_template=prompt_template,
                                         system_prompt=system_prompt, **teacher_options))
    return sources


def find_demonstrations(problems: list, sources: list[DemoSource]) -> DemoResult:
    """Try each source in order on the items still without a verified demonstration."""
    result = DemoResult()
    pending = list(problems)
    reasons: dict[str, list[str]] = {p.id: [] for p in problems}
    for src in sources:
        if not pending:
            result.report[src.name] = {"tried": 0, "verified": 0}
            continue
        demos, missing = src.find(pending)
        result.demos.update(demos)
        for pid, why in missing.items():
            reasons[pid].append(f"{src.name}: {why}")
        result.report[src.name] = {"tried": len(pending), "verified": len(demos)}
        pending = [p for p in pending if p.id not in result.demos]
    for p in pending:
        result.missing[p.id] = f"{NO_DEMO} (" + "; ".join(reasons[p.id] or ["no source"]) + ")"
    return result
