"""SFT demonstrations: verified targets only, sources in the user's order, a bounded teacher loop."""

from __future__ import annotations

import json

import polars as pl
import pytest
from stages_helpers import SYSTEM, build_store, item
from stagewise.curate.backends.base import Backend, GenerationResult
from stagewise.curate.errors import ConfigError
from stagewise.curate.schema import Problem
from stagewise.curate.store import ProbeStore
from stagewise.stages.demonstrations import (
    ReferenceSolutionSource,
    TeacherSource,
    find_demonstrations,
    make_sources,
)

import stagewise as sw


class ScriptedTeacher(Backend):
    """A stand-in model: answers item `key` correctly from sample index `solve_at[key]` on, else wrongly.

    It is the model, not the code under test: the demonstration loop around it is."""

    name = "scripted"

    def __init__(self, answers: dict, solve_at: dict):
        self.answers, self.solve_at, self.calls = answers, solve_at, []

    def generate(self, requests):
        self.calls.append({r.key: list(r.sample_indices) for r in requests})

        def text(key, i):
            solved = i >= self.solve_at.get(key, 10**9)
            return f"so \\boxed{{{self.answers[key]}}}" if solved else "I am not sure"

        return [GenerationResult(r.key, i, text(r.key, i), 5, "stop")
                for r in requests for i in r.sample_indices]

    def identity(self):
        return {"name": "scripted-teacher"}


def _problems(n):
    return [Problem(id=f"p{i}", prompt=f"What is {i} + {i}?", answer=str(2 * i), task="gsm8k",
                    solution=f"{i} + {i} = {2 * i}.") for i in range(1, n + 1)]


def test_reference_solution_is_formatted_like_the_prompt_asked_and_verified():
    from stagewise.curate.prompts import format_target
    from stagewise.curate.verifiers import score

    problems = _problems(2)
    result = find_demonstrations(problems, [ReferenceSolutionSource()])
    assert set(result.demos) == {"p1", "p2"} and not result.missing
    demo = result.demos["p2"]
    assert demo.target == format_target(problems[1].solution, "4", problems[1], None)
    assert "4" in demo.target.strip().splitlines()[-1]  # the answer closes the target, as the prompt asks
    assert score(demo.target, problems[1]).correct
    assert json.loads(demo.provenance_json())["source"] == "solution"
    assert result.report == {"solution": {"tried": 2, "verified": 2}}


def test_missing_solution_is_reported_not_invented():
    p = Problem(id="x", prompt="What is 2 + 2?", answer="4", task="gsm8k", solution=None)
    result = find_demonstrations([p], [ReferenceSolutionSource()])
    assert not result.demos and "no reference solution" in result.missing["x"]


def test_teacher_stops_at_the_first_verified_answer_and_gives_up_after_its_budget():
    problems = _problems(3)
    backend = ScriptedTeacher({p.id: p.answer for p in problems}, solve_at={"p1": 0, "p2": 3})
    teacher = TeacherSource("scripted-teacher", backend=backend, budget=4, per_round=2, system_prompt=SYSTEM)
    result = find_demonstrations(problems, [teacher])
    assert set(result.demos) == {"p1", "p2"}
    prov = result.demos["p2"].provenance
    assert prov["sample_idx"] == 3 and prov["attempts"] == 4 and prov["model"] == {"name": "scripted-teacher"}
    # p1 solved in round 1 and not asked again; p3 drawn exactly up to the budget, then reported
    assert backend.calls == [{"p1": [0, 1], "p2": [0, 1], "p3": [0, 1]}, {"p2": [2, 3], "p3": [2, 3]}]
    assert "no verified answer in 4 samples (budget 4)" in result.missing["p3"]
    assert result.report["teacher"] == {"tried": 3, "verified": 2}


def test_sources_run_in_the_users_order_and_only_on_what_is_left(tmp_path):
    path = tmp_path / "s.duckdb"
    run_id = build_store(path, [item(0, "wwww"), item(1, "wcwc"), item(2, "wwww", solution=None)])
    with ProbeStore(path, read_only=True) as st:
        problems, samples = st.problems(), st.samples(run_id)
    backend = ScriptedTeacher({p.id: p.answer for p in problems}, solve_at={"q02": 0})
    sources = make_sources(["samples", "solution"], store_samples=samples, run_id=run_id,
                           teacher="scripted", backend=backend, budget=2)
    assert [s.name for s in sources] == ["samples", "solution", "teacher"]
    result = find_demonstrations(problems, sources)
    assert {pid: d.source for pid, d in result.demos.items()} == {"q01": "samples", "q00": "solution",
                                                                  "q02": "teacher"}
    stored = result.demos["q01"].provenance
    assert stored["run_id"] == run_id and stored["sample_idx"] == 1  # the first correct sample
    assert result.report == {"samples": {"tried": 3, "verified": 1}, "solution": {"tried": 2, "verified": 1},
                             "teacher": {"tried": 1, "verified": 1}}


def test_export_with_a_teacher_that_never_solves_reports_and_finishes(tmp_path, tiny_model_dir):
    path = tmp_path / "s.duckdb"
    build_store(path, [item(0, "wwww", solution=None), item(1, "cwcw")])
    result = sw.export(path, tmp_path / "out", teacher=tiny_model_dir, teacher_budget=2,
                       teacher_options={"max_new_tokens": 4})
    a = result.assignments.filter(pl.col("id") == "q00").row(0, named=True)
    assert a["stage"] == "unrouted"
    assert "no reference solution" in a["reason"] and "no verified answer in 2 samples" in a["reason"]
    assert result.manifest["counts"]["splits"] == {"sft": 0, "sft_val": 0, "rl": 1, "rl_val": 0, "replay": 0,
                                                   "unrouted": 1}
    assert result.manifest["demonstrations"]["report"]["teacher"] == {"tried": 1, "verified": 0}
    assert any("have no verified demonstration" in w and "--teacher" in w for w in result.summary.warnings)


