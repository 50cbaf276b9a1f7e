"""The DuckDB probe store: resume by config, no double counting, crash safety, one writer, merge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import duckdb
import pytest
from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.schema import Problem
from stagewise.curate.store import ProbeStore, StoreBusyError, merge, run_id_for

CONFIG = {"model": {"name": "tiny", "sha256": "ab" * 32}, "sampling": {"temperature": 1.0, "top_p": 1.0,
          "max_new_tokens": 64}, "system_prompt": None, "prompt_template": None, "seed": 0, "num_samples": 4}


def _rows(pid, statuses, start=0):
    return [{"problem_id": pid, "sample_idx": start + i, "status": s, "score": float(s == "correct"),
             "completion": f"{pid}-{start + i}", "extracted": "1", "n_tokens": 3, "finish_reason": "stop"}
            for i, s in enumerate(statuses)]


def test_tables_and_columns_have_the_fixed_names(tmp_path):
    path = tmp_path / "s.duckdb"
    ProbeStore(path).close()
    con = duckdb.connect(str(path), read_only=True)
    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'samples'").fetchall()}
    assert {"run_id", "problem_id", "sample_idx", "completion", "extracted", "score", "status", "n_tokens",
            "finish_reason"} <= cols
    view_cols = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'mastery'").fetchall()]
    assert view_cols[:8] == ["run_id", "problem_id", "n", "c", "p_hat", "posterior_mean", "ci_low", "ci_high"]
    con.close()


def test_same_config_resumes_same_run_and_sampling_changes_make_a_new_one(tmp_path):
    with ProbeStore(tmp_path / "s.duckdb") as store:
        a = store.start_run(CONFIG)
        # Backend, batch size and shard do not change what is sampled; 1 and 1.0 are the same temperature.
        same = dict(CONFIG, backend="vllm", batch_size=7, shard="1/2",
                    sampling={"temperature": 1, "top_p": 1, "max_new_tokens": 64})
        assert store.start_run(same) == a
        hotter = dict(CONFIG, sampling=dict(CONFIG["sampling"], temperature=0.7))
        other_weights = dict(CONFIG, model={"name": "tiny", "sha256": "cd" * 32})
        assert len({a, store.start_run(hotter), store.start_run(other_weights)}) == 3
        assert store.runs().height == 3
        cfg = store.run(a)
        assert cfg["sampling"]["temperature"] == 1.0 and cfg["model"]["sha256"] == "ab" * 32
        assert "duckdb" in cfg["versions"]
        with pytest.raises(ConfigError, match="not in"):
            store.run("nope")


def test_duplicate_samples_are_ignored_never_double_counted(tmp_path):
    with ProbeStore(tmp_path / "s.duckdb") as store:
        run_id = store.start_run(CONFIG)
        batch = _rows("p1", ["correct", "wrong", "wrong"])
        assert store.add_samples(run_id, batch) == 3
        changed = [dict(r, completion="different") for r in batch]
        # re-sent batch, and a batch repeating a key inside itself
        assert store.add_samples(run_id, changed + _rows("p1", ["correct"], start=3) * 2) == 1
        assert store.sample_counts(run_id) == {"p1": (4, 2)}
        assert store.samples(run_id)["completion"].to_list()[:3] == ["p1-0", "p1-1", "p1-2"]


def test_unverifiable_samples_are_stored_but_not_evidence(tmp_path):
    with ProbeStore(tmp_path / "s.duckdb") as store:
        run_id = store.start_run(CONFIG)
        store.add_samples(run_id, _rows("p1", ["correct", "timeout", "no_answer", "error"]))
        row = store.mastery(run_id).row(0, named=True)
        assert (row["n"], row["c"], row["n_samples"], row["n_unverified"]) == (2, 1, 4, 2)
        assert store.outcomes(run_id) == {"p1": [True, None, False, None]}
        assert store.sample_indices(run_id) == {"p1": {0, 1, 2, 3}}


def test_a_bad_batch_is_rolled_back_whole(tmp_path):
    with ProbeStore(tmp_path / "s.duckdb") as store:
        run_id = store.start_run(CONFIG)
        with pytest.raises(ValueError, match="status"):
            store.add_samples(run_id, _rows("p1", ["correct"]) + [{"problem_id": "p1", "sample_idx": 1,
                                                                   "status": "maybe"}])
        assert store.samples(run_id).height == 0
        with pytest.raises(ConfigError, match="start_run"):
            store.add_samples("unknown", _rows("p1", ["correct"]))


def test_pass_at_k_columns_grow_with_the_samples_and_are_null_below_k(tmp_path):
    with ProbeStore(tmp_path / "s.duckdb") as store:
        run_id = store.start_run(CONFIG)
        store.add_samples(run_id, _rows("p1", ["correct", "wrong"]))
        assert [c for c in store.mastery().columns if c.startswith("pass_at")] == ["pass_at_1", "pass_at_2"]
        store.add_samples(run_id, _rows("p2", ["wrong"] * 15 + ["correct"]))
        m = {r["problem_id"]: r for r in store.mastery(run_id).iter_rows(named=True)}
    assert m["p2"]["pass_at_16"] == 1.0 and m["p2"]["pass_at_8"] == pytest.approx(0.5)
    assert m["p1"]["pass_at_4"] is None and m["p1"]["pass_at_2"] == 1.0


def test_problems_round_trip_in_insertion_order(tmp_path):
    probs = [Problem(prompt=f"q{i}", answer=str(i), task="gsm8k", meta={"i": i}) for i in range(5)]
    with ProbeStore(tmp_path / "s.duckdb") as store:
        assert store.add_problems(probs) == 5
        assert store.add_problems(probs[:2] + [{"prompt": "extra", "answer": "x"}]) == 1
        back = store.problems()
        assert [p.id for p in back[:5]] == [p.id for p in probs]
        assert back[3].meta_dict == {"i": 3} and back[3].task == "gsm8k"
        assert [p.prompt for p in store.problems(ids=[probs[4].id])] == ["q4"]


def test_read_only_open_of_a_missing_store_names_the_path(tmp_path):
    with pytest.raises(InputError, match="missing.duckdb"):
        ProbeStore(tmp_path / "missing.duckdb", read_only=True)


_WRITER = textwrap.dedent("""
    import sys
    from stagewise.curate.store import ProbeStore
    store = ProbeStore(sys.argv[1])
    run_id = store.start_run({"model": "m", "seed": 0})
    for b in range(10_000):
        rows = [{"problem_id": f"p{b}", "sample_idx": i, "status": "correct" if (b + i) % 3 else "wrong",
                 "completion": f"text {b} {i} " * 20} for i in range(50)]
        store.add_samples(run_id, rows)
        print(b, flush=True)
