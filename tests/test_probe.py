"""The probe loop: stored samples, resume (including after SIGKILL), adaptive rounds, shards, the CLI.

The tiny random model with the `probe_helpers:parity` verifier passes about half its answers, so items
land in all three buckets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from stagewise.curate import adaptive
from stagewise.curate.errors import ConfigError
from stagewise.curate.schema import Problem
from stagewise.curate.store import ProbeStore

import stagewise as sw

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = "probe_helpers:parity"


def _problems(n=8):
    return [Problem(prompt=f"Question {i}: what comes after {i}?", answer=str(i + 1), task=TASK, source="toy")
            for i in range(n)]


def _kw(model, store, **extra):
    kw = {"model": model, "store": str(store), "num_samples": 4, "max_new_tokens": 12, "batch_size": 4, "progress": False,
              "backend_args": {"threads": 1}}
    kw.update(extra)
    return kw


def _texts(store_path, run_id):
    with ProbeStore(store_path, read_only=True) as st:
        frame = st.samples(run_id)
    return {(r["problem_id"], r["sample_idx"]): r["completion"] for r in frame.iter_rows(named=True)}


def test_probe_stores_k_verified_samples_per_item_and_summarises(tiny_model_dir, tmp_path):
    res = sw.probe(_problems(), **_kw(tiny_model_dir, tmp_path / "a.duckdb"))
    s = res.summary
    assert s["items"] == 8 and s["samples"] == 32 and s["samples_new"] == 32
    assert sum(s["buckets"].values()) == 8
    with res:
        mastery = res.store.mastery(res.run_id)
        frame = res.store.samples(res.run_id)
    assert mastery.height == 8 and set(mastery["n"].to_list()) == {4}
    assert s["mean_pass_at_1"] == pytest.approx(sum(mastery["p_hat"].to_list()) / 8)
    # Buckets follow c against n.
    expected = {"unmastered": 0, "partial": 0, "mastered": 0}
    for c in mastery["c"].to_list():
        expected["unmastered" if c == 0 else "mastered" if c == 4 else "partial"] += 1
    assert {k: s["buckets"][k] for k in expected} == expected
    assert s["tokens"] == sum(frame["n_tokens"].to_list())
    assert set(frame["status"].to_list()) <= {"correct", "wrong", "no_answer"}
    assert set(frame["finish_reason"].to_list()) <= {"stop", "length"}


def test_same_command_resumes_and_more_items_only_sample_the_new_ones(tiny_model_dir, tmp_path):
    store = tmp_path / "r.duckdb"
    first = sw.probe(_problems(4), **_kw(tiny_model_dir, store))
    again = sw.probe(_problems(4), **_kw(tiny_model_dir, store))
    assert again.run_id == first.run_id and again.summary["samples_new"] == 0
    more = sw.probe(_problems(6), **_kw(tiny_model_dir, store))
    assert more.run_id == first.run_id
    assert (more.summary["samples_new"], more.summary["samples_resumed"]) == (8, 16)
    # Other sampling settings are another run in the same store.
    other = sw.probe(_problems(4), **_kw(tiny_model_dir, store, temperature=0.7))
    assert other.run_id != first.run_id


def test_run_records_sampling_prompting_and_model(tiny_model_dir, tmp_path):
    template = "Q: {prompt}\nA:"
    res = sw.probe(_problems(2), **_kw(tiny_model_dir, tmp_path / "c.duckdb", system_prompt="Be brief.",
                                        prompt_template=template, seed=3))
    with res:
        cfg = res.store.run(res.run_id)
    assert cfg["sampling"] == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 12}
    assert cfg["system_prompt"] == "Be brief." and cfg["prompt_template"] == template
    assert cfg["resolved"]["boxed"] == {"system_prompt": "Be brief.", "prompt_template": template}
    assert cfg["seed"] == 3 and cfg["num_samples"] == 4
    assert len(cfg["model"]["weights_sha256"]) == 64


def test_bad_settings_fail_before_the_model_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"\{prompt\}"):
        sw.probe(_problems(2), model="/nonexistent", store=str(tmp_path / "x.duckdb"), prompt_template="no slot")
    with pytest.raises(ConfigError, match="--shard"):
        sw.probe(_problems(2), model="/nonexistent", store=str(tmp_path / "x.duckdb"), shard="2/2")
    with pytest.raises(ConfigError, match="--num-samples"):
        sw.probe(_problems(2), model="/nonexistent", store=str(tmp_path / "x.duckdb"), num_samples=0)


def test_shards_are_disjoint_and_cover_every_item(tiny_model_dir, tmp_path):
    ids = set()
    for i in range(2):
        res = sw.probe(_problems(), **_kw(tiny_model_dir, tmp_path / f"s{i}.duckdb", shard=f"{i}/2", num_samples=1))
        with res:
            got = set(res.store.sample_counts(res.run_id))
        assert got and not (got & ids)
        ids |= got
    assert ids == {p.id for p in _problems()}


def test_limit_and_task_override_apply_to_spec_strings(tiny_model_dir, tmp_path, repo_data_dir):
    spec = "gsm8k:" + os.path.join(repo_data_dir, "gsm8k", "test.jsonl")
    res = sw.probe(spec, **_kw(tiny_model_dir, tmp_path / "g.duckdb", limit=3, task=TASK, num_samples=1))
    assert res.summary["items"] == 3
    with res:
        assert {p.task for p in res.store.problems()} == {TASK}
        assert res.store.run(res.run_id)["task_override"] == TASK


def test_adaptive_draws_what_the_rule_replayed_on_a_fixed_run_draws(tiny_model_dir, tmp_path):
    problems = _problems(10)
    fixed = sw.probe(problems, **_kw(tiny_model_dir, tmp_path / "fixed.duckdb", num_samples=8))
    adapt = sw.probe(problems, **_kw(tiny_model_dir, tmp_path / "adaptive.duckdb", adaptive=True, k_max=8,
                                     min_samples=2))
    with fixed, adapt:
        fixed_out = fixed.store.outcomes(fixed.run_id)
        adapt_out = adapt.store.outcomes(adapt.run_id)
    replayed = adaptive.replay(fixed_out, min_samples=2, k_max=8)
    drawn = {pid: len(o) for pid, o in adapt_out.items()}
    # Samples are seeded per (item, index): the adaptive run drew the fixed run's samples, in order.
    assert all(adapt_out[pid] == fixed_out[pid][:n] for pid, n in drawn.items())
    assert drawn == replayed.drawn
    assert adapt.summary["samples"] == replayed.generations < fixed.summary["samples"]
    assert adapt.summary["rounds"] > 1


def test_cli_probe_prints_the_summary_and_json(tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from stagewise.cli import cli

    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": str(i)}) + "\n" for i in range(3)))
    store = str(tmp_path / "cli.duckdb")
    args = ["probe", str(data), "--task", TASK, "--model", tiny_model_dir, "--store", store, "-k", "2",
            "--max-new-tokens", "8", "--batch-size", "4", "--no-progress"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "unmastered" in out.output and "mean pass@1" in out.output and "6 samples (6 new, 0 resumed)" in out.output
    again = CliRunner().invoke(cli, args + ["--json"])
    assert again.exit_code == 0, again.output
    payload = json.loads(again.output)
    assert payload["summary"]["samples_new"] == 0 and payload["summary"]["samples_resumed"] == 6


_KILL_SCRIPT = r"""
import sys
import stagewise as sw
from stagewise.curate.schema import Problem

