"""`stagewise experiment` at its smallest: the testbed, and one end-to-end run of three arms through the
toolkit (probe -> route -> export -> train -> evaluate -> report). Checks the table's shape and that
the base model has all three buckets; never which arm wins."""

from __future__ import annotations

import json

import pytest
from stagewise.curate.verifiers import score

from stagewise.experiments import testbed


def test_worked_solution_carries_and_the_verifier_accepts_the_formatted_target():
    from stagewise.curate.prompts import format_target

    item = testbed.Item(4718, 395)
    assert item.solution == "8+5+0=13\n1+9+1=11\n7+3+1=11\n4+0+1=5\n"
    problem = testbed.to_problem(item, "probe")
    target = format_target(problem.solution, problem.answer, problem, "{prompt}")
    assert score(target, problem).correct
    # The last column sum (5) is not the answer: only the final boxed number counts.
    assert not score(item.solution, problem).correct


def test_pools_are_disjoint_and_levels_are_digit_counts():
    pools = {name: {(it.a, it.b) for it in testbed.sample_items(3, 60, name, seed=0)}
             for name in testbed.POOLS}
    assert not pools["probe"] & pools["heldout"]
    assert not pools["pretrain"] & (pools["probe"] | pools["heldout"])
    assert all(testbed.level_of(p) == 4 for p in testbed.ladder([4], 5, "heldout", seed=0))


def test_unknown_arm_is_refused_with_the_list_of_arms(tmp_path):
    from stagewise.curate.errors import ConfigError

    import stagewise as sw

    with pytest.raises(ConfigError, match="routed"):
        sw.experiment(tmp_path / "exp", design="v1", test=True, arms="base,routd")


def test_smallest_experiment_writes_the_table_and_resumes(tmp_path):
    import stagewise as sw

    res = sw.experiment(tmp_path / "exp", design="v1", test=True, arms="base,routed,random", progress=False)
    names = [r["name"] for r in res.records]
    assert names == ["base", "routed", "random"]

    # The test-size base model solves some pool items and fails others: there is something to route.
    pool = res.context["base_probe"]["pool"]
    assert pool["unmastered"] > 0 and pool["partial"] + pool["mastered"] > 0, pool

    data = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert [a["name"] for a in data["arms"]] == names
    for arm in data["arms"]:
        assert arm["n_seeds"] == 1 and len(arm["per_seed"]) == 1
        for key in ("pass@1", "pass@4", "pass@16", "sft_loss_final"):
            assert 0 <= arm["mean"][key] <= (1 if key.startswith("pass") else 50), (arm["name"], key)
        assert arm["mean"]["pass@1"] <= arm["mean"]["pass@4"] <= arm["mean"]["pass@16"]
    trained = [a for a in data["arms"] if a["name"] != "base"]
    # Both trained arms ran their two stages (SFT then RL) and sampled RL completions.
    assert all(a["per_seed"][0]["steps"] == [2, 2] and a["mean"]["generated_tokens"] > 0 for a in trained)
    assert all("sft_loss_before_rl" in a["mean"] for a in trained)
    # Forgetting is measured on held-out mastered items; the test-size model may have none.
    if res.context["base_probe"]["heldout"]["mastered"]:
        assert data["arms"][0]["mean"]["forgetting"] == 0
    else:
        assert "forgetting" not in data["arms"][0]["mean"]

    md = (tmp_path / "exp" / "results.md").read_text()
    assert "| routed |" in md and "| random |" in md and "stagewise experiment" in md
    assert (tmp_path / "exp" / "accuracy_by_bucket.png").stat().st_size > 1000

    # Re-running the same command resumes: every (arm, seed) is read back, nothing retrains.
    again = sw.experiment(tmp_path / "exp", design="v1", test=True, arms="base,routed,random", progress=False)
    assert [r["per_seed"] for r in again.records] == [r["per_seed"] for r in res.records]