""")


def test_kill_9_loses_at_most_the_batch_in_flight(tmp_path):
    path = str(tmp_path / "s.duckdb")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, text=True)
    committed = -1
    while committed < 5:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ProbeStore(path) as store:  # reopens (replays the log) and is writable
        run_id = store.latest_run_id()
        samples = store.samples(run_id)
        batches = samples["problem_id"].unique().to_list()
        assert samples.height == 50 * len(batches)  # whole batches only
        assert len(batches) >= committed + 1
        for row in samples.filter(samples["problem_id"] == "p3").iter_rows(named=True):
            assert row["completion"] == f"text 3 {row['sample_idx']} " * 20
        assert store.add_samples(run_id, [{"problem_id": "p0", "sample_idx": 0, "status": "wrong"}]) == 0


def test_a_second_writer_is_refused_with_a_pointer_to_sharding(tmp_path):
    path = str(tmp_path / "s.duckdb")
    ProbeStore(path).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, duckdb
        con = duckdb.connect(sys.argv[1])
        print("open", flush=True)
        sys.stdin.readline()
    """), path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreBusyError, match="stagewise merge"):
            ProbeStore(path)
    finally:
        holder.communicate("\n", timeout=30)


def test_a_reader_in_another_process_also_keeps_the_writer_out(tmp_path):
    path = str(tmp_path / "s.duckdb")
    ProbeStore(path).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, duckdb
        con = duckdb.connect(sys.argv[1], read_only=True)
        print("open", flush=True)
        sys.stdin.readline()
    """), path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreBusyError, match="open in another process"):
            ProbeStore(path)
    finally:
        holder.communicate("\n", timeout=30)


def test_a_file_that_is_not_a_store_is_bad_input_not_a_busy_store(tmp_path):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("these are notes, not a database\n" * 200)
    with pytest.raises(InputError, match="cannot open as a DuckDB store") as err:
        ProbeStore(str(bad))
    assert not isinstance(err.value, StoreBusyError)


def test_a_store_open_read_only_in_this_process_says_to_close_it_before_writing(tmp_path):
    path = str(tmp_path / "s.duckdb")
    ProbeStore(path).close()
    with ProbeStore(path, read_only=True), \
            pytest.raises(ConfigError, match=r"already open read-only in this process.*close it"):
        ProbeStore(path)
    ProbeStore(path).close()  # closed, it opens for writing again


def _shard(path, pids, statuses, config=CONFIG):
    with ProbeStore(path) as store:
        store.add_problems([Problem(id=p, prompt=f"question {p}", answer="1") for p in pids])
        run_id = store.start_run(dict(config, shard=str(path)))
        for pid in pids:
            store.add_samples(run_id, _rows(pid, statuses))
    return run_id


def test_merge_combines_shards_and_reports_counts(tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    run_id = _shard(a, ["p1", "p2"], ["correct", "wrong", "wrong", "wrong"])
    assert _shard(b, ["p2", "p3"], ["correct", "wrong", "wrong", "wrong"]) == run_id
    result = merge([a, b], tmp_path / "m.duckdb")
    assert result.report["samples"] == 12 and result.report["duplicate_samples"] == 4
    assert result.report["problems"] == 3 and result.report["runs"] == 1
    with ProbeStore(result.out, read_only=True) as m:
        assert m.sample_counts(run_id) == {"p1": (4, 1), "p2": (4, 1), "p3": (4, 1)}
        assert "pass_at_4" in m.mastery().columns
    with pytest.raises(ConfigError, match="already exists"):
        merge([a, b], tmp_path / "m.duckdb")


def test_cli_merge_json_reports_the_counts(tmp_path):
    import json

    from click.testing import CliRunner

    from stagewise.cli import cli

    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    _shard(a, ["p1", "p2"], ["correct", "wrong"])
    _shard(b, ["p2", "p3"], ["correct", "wrong"])
    res = CliRunner().invoke(cli, ["merge", str(a), str(b), "--out", str(tmp_path / "m.duckdb"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["samples"] == 6 and data["duplicate_samples"] == 2 and data["problems"] == 3
    assert [i["samples"] for i in data["inputs"]] == [4, 4] and data["warnings"] == []


def test_merge_refuses_conflicting_samples_and_writes_nothing(tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    _shard(a, ["p1"], ["correct", "wrong"])
    _shard(b, ["p1"], ["wrong", "wrong"])
    with pytest.raises(ConfigError, match="conflict"):
        merge([a, b], tmp_path / "m.duckdb")
    assert sorted(os.listdir(tmp_path)) == ["a.duckdb", "b.duckdb"]


def test_merge_refuses_a_run_id_with_a_different_config(tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    run_id = _shard(a, ["p1"], ["correct"])
    _shard(b, ["p2"], ["correct"])
    con = duckdb.connect(str(b))  # simulate a store written by a different tool version: same id, other config
    con.execute("UPDATE runs SET config = ? WHERE run_id = ?",
                ['{"model": "other", "seed": 1}', run_id])
    con.close()
    with pytest.raises(ConfigError, match="different config"):
        merge([a, b], tmp_path / "m.duckdb")


def test_run_id_is_stable_across_processes():
    # The same command must resume the same run in a new process: no hash randomisation, no dict order.
    code = ("from stagewise.curate.store import run_id_for; "
            "print(run_id_for({'seed': 0, 'sampling': {'top_p': 1.0, 'temperature': 1.0}, 'model': 'm'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == run_id_for({"model": "m", "sampling": {"temperature": 1, "top_p": 1}, "seed": 0})


def test_merge_command(tmp_path):
    from click.testing import CliRunner

    from stagewise.cli import cli

    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    _shard(a, ["p1"], ["correct", "wrong"])
    _shard(b, ["p2"], ["wrong", "wrong"])
    out = tmp_path / "m.duckdb"
    result = CliRunner().invoke(cli, ["merge", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 problems, 4 samples" in result.output
    again = CliRunner().invoke(cli, ["merge", str(a), str(b), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_the_duckdb_cli_opens_a_store_and_queries_its_mastery_view(tmp_path):
    """The README tells users to browse a store with DuckDB's own CLI: the released CLI must read it."""
    import shutil
    import subprocess
    import sys

    cli = os.path.join(os.path.dirname(sys.executable), "duckdb")
    cli = cli if os.path.exists(cli) else shutil.which("duckdb")
    if cli is None:
        pytest.skip("the DuckDB CLI is not installed (pip install duckdb-cli, part of stagewise[dev])")
    path = tmp_path / "run.duckdb"
    _shard(path, ["p1", "p2"], ["correct", "wrong", "wrong", "wrong"])
    out = subprocess.run([cli, "-readonly", "-csv", str(path),
                          "SELECT problem_id, n, c, pass_at_2 FROM mastery ORDER BY problem_id"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["problem_id,n,c,pass_at_2", "p1,4,1,0.5", "p2,4,1,0.5"]
