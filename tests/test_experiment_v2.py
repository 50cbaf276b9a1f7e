"""`stagewise experiment --design v2`: the testbed's worked solutions, the validity rules and the paired
bootstrap with literal numbers, and one run at test size (a tiny base model pretrained in the test, in a
temporary cache): the validity checks refuse to report arms, and with the checks overridden the arms
train through the toolkit and results.json has the issue's shape."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from stagewise.curate.verifiers import score

from stagewise.experiments import testbed_v2 as T
from stagewise.experiments.stats import hierarchical_bootstrap, paired_item_diffs
from stagewise.experiments.validity import validity_checks


@pytest.mark.parametrize("task, operands, solution, answer", [
    ("add", (4718, 395), "8+5+0=13\n1+9+1=11\n7+3+1=11\n4+0+1=5\n", "5113"),
    ("sub", (4718, 395), "8-5-0=3\n11-9-0=2\n7-3-1=3\n4-0-0=4\n", "4323"),
    ("sub", (1000, 999), "10-9-0=1\n10-9-1=0\n10-9-1=0\n1-0-1=0\n", "1"),
    ("add3", (471, 395, 128), "1+5+8+0=14\n7+9+2+1=19\n4+3+1+1=9\n", "994"),
])
def test_worked_solutions_carry_and_borrow_and_the_formatted_target_verifies(task, operands, solution, answer):
    from stagewise.curate.prompts import format_target

    item = T.Item(task, operands)
    assert (item.solution, item.answer) == (solution, answer)
    problem = T.to_problem(item, "pool")
    assert score(format_target(problem.solution, problem.answer, problem, "{prompt}"), problem).correct


@pytest.mark.parametrize("task, operands, slipped, answer", [
    # every boundary column slips: the sum 10 (add) or difference -1 (sub) passes nothing on
    ("add", (4718, 392), "8+2+0=10\n1+9+0=10\n7+3+0=10\n4+0+0=4\n", "4000"),
    ("sub", (4718, 399), "18-9-0=9\n11-9-0=2\n7-3-1=3\n4-0-0=4\n", "4329"),
    ("add", (55, 55), "5+5+0=10\n5+5+0=10\n", "100"),            # the top column keeps its carry
    ("add3", (471, 395, 128), "1+5+8+0=14\n7+9+2+1=19\n4+3+1+1=9\n", "994"),  # no boundary column
])
def test_a_slip_drops_the_carry_of_boundary_columns_and_the_answer_follows_the_lines(task, operands, slipped, answer):
    item = T.Item(task, operands)
    problem = T.to_problem(item, "pretrain", slip=lambda: True)
    assert (problem.solution, problem.answer) == (slipped, answer)
    assert T.to_problem(item, "pretrain", slip=lambda: False).solution == item.solution
    assert T.answer_of(task, item.solution) == item.answer
    assert T.item_of(T.to_problem(item, "val")) == item
    # read back from the lines: every boundary column of the slipped solution dropped its carry, none of the
    # correct one's did (the top column is no boundary: nothing follows it)
    sites = T.slips_in(task, slipped + f"The final answer is \\boxed{{{answer}}}.")
    assert sites[0] == sites[1] and T.slips_in(task, item.solution) == (T.slip_sites(task, operands), 0)
    # boundary columns of the correct solution: 8+2 (not 1+9+1), 8-9 (not 1-9-1), 5+5 (the top one is not), none
    assert T.slip_sites(task, operands) == {4000: 1, 4329: 1, 100: 1, 994: 0}[int(answer)]


@pytest.mark.parametrize("task, operands, slipped, sites", [
    # columns="carry": every carrying or borrowing column below the top one is a site
    ("add", (4718, 395), "8+5+0=13\n1+9+0=10\n7+3+0=10\n4+0+0=4\n", 3),
    ("sub", (4718, 395), "8-5-0=3\n11-9-0=2\n7-3-0=4\n4-0-0=4\n", 1),
    ("add3", (471, 395, 128), "1+5+8+0=14\n7+9+2+0=18\n4+3+1+0=8\n", 2),
])
def test_carry_slip_sites_are_every_carrying_column(task, operands, slipped, sites):
    assert T.worked_solution(task, operands, lambda: True, "carry") == slipped
    assert T.slip_sites(task, operands, "carry") == sites
    assert T.slips_in(task, T.Item(task, operands).solution, "carry") == (sites, 0)
    assert T.slips_in(task, slipped, "carry")[1] >= 1
    with pytest.raises(ValueError, match="slip columns must be one of"):
        T.slip_sites(task, operands, "column")


def test_slip_rate_pretraining_slips_that_share_of_boundary_columns_and_keeps_old_hashes():
    import random
    import re
    from dataclasses import replace

    from stagewise.experiments.config import CARRY_SCARCE_PRETRAIN
    from stagewise.experiments.pretrain import _batches_v2, config_hash_v2

    def item_in(prompt: str) -> T.Item:  # the item a rendered pretraining prompt asks about
        expr = re.search(r"\d+(?:[+-]\d+)+", prompt).group()
        return T.Item("sub" if "-" in expr else "add3" if expr.count("+") == 2 else "add",
                      tuple(int(x) for x in re.split(r"[+-]", expr)))

    assert "slip_rate" not in CARRY_SCARCE_PRETRAIN.to_dict()  # bases cached before the knob keep their hash
    slipped = replace(CARRY_SCARCE_PRETRAIN, slip_rate=0.3, batch_size=600)
    assert config_hash_v2(slipped, None) != config_hash_v2(CARRY_SCARCE_PRETRAIN, None)
    sites = wrong = 0
    for prompt, target in next(_batches_v2(slipped, None, random.Random(1))):
        item = item_in(prompt)
        sites += T.slip_sites(item.task, item.operands)
        wrong += not target.startswith(item.solution)
        assert (f"{{{item.answer}}}" in target) == target.startswith(item.solution)  # a slip changes the answer
    assert sites > 30 and 0.15 < wrong / sites < 0.45
    # slip_min_level: items below it are never slipped, items at or above it are
    late = replace(slipped, slip_columns="carry", slip_min_level=4)
    assert config_hash_v2(late, None) != config_hash_v2(replace(late, slip_min_level=0), None)
    wrong_by_level = {}
    for prompt, target in next(_batches_v2(late, None, random.Random(2))):
        item = item_in(prompt)
        if T.slip_sites(item.task, item.operands, "carry"):
            wrong_by_level.setdefault(item.level, []).append(not target.startswith(item.solution))
    assert not any(wrong_by_level[2]) and not any(wrong_by_level[3]) and 0.1 < sum(wrong_by_level[4]) / len(
        wrong_by_level[4]) < 0.9


def test_splits_are_disjoint_and_every_item_is_in_its_cell():
    drawn = {s: {it.prompt for it in T.sample_items("sub-3", 40, s, seed=0)} for s in T.SPLITS}
    for a in T.SPLITS:
        for b in T.SPLITS:
            assert a == b or not drawn[a] & drawn[b]
    problems = T.items_for(["add3-4", "sub-2"], 3, "test")
    assert [T.cell_of(p) for p in problems] == ["add3-4"] * 3 + ["sub-2"] * 3
    assert all(int(p.answer) >= 0 for p in problems)


@pytest.mark.parametrize("task, operands, carries", [
    ("add", (4718, 395), 3), ("sub", (4718, 395), 1), ("sub", (1000, 999), 3), ("add3", (471, 395, 128), 2),
    ("add", (12, 34), 0), ("add", (99, 1), 2),
])
def test_carries_count_the_columns_that_pass_a_carry_or_a_borrow(task, operands, carries):
    assert T.Item(task, operands).carries == carries


def test_carry_scarce_pretraining_items_are_valid_and_carry_less_while_the_splits_stay_uniform():
    for cell in ("add-4", "sub-5", "add3-3"):
        uniform = T.sample_items(cell, 300, "pretrain", seed=3)
        scarce = T.sample_items(cell, 300, "pretrain", seed=3, carry_decay=0.25)
        task, level = T.parse_cell(cell)
        for it in scarce:
            assert it.level == level and all(len(str(x)) == level for x in it.operands)
            assert int(it.answer) == (it.operands[0] - it.operands[1] if task == "sub" else sum(it.operands))
            assert int(it.answer) >= 0
        mean = lambda items: sum(it.carries for it in items) / len(items)  # noqa: E731
        assert mean(scarce) < 0.7 * mean(uniform)
    # carry_decay 1.0 is the uniform draw itself: the pool, validation and test items do not move.
    assert T.sample_items("add-3", 5, "pool", seed=0) == T.sample_items("add-3", 5, "pool", seed=0, carry_decay=1.0)
    assert [it.prompt for it in T.sample_items("add-3", 3, "pool", seed=0)] == POOL_ADD3_FIRST


def test_carry_decay_enters_the_pretraining_hash_only_when_it_is_set():
    from stagewise.experiments.pretrain import PretrainV2Config, config_hash_v2

    base = PretrainV2Config()
    assert "carry_decay" not in base.to_dict()
    scarce = replace(base, carry_decay=0.25)
    assert scarce.to_dict()["carry_decay"] == 0.25
    assert config_hash_v2(scarce, "{prompt}") != config_hash_v2(base, "{prompt}")
    by_level = replace(base, carry_decay=0.5, carry_level_decay=0.5)
    assert [by_level.carry_keep(c) for c in ("add-2", "sub-3", "add3-5")] == [0.5, 0.25, 0.0625]
    assert base.carry_keep("add3-5") == 1.0


POOL_ADD3_FIRST = ["681+314", "141+537", "433+926"]  # the pool as drawn before carry_decay existed


def _counts(spec):
    """{id: (n, c)} and {id: cell} from [(cell, c), ...] at n = 16."""
    counts = {f"i{j}": (16, c) for j, (_, c) in enumerate(spec)}
    cells = {f"i{j}": cell for j, (cell, _) in enumerate(spec)}
    return counts, cells


def test_validity_passes_a_pool_with_every_bucket_and_unmastered_items_in_three_cells():
    pool, cells = _counts([("add-5", 0), ("sub-4", 0), ("add3-3", 0), ("add3-4", 0),
                           ("add-4", 5), ("sub-3", 9), ("add3-2", 1), ("sub-4", 3),
                           ("add-2", 16), ("sub-2", 16), ("add-3", 16)])
    capability = {"i0": (128, 2), "i1": (128, 0), "i2": (128, 1), "i3": (128, 0)}
    test = {"t0": (16, 0), "t1": (16, 4), "t2": (16, 16), "t3": (16, 0), "t4": (16, 2)}
    checks = validity_checks(pool, cells, capability, test)
    assert [c["value"] for c in checks] == [round(3 / 11, 4), 4, 0.25, 0.5, 0.4]
    assert all(c["passed"] for c in checks)


def test_validity_fails_when_one_cell_holds_the_unmastered_items_and_none_is_reachable():
    pool, cells = _counts([("add-5", 0), ("add-5", 0), ("add-5", 0), ("sub-5", 0),
                           ("add-4", 5), ("add-3", 16), ("add-2", 16), ("sub-2", 16), ("sub-3", 16)])
    share, n_cells, top_cell, reachable, headroom = validity_checks(pool, cells, {}, {"t": (16, 16)})
    assert share["value"] == round(1 / 9, 4) and not share["passed"]      # one partial item of nine
    assert "(partial)" in share["check"]
    assert n_cells["value"] == 2 and not n_cells["passed"]
    assert top_cell["value"] == 0.75 and not top_cell["passed"]
    assert reachable["value"] == 0.0 and not reachable["passed"]
    assert headroom["value"] == 0.0 and not headroom["passed"]


def test_paired_bootstrap_is_exact_for_identical_pairs_and_wider_with_varying_seeds():
    arm = {(0, 0): {"a": 1.0, "b": 0.5}, (0, 1): {"a": 1.0, "b": 0.5}}
    ref = {(0, 0): {"a": 0.5, "b": 0.0}, (0, 1): {"a": 0.5, "b": 0.0, "c": 1.0}}
    diffs = paired_item_diffs(arm, ref)
    assert diffs == {(0, 0): [0.5, 0.5], (0, 1): [0.5, 0.5]}  # "c" is not in both
    same = hierarchical_bootstrap(diffs, reps=200)
    assert same["mean"] == same["ci_low"] == same["ci_high"] == 0.5
    varied = hierarchical_bootstrap({(0, 0): [0.4, 0.6], (1, 0): [-0.2, 0.0], (2, 0): [0.9, 1.0]}, reps=2000)
    assert varied["mean"] == pytest.approx((0.5 - 0.1 + 0.95) / 3)
    assert varied["ci_low"] < 0.2 and varied["ci_high"] > 0.7  # the spread between pairs is in the interval


def test_cell_matched_draw_keeps_the_cell_counts_and_replay_its_fraction():
    from stagewise.experiments.arms_v2 import cell_matched, replay_ids

    ids = {"add-5": [f"a{i}" for i in range(10)], "sub-4": [f"s{i}" for i in range(10)]}
    drawn = cell_matched(ids, {"add-5": 3, "sub-4": 2}, random.Random(0), exclude={"a0", "a1"})
    assert sum(d.startswith("a") for d in drawn) == 3 and sum(d.startswith("s") for d in drawn) == 2
    assert not {"a0", "a1"} & set(drawn)
    assert len(replay_ids([f"m{i}" for i in range(20)], 14, 0.3, random.Random(0))) == 6   # 6 / (14 + 6) = 0.3
    assert len(replay_ids(["m0", "m1"], 14, 0.3, random.Random(0))) == 2                   # all that exist


def test_method_arms_are_refused_by_name_when_the_checkout_lacks_their_feature(monkeypatch):
    from stagewise.curate.errors import ConfigError
    from stagewise.experiments import arms_v2

    monkeypatch.setattr(arms_v2, "available_features", lambda: {
        "sft_replay": False, "reprobe": False, "rounds": False, "joint_sft_learning_rate": True})
    with pytest.raises(ConfigError, match="loop needs sft_replay, reprobe, rounds"):
        arms_v2.resolve_arms_v2("base,routed,loop")
    assert [a.name for a in arms_v2.resolve_arms_v2("routed,sft-all-rl-all")] == ["base", "routed", "sft-all-rl-all"]


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory):
    """A test-size design: two addition cells, one tiny base model pretrained here in a temporary cache."""
    from stagewise.experiments.config import V2_DEFAULT
    from stagewise.experiments.pretrain import PretrainV2Config

    cache = tmp_path_factory.mktemp("cache")
    cfg = replace(V2_DEFAULT, tasks=("add",), levels=(2, 3), pool_per_cell=6, val_per_cell=2, test_per_cell=4,
                  probe_samples=8, capability_samples=16, eval_samples=8, after_sft_samples=8, val_samples=2, ks=(1, 8),
                  max_new_tokens=48, total_steps=2, sft_batch_size=4, rl_prompts=1, bases=1, seeds=1,
                  sft_lr_grid=(1e-3,), rl_lr_grid=(1e-5,), sft_replay=0.3, base_stops=(),
                  pretrain=PretrainV2Config(hidden_size=32, num_layers=1, num_heads=2, steps=30, horizon=30,
                                            batch_size=16, warmup_steps=5, task_weights=(("add", 1.0),),
                                            levels=(2, 3)))
    return cfg, cache


def test_checks_only_records_the_command_that_reproduces_it(tiny_v2, tmp_path, monkeypatch):
    import stagewise as sw

    cfg, cache = tiny_v2
    monkeypatch.setenv("STAGEWISE_CACHE", str(cache))
    typed = "stagewise experiment --config tb.yaml --checks-only --out runs/c"
    sw.experiment(tmp_path / "c", config=cfg, checks_only=True, command=typed)
    assert json.loads((tmp_path / "c" / "context.json").read_text())["command"] == typed
    assert f"Reproduce: `{typed}`" in (tmp_path / "c" / "results.md").read_text()


def test_failed_validity_checks_stop_the_run_before_any_arm(tiny_v2, tmp_path, monkeypatch):
    from stagewise.curate.errors import ConfigError

    import stagewise as sw

    cfg, cache = tiny_v2
    monkeypatch.setenv("STAGEWISE_CACHE", str(cache))
    with pytest.raises(ConfigError, match="validity checks failed"):
        sw.experiment(tmp_path / "exp", config=cfg, arms="base,sft-all-rl-all")
    data = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert data["design"] == "v2" and data["arms"] == []
    assert {"check", "value", "threshold", "passed"} == set(data["validity"][0])
    assert not all(c["passed"] for c in data["validity"])
    assert not (tmp_path / "exp" / "arms").exists()


def test_test_size_run_writes_paired_differences_compute_and_diagnostics(tiny_v2, tmp_path, monkeypatch):
    import stagewise as sw

    cfg, cache = tiny_v2
    monkeypatch.setenv("STAGEWISE_CACHE", str(cache))
    arms = "base,sft-all-rl-all,sft-unmastered-only"  # the tiny model has no partial items for the others
    res = sw.experiment(tmp_path / "exp", config=cfg, arms=arms, allow_invalid=True)
    data = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert set(data) == {"design", "validity", "arms"}
    assert [a["name"] for a in data["arms"]] == arms.split(",")
    for arm in data["arms"]:
        assert set(arm) == {"name", "per_seed", "paired_diff", "compute", "diagnostics"}
        assert {"mean", "ci_low", "ci_high"} <= set(arm["paired_diff"])
        assert "zero_variance_frac" in arm["diagnostics"]
        assert 0 <= arm["per_seed"][0]["pass@1"] <= arm["per_seed"][0]["pass@8"] <= 1
    by_name = {a["name"]: a for a in data["arms"]}
    primary = by_name["sft-all-rl-all"]
    assert primary["paired_diff"]["mean"] == 0.0                       # the baseline against itself
    assert primary["compute"]["steps"] == {"sft": 1, "rl": 1}
    assert primary["compute"]["trained_tokens"] > 0 and primary["compute"]["generated_tokens"] > 0
    assert len(primary["diagnostics"]["zero_variance_frac"]) == 1      # one RL step, one logged fraction
    assert by_name["sft-unmastered-only"]["compute"]["steps"] == {"sft": 2}
    assert by_name["base"]["compute"]["steps"] == {}
    # The sweep ran on validation and every arm trained at the rates it chose.
    ctx = json.loads((tmp_path / "exp" / "context.json").read_text())
    assert ctx["sweep"]["ran"] and ctx["learning_rates"] == {"sft": 1e-3, "rl": 1e-5}
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "NOT a valid test" in md and "| sft-unmastered-only |" in md

    # Re-running resumes every (base, seed, arm) from its completion marker.
    again = sw.experiment(tmp_path / "exp", config=cfg, arms=arms, allow_invalid=True)
    assert again.results["arms"][1]["per_seed"] == res.results["arms"][1]["per_seed"]

    # An interrupted run's partial table: the finished arms, and the missing runs named in the report.
    partial = sw.experiment(tmp_path / "exp", config=cfg, arms=arms + ",anti-routed", allow_invalid=True,
                            report_only=True)
    assert [a["name"] for a in partial.results["arms"]] == arms.split(",")
    assert "anti-routed b0-s0" in (tmp_path / "exp" / "results.md").read_text()
    assert not (tmp_path / "exp" / "arms" / "anti-routed").exists()

    # Another grid is another sweep: the finished one is not reused for it.
    regrid = sw.experiment(tmp_path / "exp", config=replace(cfg, sft_lr_grid=(3e-4,)), arms="base",
                           allow_invalid=True)
    assert regrid.context["learning_rates"] == {"sft": 3e-4, "rl": 1e-5}
    assert [r["sft_learning_rate"] for r in regrid.context["sweep"]["sft_grid"]] == [3e-4]
    # A sweep interrupted after its grid points finished resumes them (their trainings are not redone).
    (tmp_path / "exp" / "sweep" / "sweep.done.json").unlink()
    markers = sorted((tmp_path / "exp" / "sweep").glob("*/*/train/train.done.json"))
    assert len(markers) == 4  # two sweeps, one SFT and one RL point each
    written = {m: m.read_text() for m in markers}
    resumed = sw.experiment(tmp_path / "exp", config=replace(cfg, sft_lr_grid=(3e-4,)), arms="base",
                            allow_invalid=True)
    assert resumed.context["sweep"]["sft_grid"] == regrid.context["sweep"]["sft_grid"]
    assert all(m.read_text() == text for m, text in written.items())

    # The RL-stage diagnostic reads the finished run: the sweep's model at the chosen SFT rate, then RL shapes.
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "experiment_v2_rl_sharpen.py"
    def sharpen(*variants):
        cmd = [sys.executable, str(script), str(tmp_path / "exp"), "--out", str(tmp_path / "sharpen")]
        return subprocess.run(cmd + [a for v in variants for a in ("--variant", v)], check=False,
                              capture_output=True, text=True)
    done = sharpen("1:1:1e-5", "1:1:1e-5:0.1")  # the second with a KL weight (TRL loads the SFT model as reference)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["variant"] for row in lines] == ["sft-only", "1:1:1e-5", "1:1:1e-5:0.1"]
    assert all(0 <= row["val_pass@1"] <= 1 and 0 <= row["pool_pass@1"] <= 1 for row in lines)
    for row in lines:  # validation split by slip sites: the whole is a mix of its two parts
        assert row["slip_sites"] >= 0 and (row["slip_rate"] is None) == (row["slip_sites"] == 0)
        parts = [row[k] for k in ("val_pass@1_slip_site", "val_pass@1_no_slip_site") if k in row]
        assert parts and min(parts) - 1e-4 <= row["val_pass@1"] <= max(parts) + 1e-4
    assert lines[0]["zero_variance_frac"] is None and all(0 <= r["zero_variance_frac"] <= 1 for r in lines[1:])
    assert (tmp_path / "sharpen" / "1-1-1e-5" / "model").is_dir()
    bad = sharpen("16:24")
    assert bad.returncode == 1 and "expected PROMPTS:STEPS:LR" in bad.stderr and "Traceback" not in bad.stderr

    # The budget projection reads the run's measured step CPU; it refuses a design with other step shapes.
    spec = importlib.util.spec_from_file_location("budget", script.parent / "experiment_v2_budget.py")
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    projected = budget.project(tmp_path / "exp", replace(cfg, total_steps=10, sft_fraction=0.2))
    rl_arm = projected["per_arm"]["sft-all-rl-all"]
    assert rl_arm["runs"] == 1 and rl_arm["train_cpu_s"] > 0 and projected["projected_wall_min_on_idle_cores"] > 0
    assert projected["config"]["total_steps"] == 10 and projected["config"]["sft_fraction"] == 0.2
    with pytest.raises(SystemExit, match=r"rl_prompts 1 \(quick\) vs 2.*Fix: run the quick design"):
        budget.project(tmp_path / "exp", replace(cfg, rl_prompts=2))
    (tmp_path / "bad.yaml").write_text("total_steps: many\n")
    refused = subprocess.run([sys.executable, str(script.parent / "experiment_v2_budget.py"), str(tmp_path / "exp"),
                              "--config", str(tmp_path / "bad.yaml")], capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "bad.yaml:1:1: total_steps='many'" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_designs_sampling_reaches_the_probes_the_exports_and_the_rl_rollouts(tiny_v2, tmp_path, monkeypatch):
    import yaml

    import stagewise as sw

    cfg, cache = tiny_v2
    monkeypatch.setenv("STAGEWISE_CACHE", str(cache))
    sampled = replace(cfg, temperature=0.9, top_p=0.9, sweep=False)
    sw.experiment(tmp_path / "exp", config=sampled, arms="sft-all-rl-all", allow_invalid=True)
    manifests = list((tmp_path / "exp" / "bases").rglob("manifest.json"))
    assert manifests
    for m in manifests:
        sampling = json.loads(m.read_text())["probe"]["sampling"]
        assert (sampling["temperature"], sampling["top_p"]) == (0.9, 0.9)
    rl = [yaml.safe_load(c.read_text()) for c in (tmp_path / "exp" / "arms").rglob("config.yaml")]
    rl = [c for c in rl if "num_generations" in c]
    assert rl and all((c["temperature"], c["top_p"]) == (0.9, 0.9) for c in rl)
    assert all(c["sampling_source"]["top_p"] == "probe manifest" for c in rl)


def test_transitions_compare_the_base_at_the_same_number_of_samples_as_the_model_after_sft(tmp_path):
    """At 8 samples an item of the base's 16-sample partial bucket can be 0/8 or 8/8: the matrix's rows
    are the base's buckets over its first 8 samples, not its 16-sample routing buckets."""
    from stages_helpers import build_store, item

    from stagewise.experiments.runner_v2 import BaseModel, _buckets, _test_buckets_at, buckets_at, transitions

    items = [item(0, "c" * 8 + "w" * 8), item(1, "w" * 8 + "c" + "w" * 7), item(2, "cwcwcwcw" * 2),
             item(3, "x" + "c" * 15)]
    store = str(tmp_path / "test.duckdb")
    build_store(store, items)
    assert buckets_at(store, 8) == {"q00": "mastered", "q01": "unmastered", "q02": "partial", "q03": "mastered"}
    at16 = {"q00": (16, 8), "q01": (16, 1), "q02": (16, 8), "q03": (15, 15)}
    base = BaseModel(0, "m", {}, str(tmp_path / "pool.duckdb"), {}, at16, {})
    assert base.test_store == store
    routing = _buckets(at16)
    assert _test_buckets_at(base, 16, routing) is routing
    before = _test_buckets_at(base, 8, routing)
    assert before == {"q00": "mastered", "q01": "unmastered", "q02": "partial", "q03": "mastered"}
    after = {"q00": (8, 8), "q01": (8, 0), "q02": (8, 3), "q03": (8, 8)}
    m = transitions(before, after)
    assert m["mastered"]["mastered"] == 2 and m["unmastered"]["unmastered"] == 1 and m["partial"]["partial"] == 1
    assert transitions(routing, after)["partial"] == {"unmastered": 1, "partial": 1, "mastered": 1}  # the old bias