model, store, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
problems = [Problem(prompt=f"Question {i}: what comes after {i}?", answer=str(i + 1), task="probe_helpers:parity")
            for i in range(n)]
def committed(new, total):
    print(f"committed {total}", flush=True)
sw.probe(problems, model=model, store=store, num_samples=4, max_new_tokens=24, batch_size=2, progress=False,
         backend_args={"threads": 1}, on_commit=committed)
print("finished", flush=True)
"""


def test_sigkill_mid_run_then_resume_loses_nothing_and_counts_nothing_twice(tiny_model_dir, tmp_path):
    n_items, k = 16, 4
    store = str(tmp_path / "killed.duckdb")
    script = tmp_path / "run_probe.py"
    script.write_text(_KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
    proc = subprocess.Popen([sys.executable, str(script), tiny_model_dir, store, str(n_items)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("committed"):
                break  # at least one batch is in the store: kill now, mid-run
            assert not line.startswith("finished")
        else:
            pytest.fail(f"probe exited before committing: {proc.stderr.read()[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    with ProbeStore(store, read_only=True) as st:
        run_id = st.latest_run_id()
        stored = st.samples(run_id).height
    assert 0 < stored < n_items * k
    before = _texts(store, run_id)

    problems = [Problem(prompt=f"Question {i}: what comes after {i}?", answer=str(i + 1), task=TASK)
                for i in range(n_items)]
    res = sw.probe(problems, model=tiny_model_dir, store=store, num_samples=k, max_new_tokens=24, batch_size=2,
                   progress=False, backend_args={"threads": 1})
    assert res.run_id == run_id
    assert res.summary["samples_resumed"] == stored and res.summary["samples_new"] == n_items * k - stored
    with res:
        counts = res.store.con.execute(
            "SELECT problem_id, count(*), count(DISTINCT sample_idx), min(sample_idx), max(sample_idx) "
            "FROM samples WHERE run_id = ? GROUP BY problem_id", [run_id]).fetchall()
    assert len(counts) == n_items
    assert all(row[1:] == (k, k, 0, k - 1) for row in counts)
    after = _texts(store, run_id)
    assert {key: after[key] for key in before} == before
    # The resumed store holds exactly what an uninterrupted run draws (seeds per item and index).
    clean = sw.probe(problems, model=tiny_model_dir, store=str(tmp_path / "clean.duckdb"), num_samples=k,
                     max_new_tokens=24, batch_size=2, progress=False, backend_args={"threads": 1})
    clean.close()
    assert _texts(clean.store_path, clean.run_id) == after


# ------------------------------------------------------------------------------ the real default model


@pytest.mark.slow
def test_gsm8k_with_the_default_model_from_the_cli(tmp_path, repo_data_dir):
    from click.testing import CliRunner

    from stagewise.cli import cli

    spec = "gsm8k:" + os.path.join(repo_data_dir, "gsm8k", "test.jsonl")
    store = str(tmp_path / "gsm8k.duckdb")
    out = CliRunner().invoke(cli, ["probe", spec, "--limit", "32", "-k", "4", "--max-new-tokens", "128",
                                   "--store", store, "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "32 (k = 4)" in out.output and "128 samples (128 new, 0 resumed)" in out.output
    with ProbeStore(store, read_only=True) as st:
        run_id = st.latest_run_id()
        frame = st.samples(run_id)
        cfg = st.run(run_id)
    assert frame.height == 128
    assert cfg["model"]["name"] == "smollm2-135m" and len(cfg["model"]["weights_sha256"]) == 64
    assert "\\boxed{}" in cfg["resolved"]["boxed"]["prompt_template"]
    # The model answers: most samples carry a number the verifier could extract.
    assert (frame["status"] != "no_answer").sum() > 64


@pytest.mark.slow
def test_reasoning_gym_with_the_default_model_from_the_api(tmp_path):
    res = sw.probe("rg:chain_sum?size=16&seed=3&min_terms=2&max_terms=2&min_digits=1&max_digits=1",
                   model="smollm2-135m", store=str(tmp_path / "rg.duckdb"), num_samples=4, max_new_tokens=96,
                   progress=False)
    s = res.summary
    assert s["items"] == 16 and s["samples"] == 64
    assert sum(s["buckets"].values()) == 16
    with res:
        cfg = res.store.run(res.run_id)
        tasks = {p.task for p in res.store.problems()}
    assert tasks == {"rg:chain_sum"}
    assert "<answer>" in cfg["resolved"]["rg"]["system_prompt"]
    # Whatever the model manages, every sample was scored by reasoning-gym's verifier with a status.
    assert sum(s["statuses"].values()) == 64


def test_keep_completions_failed_and_none_keep_scores_but_drop_the_text(tiny_model_dir, tmp_path):
    full = sw.probe(_problems(), **_kw(tiny_model_dir, tmp_path / "all.duckdb"))
    with full:
        ref = {(r["problem_id"], r["sample_idx"]): r for r in full.store.samples(full.run_id).iter_rows(named=True)}
    for keep in ("failed", "none"):
        res = sw.probe(_problems(), **_kw(tiny_model_dir, tmp_path / f"{keep}.duckdb", keep_completions=keep))
        assert res.run_id == full.run_id  # what is kept does not change what is sampled
        assert res.summary["keep_completions"] == keep
        with res:
            rows = list(res.store.samples(res.run_id).iter_rows(named=True))
        assert len(rows) == len(ref) == 32
        for r in rows:
            same = ref[(r["problem_id"], r["sample_idx"])]
            for col in ("status", "score", "extracted", "n_tokens", "finish_reason"):
                assert r[col] == same[col]
            kept = keep == "failed" and r["status"] != "correct"
            assert r["completion"] == (same["completion"] if kept else None)
        assert {r["status"] for r in rows} >= {"correct", "wrong"}
    assert res.summary["store_bytes"] > 0 and res.summary["store_bytes_per_1k_samples"] > 0


def test_resuming_with_another_keep_completions_is_refused(tiny_model_dir, tmp_path):
    sw.probe(_problems(2), **_kw(tiny_model_dir, tmp_path / "k.duckdb", keep_completions="none")).close()
    with pytest.raises(ConfigError, match="--keep-completions none"):
        sw.probe(_problems(2), **_kw(tiny_model_dir, tmp_path / "k.duckdb"))


def test_export_refuses_sample_demos_from_a_store_without_their_text(tiny_model_dir, tmp_path):
    sw.probe(_problems(), **_kw(tiny_model_dir, tmp_path / "n.duckdb", keep_completions="failed")).close()
    with pytest.raises(ConfigError, match="keep-completions"):
        sw.export(str(tmp_path / "n.duckdb"), str(tmp_path / "out"), demos=("solution", "samples"))
    assert not (tmp_path / "out").exists()


def test_probe_summary_reports_the_share_of_cut_off_samples_per_bucket(tmp_path):
    from stages_helpers import build_store, item
    from stagewise.curate.probe import probe_summary

    path = tmp_path / "t.duckdb"
    run_id = build_store(path, [item(0, "wttt"), item(1, "cwtw"), item(2, "cccc")])
    with ProbeStore(str(path), read_only=True) as st:
        s = probe_summary(st, run_id, ["q00", "q01", "q02"])
    assert s["truncation_by_bucket"] == {"unmastered": {"samples": 4, "truncated": 3, "rate": 0.75},
                                         "partial": {"samples": 4, "truncated": 1, "rate": 0.25},
                                         "mastered": {"samples": 4, "truncated": 0, "rate": 0.0}}
def test_items_overlapping_a_benchmark_are_left_out_before_sampling_with_their_reason(tiny_model_dir, tmp_path):
    bench = tmp_path / "bench.jsonl"
    problems = [Problem(prompt=f"Question {i}: what comes right after the number {i} when counting upwards?",
                        answer=str(i + 1), task=TASK, source="toy") for i in range(4)]
    bench.write_text(json.dumps({"question": problems[2].prompt, "answer": "3"}) + "\n")
    res = sw.probe(problems, **_kw(tiny_model_dir, tmp_path / "d.duckdb", num_samples=2),
                   decontaminate=[str(bench)])
    c = res.summary["contamination"]
    assert res.summary["items"] == 3 and c["contaminated"] == 1
    (item,) = c["items"]
    label = f"{tmp_path.name}/bench"
    assert item["id"] == problems[2].id and item["reason"] == f"contaminated: 8-gram overlap with {label}#0"
    with res:
        assert problems[2].id not in set(res.store.samples(res.run_id)["problem_id"].to_list())
    with pytest.raises(ConfigError, match="nothing left to probe"):
        sw.probe(problems[2:3], **_kw(tiny_model_dir, tmp_path / "e.duckdb"), decontaminate=[str(bench)])
    assert not (tmp_path / "e.duckdb").exists()