def test_bad_source_lists_are_config_errors():
    with pytest.raises(ConfigError, match="unknown demonstration source"):
        make_sources(["solution", "oracle"])
    with pytest.raises(ConfigError, match="--teacher MODEL"):
        make_sources(["teacher"])
    with pytest.raises(ConfigError, match="listed twice"):
        make_sources(["solution", "solution"])


class HintReader(Backend):
    """A stand-in model that can only solve an item when the answer is in its prompt (STaR's
    rationalisation premise); with `mention_hint` it also says where it got the answer."""

    name = "hint-reader"

    def __init__(self, mention_hint: bool = False):
        self.mention_hint, self.prompts = mention_hint, []

    def generate(self, requests):
        import re

        out = []
        for r in requests:
            user = r.messages[-1]["content"]
            self.prompts.append(user)
            m = re.search(r"final answer is (\S+?)\.", user)
            text = "I do not know."
            if m:
                text = ("The hint says so, " if self.mention_hint else "Adding the two gives ") + f"\\boxed{{{m.group(1)}}}"
            out += [GenerationResult(r.key, i, text, 5, "stop") for i in r.sample_indices]
        return out

    def identity(self):
        return {"name": "hint-reader"}


def test_rationalize_samples_the_model_with_the_answer_as_a_hint_and_keeps_only_verified_targets():
    from stagewise.stages.demonstrations import RationalizeSource

    problems = _problems(2)
    backend = HintReader()
    src = RationalizeSource("probed-model", backend=backend, budget=2, system_prompt=SYSTEM)
    result = find_demonstrations(problems, [src])
    assert set(result.demos) == {"p1", "p2"}
    assert "the correct final answer is 4." in backend.prompts[1]  # the hint was in what the model saw
    demo = result.demos["p2"]
    assert demo.target == "Adding the two gives \\boxed{4}" and "hint" not in demo.target.lower()
    prov = json.loads(demo.provenance_json())
    assert prov["source"] == "rationalize" and prov["rationalized"] is True
    assert prov["target_prompt"] == "without the hint" and "final answer is 4" in prov["hint"]


def test_rationalize_drops_completions_that_lean_on_the_hint():
    from stagewise.stages.demonstrations import RationalizeSource

    src = RationalizeSource("probed-model", backend=HintReader(mention_hint=True), budget=2)
    result = find_demonstrations(_problems(1), [src])
    assert not result.demos
    assert "given the answer as a hint, produced no verified answer in 2 samples" in result.missing["p1"]


def test_critique_is_the_models_wrong_attempt_a_verdict_and_the_verified_solution(tmp_path):
    from stagewise.stages.demonstrations import CritiqueSource

    path = tmp_path / "s.duckdb"
    run_id = build_store(path, [item(0, "twww"), item(1, "wwww", solution=None), item(2, "cccc")])
    with ProbeStore(path, read_only=True) as st:
        problems, samples = st.problems(), st.samples(run_id)
    samples = samples.with_columns(pl.when(pl.col("status") == "wrong").then(pl.lit("999"))
                                   .otherwise(pl.col("extracted")).alias("extracted"))
    result = find_demonstrations(problems, [CritiqueSource(samples, run_id, "tiny-probe", system_prompt=SYSTEM)])
    assert set(result.demos) == {"q00"}
    target = result.demos["q00"].target
    attempt, verdict, solution = target.split("\n\n")
    assert attempt == "It is \\boxed{999}"  # the wrong attempt that ended, not the one cut off (sample 0)
    assert verdict == "Verdict: the attempt above answers 999, which the gsm8k verifier rejects: it is not the correct answer."
    assert solution == "Correct solution:\nWe add 1 and 1 to get 2.\nThe final answer is \\boxed{2}."
    prov = result.demos["q00"].provenance
    assert prov["attempt_sample_idx"] == 1 and prov["attempt_extracted"] == "999" and prov["solution"] == "reference"
    assert result.missing["q01"].endswith("(critique: no reference solution to end the critique with)")
    assert result.missing["q02"].endswith("(critique: no wrong attempt (with its text) in the store to critique)")


def test_critique_and_rationalize_are_off_unless_listed():
    from stagewise.stages.demonstrations import validate_sources

    assert validate_sources(None) == [] and validate_sources("solution") == ["solution"]
    assert validate_sources("solution,critique") == ["solution", "critique"]
def test_rationalized_targets_reach_sft_with_the_prompt_the_probe_asked_without_the_hint(tmp_path):
    path = tmp_path / "s.duckdb"
    build_store(path, [item(0, "wwww", solution=None), item(1, "cwcw")])
    from stagewise.stages.demonstrations import RationalizeSource

    # The export builds the source itself from the probe's model; here the stand-in model is handed in
    # as its backend.
    result = sw.export(path, tmp_path / "out", demos=("rationalize",), teacher_backend=HintReader(),
                       teacher_budget=1)
    sft = pl.read_parquet(tmp_path / "out" / "sft.parquet")
    assert sft["id"].to_list() == ["q00"] and sft["demo_source"].to_list() == ["rationalize"]
    prompt = sft["prompt"][0].to_list()
    assert all("Hint" not in m["content"] for m in prompt)
    assert sft["completion"][0].to_list()[0]["content"] == "Adding the two gives \\boxed{2}"
    assert result.manifest["demonstrations"]["report"]["rationalize"] == {"tried": 1, "verified": 1}
    assert RationalizeSource.name == "rationalize"