def test_runs_are_planned_arm_by_arm_primary_comparison_first_and_joint_arms_on_fewer_seeds():
    from stagewise.experiments.arms_v2 import ARMS_V2
    from stagewise.experiments.config import V2_DEFAULT
    from stagewise.experiments.runner_v2 import plan_runs

    chosen = [ARMS_V2[n] for n in ("base", "routed", "joint-weighted", "routed-replay-reprobe", "sft-all-rl-all")]
    runs = [(a.name, b, s) for a, b, s in plan_runs(chosen, [0, 1, 2], replace(V2_DEFAULT, seeds=2, joint_seeds=1))]
    assert [r[0] for r in runs[:18]] == ["base"] * 6 + ["sft-all-rl-all"] * 6 + ["routed-replay-reprobe"] * 6
    assert runs[:6] == [("base", b, s) for b in range(3) for s in range(2)]
    assert [r for r in runs if r[0] == "joint-weighted"] == [("joint-weighted", b, 0) for b in range(3)]
    assert len(runs) == 4 * 6 + 3


def test_a_pretraining_checkpoint_is_the_model_a_run_stopped_there_would_give(tmp_path):
    import torch
    from safetensors.torch import load_file

    from stagewise.experiments.pretrain import PretrainV2Config, checkpoint_steps, pretrain_v2

    cfg = PretrainV2Config(hidden_size=32, num_layers=1, num_heads=2, steps=8, horizon=8, batch_size=8,
                           warmup_steps=2, task_weights=(("add", 1.0),), levels=(2, 3))
    full = pretrain_v2(cfg, out_root=tmp_path / "a", checkpoints=[4])
    early = pretrain_v2(replace(cfg, steps=4), out_root=tmp_path / "a")
    assert not full.cached and early.cached and early.stats["steps"] == 4
    assert checkpoint_steps(cfg, out_root=tmp_path / "a") == {4: early.model_dir, 8: full.model_dir}
    alone = pretrain_v2(replace(cfg, steps=4), out_root=tmp_path / "b")
    assert not alone.cached

    def weights(res):
        return load_file(f"{res.model_dir}/model.safetensors")

    w_early, w_alone, w_full = weights(early), weights(alone), weights(full)
    assert all(torch.equal(w_early[k], w_alone[k]) for k in w_early)
    assert not all(torch.equal(w_early[k], w_full[k]) for k in w_early)


