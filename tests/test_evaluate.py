"""`evaluate`: pass@1 and unbiased pass@k with intervals, per source/task/bucket, checked by hand from
the stored samples of the same run."""

from __future__ import annotations

import math

import polars as pl
import pytest
from stagewise.curate.errors import InputError
from stagewise.curate.schema import Problem
from stagewise.curate.statistics import pass_at_k
from stagewise.curate.store import ProbeStore

import stagewise as sw

TASK = "probe_helpers:parity"


def _problems():
    return [Problem(prompt=f"Item {i}, please answer.", answer="x", task=TASK, source="even" if i % 2 else "odd")
            for i in range(8)]


def _kw(**extra):
    kw = {"num_samples": 4, "ks": (1, 2, 4), "max_new_tokens": 8, "batch_size": 8, "backend_args": {"threads": 1}}
    kw.update(extra)
    return kw


def test_pass_at_k_and_intervals_match_a_hand_computation(tiny_model_dir, tmp_path):
    store = str(tmp_path / "eval.duckdb")
    res = sw.evaluate(tiny_model_dir, _problems(), store=store, **_kw())
    with ProbeStore(store, read_only=True) as st:
        samples = st.samples(res.run_id)
    per_item = {}
    for row in samples.iter_rows(named=True):
        n, c = per_item.get(row["problem_id"], (0, 0))
        per_item[row["problem_id"]] = (n + 1, c + (row["status"] == "correct"))
    table = {r["group"]: r for r in res.table.to_dicts()}
    assert set(table) == {"all", "source=even", "source=odd", f"task={TASK}"}
    overall = table["all"]
    assert overall["n_items"] == 8 and overall["n_samples"] == 32
    p1 = [c / n for n, c in per_item.values()]
    mean = sum(p1) / 8
    sd = math.sqrt(sum((v - mean) ** 2 for v in p1) / 7)
    assert overall["pass@1"] == pytest.approx(mean)
    assert overall["ci_low"] == pytest.approx(max(0.0, mean - 1.959964 * sd / math.sqrt(8)))
    assert overall["ci_high"] == pytest.approx(min(1.0, mean + 1.959964 * sd / math.sqrt(8)))
    p4 = [pass_at_k(n=n, c=c, k=4) for n, c in per_item.values()]
    assert overall["pass@4"] == pytest.approx(sum(p4) / 8)  # with n = k = 4: share of items with any success
    assert overall["pass@4"] == pytest.approx(sum(c > 0 for _, c in per_item.values()) / 8)
    assert overall["pass@1"] <= overall["pass@2"] <= overall["pass@4"]
    assert table["source=even"]["n_items"] == table["source=odd"]["n_items"] == 4


def test_buckets_from_an_assignments_file_and_in_memory_by_default(tiny_model_dir, tmp_path):
    problems = _problems()
    frame = pl.DataFrame({"id": [p.id for p in problems[:6]],
                          "bucket": ["unmastered", "unmastered", "partial", "partial", "partial", "mastered"]})
    path = tmp_path / "assignments.parquet"
    frame.write_parquet(path)
    res = sw.evaluate(tiny_model_dir, problems, buckets=str(path), **_kw(ks=(1, 8)))
    groups = {r["group"]: r["n_items"] for r in res.table.to_dicts()}
    assert groups["bucket=unmastered"] == 2 and groups["bucket=partial"] == 3 and groups["bucket=mastered"] == 1
    assert groups["bucket=unassigned"] == 2
    assert any("pass@8 skipped" in n for n in res.notes) and "pass@8" not in res.table.columns
    assert any("unassigned" in n for n in res.notes)
    assert res.summary["store"] == ":memory:"
    # Same seed, same samples: the in-memory run agrees with itself.
    again = sw.evaluate(tiny_model_dir, problems, buckets=frame, **_kw(ks=(1,)))
    assert again.table.filter(pl.col("group") == "all")["pass@1"].item() == \
        res.table.filter(pl.col("group") == "all")["pass@1"].item()


def test_bad_assignments_name_the_file_and_column(tiny_model_dir, tmp_path):
    with pytest.raises(InputError, match="not found"):
        sw.evaluate(tiny_model_dir, _problems(), buckets=str(tmp_path / "missing.parquet"), **_kw())
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"id": ["a"], "stage": ["sft"]}).write_parquet(bad)
    with pytest.raises(InputError, match="column 'bucket'"):
        sw.evaluate(tiny_model_dir, _problems(), buckets=str(bad), **_kw())


def test_cli_eval_prints_a_table_per_group(tiny_model_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from stagewise.cli import cli

    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": str(i)}) + "\n" for i in range(4)))
    out = CliRunner().invoke(cli, ["eval", str(data), "--task", TASK, "--model", tiny_model_dir, "-k", "2",
                                   "--ks", "1,2", "--max-new-tokens", "6", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "pass@1" in out.output and "pass@2" in out.output and f"task={TASK}" in out.output
    bad = CliRunner().invoke(cli, ["eval", str(data), "--model", tiny_model_dir, "--ks", "one"])
    assert bad.exit_code != 0 and "--ks" in bad.output
