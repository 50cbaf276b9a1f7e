"""The full re-probe: the export's probe settings repeated (fixed or adaptive), a seeded sample with an
estimate, and a real re-probe of exported rows with the tiny model."""

from __future__ import annotations

from stagewise.stages.reroute import Reroute
from stagewise.train.reprobe import bucket_estimate, full_reprobe, probe_settings, sample_ids

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 3}


def test_the_reprobe_repeats_a_fixed_probe_and_an_adaptive_one():
    fixed = probe_settings({"num_samples": 8, "seed": 3}, SAMPLING)
    assert fixed == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 3, "seed": 3, "num_samples": 8}
    adaptive = probe_settings({"adaptive": {"min_samples": 4, "k_max": 16, "round_size": 2}, "k_max": 16}, SAMPLING)
    assert adaptive["adaptive"] is True and (adaptive["min_samples"], adaptive["k_max"], adaptive["round_size"]) == (4, 16, 2)
    assert "num_samples" not in adaptive
    batched = probe_settings({"num_samples": 8, "backend_options": {"batch_size": 256}}, SAMPLING)
    assert batched["batch_size"] == 256


def test_a_reprobe_sample_is_seeded_and_estimates_the_bucket_shares_of_all_items():
    ids = [f"i{k}" for k in range(10)]
    assert sample_ids(ids, 4, seed=1) == sample_ids(list(reversed(ids)), 4, seed=1) and len(sample_ids(ids, 4, 1)) == 4
    assert sample_ids(ids, None) == sorted(ids) and sample_ids(ids, 50) == sorted(ids)
    moves = [Reroute(f"i{k}", "unmastered", "sft", b, "sft", "", 4, 0)
             for k, b in enumerate(["unmastered", "unmastered", "unmastered", "partial"])]
    assert bucket_estimate(moves, 40) == {"partial": {"share": 0.25, "of_all_items_about": 10},
                                          "unmastered": {"share": 0.75, "of_all_items_about": 30}}


def test_an_adaptive_reprobe_of_exported_rows_decides_with_the_exports_router(tmp_path, tiny_model_dir):
    from stagewise.curate.schema import Problem
    from stagewise.curate.store import ProbeStore

    problems = {f"q{k}": Problem(prompt=f"q{k}", answer="7", id=f"q{k}", task="exact",
                                 messages=[{"role": "user", "content": f"q{k}"}]) for k in range(3)}
    before = {pid: ("partial", "rl") for pid in problems}
    res = full_reprobe(problems, before, tiny_model_dir, tmp_path / "reprobe",
                       route={"policy": "band", "low": 0.0, "high": 1.0}, sampling=SAMPLING,
                       probe_cfg={"adaptive": {"min_samples": 2, "k_max": 4, "round_size": 1}, "k_max": 4},
                       sample=2)
    assert res.adaptive and res.probed == 2 and res.items == 3 and res.estimate
    with ProbeStore(str(tmp_path / "reprobe" / "reprobe.duckdb"), read_only=True) as st:
        cfg = st.run(res.run_id)
        n = {pid: n for pid, (n, _) in st.sample_counts(res.run_id).items()}
    assert cfg["adaptive"] == {"min_samples": 2, "k_max": 4, "round_size": 1}
    assert all(2 <= k <= 4 for k in n.values())
    # the random model never writes "7": 0/n, which band (0, 1) drops: both leave RL
    assert all(m.after_stage == "drop" and m.left_rl and "≤ low 0" in m.reason for m in res.moves)
    assert sum(t["count"] for t in res.transitions) == 2