def test_pinned_numerics_pretrain_in_a_child_and_give_the_same_weights_under_another_mkl_path(tmp_path, monkeypatch):
    """numerics "avx2" trains in a pinned child process; an AVX2-only MKL (what another CPU may run) gives
    bit-identical weights, and the base records the kernels and its weights' fingerprint."""
    from stagewise.curate.models import model_identity
    from stagewise.experiments.pretrain import PretrainV2Config, config_hash_v2, pretrain_v2

    cfg = PretrainV2Config(hidden_size=32, num_layers=1, num_heads=2, steps=6, horizon=6, batch_size=8,
                           warmup_steps=2, task_weights=(("add", 1.0),), levels=(2, 3), numerics="avx2")
    assert "numerics" not in replace(cfg, numerics="native").to_dict()  # cached bases keep their names
    assert config_hash_v2(cfg, None) != config_hash_v2(replace(cfg, numerics="native"), None)
    seen = []
    first = pretrain_v2(cfg, out_root=tmp_path / "a", progress=lambda step, total, loss: seen.append((step, total)))
    assert not first.cached and seen[-1] == (6, 6)
    assert first.stats["kernels"] == {**first.stats["kernels"], "cpu_capability": "AVX2", "threads": 1,
                                      "mkl_cbwr": "AVX2"}
    assert first.stats["weights_sha256"] == model_identity(first.model_dir)["weights_sha256"][:16]
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    again = pretrain_v2(cfg, out_root=tmp_path / "b")
    assert not again.cached and again.stats["weights_sha256"] == first.stats["weights_sha256"]
    native = pretrain_v2(replace(cfg, numerics="native"), out_root=tmp_path / "c")
    assert native.stats["kernels"]["mkl_cbwr"] == ""


