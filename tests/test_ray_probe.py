"""Sharded probing gives the samples of one process: `--shard i/N` stores merged, and `--ray` on a real
local Ray cluster (a head and a worker node started by the test, one CPU each) through the CLI.

Every (item, sample index) has its own seed, so the keys, statuses and per-item counts must be
identical. The hf backend decodes several sequences in one batch, and which sequences share a batch
depends on the shard; batched float arithmetic could then flip a rare token. The tests print how many
completions differ, and require the keys and counts to match exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

K = 4
MAX_NEW = 12


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Eight one-digit questions: the tiny model's random digits are sometimes right, so counts vary."""
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + {i % 3}? Answer with one digit.",
                                        "answer": str((i + i % 3) % 10)}) + "\n" for i in range(8)))
    return str(path)


def _probe_kw(model):
    return {"model": model, "num_samples": K, "max_new_tokens": MAX_NEW, "batch_size": 8, "seed": 3,
            "progress": False, "backend_args": {"threads": 1}, "verifier_workers": 1, "task": "gsm8k"}


@pytest.fixture(scope="module")
def single(pool, tiny_model_dir, tmp_path_factory):
    import stagewise as sw

    store = str(tmp_path_factory.mktemp("single") / "one.duckdb")
    res = sw.probe(pool, store=store, **_probe_kw(tiny_model_dir))
    res.close()
    return store, res.run_id


def _samples(store):
    from stagewise.curate.store import ProbeStore

    with ProbeStore(store, read_only=True) as st:
        rows = st.con.execute("SELECT run_id, problem_id, sample_idx, completion, status, n_tokens FROM samples"
                              ).fetchall()
        counts = {(r, p): (n, c) for r, p, n, c in st.con.execute(
            "SELECT run_id, problem_id, n, c FROM mastery").fetchall()}
    return {(r, p, i): (text, status, ntok) for r, p, i, text, status, ntok in rows}, counts


def _compare(reference, other, label):
    ref, ref_counts = _samples(reference)
    got, got_counts = _samples(other)
    assert sorted(got) == sorted(ref), f"{label}: different sample keys"
    assert got_counts == ref_counts, f"{label}: different per-item (n, c)"
    assert {k: v[1] for k, v in got.items()} == {k: v[1] for k, v in ref.items()}, f"{label}: statuses differ"
    differ = [k for k in ref if ref[k][0] != got[k][0]]
    print(f"{label}: {len(differ)} of {len(ref)} completions differ from the single-process run")
    assert len(ref) == 8 * K and sum(c for _, c in ref_counts.values()) > 0  # the check is not vacuous
    return differ


def test_two_local_shards_merged_equal_one_process(pool, single, tiny_model_dir, tmp_path):
    import stagewise as sw

    one, run_id = single
    shards = []
    for i in range(2):
        path = str(tmp_path / f"shard{i}.duckdb")
        res = sw.probe(pool, store=path, shard=f"{i}/2", **_probe_kw(tiny_model_dir))
        assert res.run_id == run_id
        assert 0 < res.summary["items"] < 8
        res.close()
        shards.append(path)
    merged = str(tmp_path / "merged.duckdb")
    sw.merge(shards, merged)
    differ = _compare(one, merged, "--shard 0/2 + 1/2")
    assert differ == []


def test_probe_on_a_local_ray_cluster_equals_one_process_and_resumes(pool, single, tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    import stagewise as sw

    one, run_id = single
    store = str(tmp_path / "ray.duckdb")
    # Three items probed here first: the Ray run must resume them, not draw them again.
    with open(pool) as fh:
        head = tmp_path / "head.jsonl"
        head.write_text("".join(fh.readlines()[:3]))
    sw.probe(str(head), store=store, **_probe_kw(tiny_model_dir)).close()

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        exe = os.path.join(os.path.dirname(sys.executable), "stagewise")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("RAY_ADDRESS", None)
        # A model path the workers cannot see (no shared filesystem): one clear message, exit 1.
        bad = subprocess.run([exe, "probe", pool, "--model", str(tmp_path / "not-on-the-workers"), "--store",
                              str(tmp_path / "bad.duckdb"), "--ray", cluster.address, "--ray-shards", "2"],
                             capture_output=True, text=True, timeout=600, env=env, check=False)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
        assert "a Ray shard failed" in bad.stderr and "model path does not exist" in bad.stderr
        out = subprocess.run(
            [exe, "probe", pool, "--task", "gsm8k", "--model", tiny_model_dir, "-k", str(K),
             "--max-new-tokens", str(MAX_NEW), "--batch-size", "8", "--seed", "3", "--store", store,
             "--ray", cluster.address, "--ray-shards", "2", "--json"],
            capture_output=True, text=True, timeout=600, env=env, check=False)
    finally:
        cluster.shutdown()
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)["summary"]
    assert json.loads(out.stdout)["run_id"] == run_id
    assert summary["samples_resumed"] == 3 * K and summary["samples_new"] == 5 * K
    ray_info = summary["ray"]
    assert ray_info["shards"] == 2 and len(ray_info["per_shard"]) == 2
    # both nodes of the cluster did work (one CPU each, one shard each)
    assert all(s["samples"] > 0 for s in ray_info["per_shard"])
    assert len({(s["node"], s["pid"]) for s in ray_info["per_shard"]}) == 2
    assert _compare(one, store, "--ray with 2 shards") == []