def test_polishing_starts_from_the_cached_first_phase_and_its_checkpoint_is_the_shorter_polish(tmp_path):
    import torch
    from safetensors.torch import load_file

    from stagewise.experiments.pretrain import PretrainV2Config, pretrain_v2

    first = PretrainV2Config(hidden_size=32, num_layers=1, num_heads=2, steps=6, horizon=6, batch_size=8,
                             warmup_steps=2, task_weights=(("add", 1.0),), levels=(2, 3))
    cfg = replace(first, polish_steps=6, polish_level_decay=0.0)
    assert cfg.mix(cfg.polish_level_decay) == {"add-2": 1.0, "add-3": 0.0} and first.mix()["add-3"] > 0
    polished = pretrain_v2(cfg, out_root=tmp_path / "a", polish_checkpoints=[3])
    base = pretrain_v2(first, out_root=tmp_path / "a")
    assert base.cached and not polished.cached  # the first phase was trained once, on the way
    assert polished.stats["first_phase"]["steps"] == 6 and polished.stats["steps"] == 6
    short = pretrain_v2(replace(cfg, polish_steps=3), out_root=tmp_path / "a")
    alone = pretrain_v2(replace(cfg, polish_steps=3), out_root=tmp_path / "b")
    assert short.cached and not alone.cached

    def weights(res):
        return load_file(f"{res.model_dir}/model.safetensors")

    w_short, w_alone, w_full, w_base = weights(short), weights(alone), weights(polished), weights(base)
    assert all(torch.equal(w_short[k], w_alone[k]) for k in w_short)
    assert not all(torch.equal(w_short[k], w_full[k]) for k in w_short)
    assert not all(torch.equal(w_base[k], w_short[k]) for k in w_base)


def test_each_base_stops_where_base_stops_says_and_a_short_list_is_refused():
    from stagewise.curate.errors import ConfigError
    from stagewise.experiments.config import V2_DEFAULT, configure

    stops = [[600, 300, 0.35], [700, 400, 0.2], [700, 0, 0.2]]
    cfg = configure(V2_DEFAULT, None, {"base_stops": stops})
    assert V2_DEFAULT.base_seeds == (1, 4, 10)  # the slip testbed's three valid seeds
    assert [(p.seed, p.steps, p.polish_steps, p.polish_level_decay) for p in map(cfg.base_pretrain, range(3))] == \
        [(1, 600, 300, 0.35), (4, 700, 400, 0.2), (10, 700, 0, 0.2)]
    assert cfg.to_dict()["base_stops"] == stops
    plain = configure(V2_DEFAULT, None, {"base_stops": []})
    assert plain.base_pretrain(1) == replace(V2_DEFAULT.pretrain, seed=4)
    with pytest.raises(ConfigError, match="for each of the 3 bases"):
        configure(V2_DEFAULT, None, {"base_stops": [[600, 300, 0.35]]})
    with pytest.raises(ConfigError, match="for each of the 3 bases"):
        configure(V2_DEFAULT, None, {"base_stops": [[600, 300]] * 3})
    with pytest.raises(ConfigError, match="horizon"):
        configure(V2_DEFAULT, None, {"base_stops": [[900, 0, 0.2], [700, 0, 0.2], [700, 0, 0.2]]})


def test_each_base_pretrains_with_its_seed_from_base_seeds_and_a_bad_list_is_refused():
    from stagewise.curate.errors import ConfigError
    from stagewise.experiments.config import V2_DEFAULT, configure

    cfg = configure(V2_DEFAULT, None, {"base_seeds": [0, 3, 5]})
    assert [p.seed for p in map(cfg.base_pretrain, range(3))] == [0, 3, 5]
    assert cfg.to_dict()["base_seeds"] == [0, 3, 5]
    for bad in ([0, 3], [0, 3, 3], [0, -1, 2], [0, "a", 2], [0, 1.5, 2]):
        with pytest.raises(ConfigError, match="distinct pretraining seed"):
            configure(V2_DEFAULT, None, {"base_seeds": bad})
    assert configure(V2_DEFAULT, None, {"base_seeds": [4], "bases": 1}).base_pretrain(0).seed == 4


def test_the_design_refuses_cells_its_pretraining_never_shows_and_a_zero_temperature():
    from stagewise.curate.errors import ConfigError
    from stagewise.experiments.config import V2_DEFAULT, configure

    with pytest.raises(ConfigError, match=r"pretrain levels \[2, 3, 4\].*must be the design's \(\[2, 3, 4, 5\]"):
        configure(V2_DEFAULT, None, {"levels": [2, 3, 4, 5]})
    with pytest.raises(ConfigError, match="temperature 0.0 must be above 0"):
        configure(V2_DEFAULT, None, {"temperature": 0.0})
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=rf"top_p {bad} must be in \(0, 1\]"):
            configure(V2_DEFAULT, None, {"top_p": bad})
    with pytest.raises(ConfigError, match=r"pretrain.slip_rate 1.0 must be in \[0, 1\)"):
        configure(V2_DEFAULT, None, {"pretrain": {"slip_rate": 1.0}})
    with pytest.raises(ConfigError, match=r"pretrain.slip_columns 'column' must be one of \['boundary', 'carry'\]"):
        configure(V2_DEFAULT, None, {"pretrain": {"slip_columns": "column"}})
    with pytest.raises(ConfigError, match=r"pretrain.slip_min_level -1 must be a digit count >= 0"):
        configure(V2_DEFAULT, None, {"pretrain": {"slip_min_level": -1}})
    with pytest.raises(ConfigError, match=r"pretrain.numerics 'avx512' must be one of \['native', 'avx2'\]"):
        configure(V2_DEFAULT, None, {"pretrain": {"numerics": "avx512"}})


@pytest.mark.parametrize("name", ["first-testbed", "carry-scarce", "larger-model", "slip-testbed"])
def test_a_committed_testbeds_yaml_rebuilds_its_bases_and_config(name):
    """data_cards/experiment-v2/NAME.yaml reproduces the committed run in NAME/: the same base models (by
    cache name) and the config recorded in its context.json."""
    from stagewise.experiments.config import V2_DEFAULT, configure
    from stagewise.experiments.pretrain import config_hash_v2

    card = Path(__file__).resolve().parent.parent / "data_cards" / "experiment-v2"
    cfg = configure(V2_DEFAULT, str(card / f"{name}.yaml"))
    context = json.loads((card / name / "context.json").read_text())
    assert [config_hash_v2(cfg.base_pretrain(i), cfg.prompt_template) for i in range(3)] == \
        [b["model"].removeprefix("tiny-arith-") for b in context["bases"]]
    later = {"temperature": 1.0, "top_p": 1.0, "base_seeds": [0, 1, 2]}  # fields added after the first run
    assert cfg.to_dict() == {**later, **context["config"]}


def test_a_lower_final_rate_is_another_base_model_and_the_default_keeps_cached_names():
    from stagewise.experiments.pretrain import PretrainV2Config, config_hash_v2

    cfg = PretrainV2Config()
    # cached bases made before these options keep their hash
    assert "final_lr_fraction" not in cfg.to_dict() and "polish_steps" not in cfg.to_dict()
    assert config_hash_v2(replace(cfg, final_lr_fraction=0.01), None) != config_hash_v2(cfg, None)


def test_cli_refuses_an_unknown_v2_arm_with_one_message_and_exit_code_1(tmp_path):
    from click.testing import CliRunner
    from stagewise.cli import cli

    out = CliRunner().invoke(cli, ["experiment", "--out", str(tmp_path / "e"), "--arms", "base,routd"])
    assert out.exit_code == 1
    assert "unknown arm(s) routd" in out.output and "cell-matched-random" in out.output
    assert "Traceback" not in out.output


def test_the_recorded_command_holds_no_absolute_path(tmp_path, monkeypatch):
    from stagewise.cli import relative_path_arg

    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert relative_path_arg(str(tmp_path / "runs" / "v2")) == "../runs/v2"
    assert relative_path_arg(f"--out={tmp_path / 'repo' / 'runs'}") == "--out=runs"
    assert relative_path_arg("runs/v2") == "runs/v2" and relative_path_arg("--quick") == "--quick"


def test_allow_invalid_is_an_option_of_design_v2_only(tmp_path):
    from click.testing import CliRunner
    from stagewise.cli import cli

    out = CliRunner().invoke(cli, ["experiment", "--design", "v1", "--allow-invalid", "--out", str(tmp_path / "e")])
    assert out.exit_code != 0 and "--allow-invalid is an option of --design v2" in out.output
    assert not (tmp_path / "e").exists()


def test_the_printed_table_shows_the_largest_k_the_run_evaluated(capsys):
    from types import SimpleNamespace

    from stagewise import render

    arms = [{"name": "sft-all-rl-all", "per_seed": [{"pass@1": 0.5, "pass@8": 0.75}, {"pass@1": 0.7, "pass@8": 0.95}],
             "paired_diff": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}}]
    render.experiment(SimpleNamespace(results={"arms": arms}, paths={"markdown": "results.md"}), "v2", False)
    out = capsys.readouterr().out
    assert "pass@8" in out and "pass@16" not in out
    assert "sft-all-rl-all              0.600    0.850" in out


def test_each_arm_is_compared_with_the_method_directly_and_the_differences_chain(tmp_path):
    from stagewise.experiments.results_v2 import write_report_v2

    items = [f"t{i}" for i in range(6)]
    buckets = dict(zip(items, ["unmastered", "unmastered", "partial", "partial", "mastered", "mastered"]))

    def runs(counts_by_seed):  # {seed: [correct of 4 per item]} -> run records on base 0
        return [{"base": 0, "seed": s, "n_samples": 4, "per_item_c": dict(zip(items, cs)), "pass@1": sum(cs) / 24,
                 "pass@4": 1.0, "by_bucket": {}, "by_cell": {}, "compute": {}, "diagnostics": {}}
                for s, cs in counts_by_seed.items()]

    arms = {"sft-all-rl-all": runs({0: [0, 0, 2, 2, 4, 4], 1: [0, 1, 2, 2, 4, 4]}),
            "routed-replay-reprobe": runs({0: [0, 1, 3, 4, 4, 4], 1: [1, 1, 3, 3, 4, 4]}),
            "random": runs({0: [0, 0, 2, 3, 4, 3], 1: [0, 1, 1, 2, 4, 4]})}
    context = {"config": {"ks": [1, 4]}, "bases": [{"index": 0, "test_bucket_of": buckets}]}
    write_report_v2(tmp_path, design="v2", validity=[], arms=arms, context=context)
    data = json.loads((tmp_path / "results.json").read_text())
    by = {a["name"]: a["paired_diff"] for a in data["arms"]}
    assert "method_minus_arm" not in by["routed-replay-reprobe"]      # the method is not compared with itself
    vs_random, vs_baseline = by["random"]["method_minus_arm"], by["sft-all-rl-all"]["method_minus_arm"]
    # Method minus random per item, in correct samples of 4: seed 0 [0, 1, 1, 1, 0, 1], seed 1 [1, 0, 2, 1, 0, 0].
    assert vs_random["mean"] == pytest.approx(((1 + 1 + 1 + 1) / 4 / 6 + (1 + 2 + 1) / 4 / 6) / 2)
    # Same items and pairs: method - random = (method - baseline) - (random - baseline), exactly.
    assert vs_random["mean"] == pytest.approx(vs_baseline["mean"] - by["random"]["mean"])
    assert vs_baseline["mean"] == pytest.approx(by["routed-replay-reprobe"]["mean"])
    assert vs_random["ci_low"] <= vs_random["mean"] <= vs_random["ci_high"] and vs_random["n_groups"] == 2
    assert vs_random["by_bucket"]["mastered"]["mean"] == pytest.approx((1 / 4 / 2 + 0) / 2)
    md = (tmp_path / "results.md").read_text()
    assert "## The method against each arm (routed-replay-reprobe minus the arm, test pass@1)" in md
    assert "| random | 2 | +0.167 [" in md


def test_the_tuning_script_starts_from_a_testbed_file_or_the_default(monkeypatch, tmp_path):
    """benchmarks/experiment_v2_tune.py: the earlier rounds' screens ran from the carry-scarce default, so
    --config carry-scarce.yaml rebuilds their bases by name; without it the candidates are the default's."""
    from stagewise.experiments.pretrain import config_hash_v2

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("tune", root / "benchmarks" / "experiment_v2_tune.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    built = []

    def pretrain(cfg, **kw):  # record what would be pretrained, pretrain nothing
        built.append(config_hash_v2(cfg, kw.get("prompt_template")))
        raise SystemExit(0)

    monkeypatch.setattr(tune, "pretrain_v2", pretrain)
    for extra in (["--config", str(root / "data_cards/experiment-v2/carry-scarce.yaml"), "--seed", "0"], ["--seed", "1"]):
        monkeypatch.setattr(sys, "argv", ["tune", "--pretrain", "--pretrain-only", *extra])
        with pytest.raises(SystemExit):
            tune.main()
    carry = json.loads((root / "data_cards/experiment-v2/carry-scarce/context.json").read_text())
    slip = json.loads((root / "data_cards/experiment-v2/slip-testbed-full/context.json").read_text())
    assert built == [carry["bases"][0]["model"].removeprefix("tiny-arith-"),
                     slip["bases"][0]["model"].removeprefix("tiny-arith-")]
    (tmp_path / "bad.yaml").write_text("total_steps: many\n")
    monkeypatch.setattr(sys, "argv", ["tune", "--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(SystemExit, match=r"bad.yaml:1:1: total_steps='many'"):
        tune.main()
