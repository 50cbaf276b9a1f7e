"""`stagewise run` end to end with a tiny model built in the test: every stage runs for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stagewise.cli import cli
from stagewise.curate.errors import ConfigError


def tiny_config(model_dir: str, policy: str = "all") -> dict:
    return {
        "model": model_dir,
        "data": {"sources": ["gsm8k:test"], "limit_per_source": 4,
                 "eval_sources": ["gsm8k:train"], "eval_limit_per_source": 2},
        "probe": {"num_samples": 2, "max_new_tokens": 8, "batch_size": 8, "backend_args": {"threads": 1}},
        "route": {"policy": policy, "keep_mastered": 0},
        "sft": {"max_steps": 1, "batch_size": 2, "max_length": 512},
        "rl": {"max_steps": 1, "batch_size": 2, "num_generations": 2, "max_new_tokens": 8},
        "eval": {"num_samples": 1, "max_new_tokens": 8, "ks": [1]},
    }


def test_run_end_to_end_from_the_cli_and_resume(tiny_model_dir, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(tiny_model_dir)))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["run", "--config", str(cfg_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Report:" in res.output

    # Everything the issue lists is in the run directory.
    for name in ("config.yaml", "probe.duckdb", "export/manifest.json", "export/sft.parquet",
                 "export/rl.parquet", "train/summary.json", "summary.json", "report.md", "report.html"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings == ["## Summary", "## Probe", "## Routing", "## Items by bucket", "## Training",
                        "## Evaluation", "## Dataset profile", "## Config"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html  # images inlined: the HTML stands alone
    steps = {s: json.loads((out / "steps" / f"{s}.done.json").read_text())
             for s in ("profile", "probe", "export", "train", "report")}
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert all(m["step"] == name and m["config"] == resolved for name, m in steps.items())
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["sft"]["global_step"] == 1 and summary["rl"]["global_step"] == 1
    # probe.backend_args reached the probe (recorded with its run)
    import duckdb

    with duckdb.connect(str(out / "probe.duckdb"), read_only=True) as con:
        run_cfg = json.loads(con.execute("SELECT config FROM runs").fetchall()[0][0])
    assert run_cfg["backend_args"]["threads"] == 1

    # The same command again resumes: every stage is skipped, nothing recomputed.
    again = CliRunner().invoke(cli, ["run", "--config", str(cfg_path), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert again.output.count("done earlier") == 4

    # Interrupted after the export directory was complete, before the run recorded it: the export is
    # reused (its own marker, same options), training and evaluation are read back from theirs.
    for name in ("export", "train"):
        (out / "steps" / f"{name}.done.json").unlink()
    interrupted = CliRunner().invoke(cli, ["run", "--config", str(cfg_path), "--out", str(out)])
    assert interrupted.exit_code == 0, interrupted.output
    assert "exported earlier with the same options" in interrupted.output
    assert interrupted.output.count("done earlier") == 2  # profile, probe

    # --json: stdout is the result alone; the stage lines went to stderr
    as_json = CliRunner().invoke(cli, ["run", "--config", str(cfg_path), "--out", str(out), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    from readme_json import assert_documented

    assert_documented("run", data)
    assert data["report"] == str(out / "report.md") and set(data["seconds"]) >= {"probe", "export", "train"}
    assert data["warnings"] == data["notes"] and "done earlier" in as_json.stderr

    # An export directory made with other options is neither reused nor replaced by a resumed run.
    (out / "steps" / "export.done.json").unlink()
    marker = out / "export" / "export.done.json"
    record = json.loads(marker.read_text())
    record["config"]["policy"], record["config_hash"] = "band", "made with other options"
    marker.write_text(json.dumps(record))
    refused = CliRunner().invoke(cli, ["run", "--config", str(cfg_path), "--out", str(out)])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert (f"Error: {out / 'export'}/ was exported with policy=band, this run asks policy=all; pass --fresh "
            "to start the run over, or choose another --out") in refused.output
    assert json.loads(marker.read_text())["config"]["policy"] == "band"  # left as it was


def test_a_run_dir_refuses_a_different_config(tiny_model_dir, tmp_path):
    import stagewise as sw

    out = tmp_path / "run"
    out.mkdir()
    cfg = tiny_config(tiny_model_dir)
    from stagewise.runconfig import load_config

    (out / "config.yaml").write_text(yaml.safe_dump(load_config(overrides=cfg)))
    changed = tiny_config(tiny_model_dir)
    changed["probe"]["num_samples"] = 3
    with pytest.raises(ConfigError, match=r"probe.num_samples: 2 -> 3.*--fresh"):
        sw.run(changed, out=out)


def test_empty_rl_split_skips_rl_with_a_note(tiny_model_dir, tmp_path):
    """A random tiny model solves nothing: every item is unmastered, RL has no items and is skipped."""
    import stagewise as sw

    cfg = tiny_config(tiny_model_dir, policy="stage")
    result = sw.run(cfg, out=tmp_path / "run", echo=lambda *_: None)
    report = Path(result.report).read_text()
    assert "RL skipped" in report
    assert "no partial items" in report


def test_a_run_leaves_out_pool_items_overlapping_its_heldout_set_and_named_benchmarks(tiny_model_dir, tmp_path):
    from stagewise.curate.sources import load_problems
    from stagewise.curate.store import ProbeStore

    import stagewise as sw

    pool = list(load_problems("gsm8k:test", limit=4))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": pool[1].prompt, "answer": "1"}) + "\n")
    cfg = tiny_config(tiny_model_dir, policy="stage")
    cfg["data"]["eval_sources"] = ["gsm8k:train", "gsm8k:test"]  # a held-out set holding pool item 0..3
    cfg["data"]["eval_limit_per_source"] = 1
    cfg["data"]["decontaminate"] = [str(bench)]
    lines = []
    with pytest.raises(ConfigError, match="nothing left to probe"):  # every pool item is in gsm8k:test
        sw.run(cfg, out=tmp_path / "all", echo=lines.append)
    assert not (tmp_path / "all" / "probe.duckdb").exists()
    cfg["data"]["eval_sources"] = ["gsm8k:train"]
    result = sw.run(cfg, out=tmp_path / "run", echo=lines.append)
    probed = json.loads((Path(result.out) / "steps" / "probe.done.json").read_text())["result"]
    left = probed["summary"]["contamination"]
    assert [i["id"] for i in left["items"]] == [pool[1].id]
    assert any("left out 1 pool items" in line for line in lines)
    with ProbeStore(Path(result.out) / "probe.duckdb", read_only=True) as st:
        assert pool[1].id not in {p.id for p in st.problems()}


def test_bad_config_keys_are_reported_at_once(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("probe:\n  num_sample: 4\nsft:\n  max_stepz: 3\n")
    res = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "probe.num_sample" in res.output and "max_stepz" in res.output
    assert "Traceback" not in res.output
    # Each at the line and column of the key in the file (click may wrap the long line).
    flat = " ".join(res.output.split())
    assert "bad.yaml:2:3: probe.num_sample is not an option" in flat
    assert "bad.yaml:4:3: unknown key 'sft.max_stepz' (did you mean sft.max_steps?)" in flat


def test_unknown_backend_args_stop_a_run_before_any_work(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("probe:\n  backend_args:\n    bogus: 1\n")
    res = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "probe.backend_args" in res.output and "'bogus'" in res.output and "device_map" in res.output
    res = CliRunner().invoke(cli, ["run", "--backend-arg", "bogus=1", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "'bogus'" in res.output
    assert not (tmp_path / "r").exists()


def test_print_config_is_the_commented_default():
    res = CliRunner().invoke(cli, ["run", "--print-config"])
    assert res.exit_code == 0
    parsed = yaml.safe_load(res.output)
    assert set(parsed) >= {"data", "probe", "route", "export", "sft", "rl", "eval"}
    assert "# " in res.output  # the comments explain the config


def test_estimate_grows_with_the_budget():
    from stagewise.end_to_end import estimate_minutes
    from stagewise.runconfig import load_config

    small = estimate_minutes(load_config(scale="small"))
    medium = estimate_minutes(load_config(scale="medium"))
    assert 1 < small < medium


@pytest.mark.slow
def test_the_real_default_run(tmp_path):
    """The README's first command: SmolLM2-135M on the embedded pool (about ten minutes on 2 cores)."""
    import stagewise as sw

    result = sw.run(out=tmp_path / "default")
    assert Path(result.report).exists()
    assert set(result.seconds) >= {"profile", "probe", "export", "train"}
    # The default is tuned to show a real effect: a held-out gain whose paired interval excludes zero.
    gain = json.loads((tmp_path / "default" / "summary.json").read_text())["heldout"]["gain"]
    assert gain["n_items"] >= 40 and gain["ci_low"] > 0, gain


def test_heldout_items_are_disjoint_and_scored_like_the_probe():
    from stagewise.end_to_end import _load_data
    from stagewise.runconfig import load_config

    cfg = load_config(overrides={"data": {"sources": ["rg:chain_sum?size=20&seed=1&max_digits=1&max_terms=2"],
                                          "eval_sources": ["rg:chain_sum?size=20&seed=9&max_digits=1&max_terms=2"],
                                          "limit_per_source": 20, "eval_limit_per_source": 20},
                                 "probe": {"task": "gsm8k"}})
    pool, heldout = _load_data(cfg)
    assert heldout and all(p.task == "gsm8k" for p in heldout)
    assert not {p.id for p in pool} & {p.id for p in heldout}


def test_run_config_exposes_replay_truncation_and_the_loop(tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    import stagewise as sw

    cfg = tiny_config(tiny_model_dir, policy="stage")
    cfg["route"]["truncated"] = "wrong"  # exclude would unroute every item: 8 tokens cut every sample
    cfg["export"] = {"sft_replay": 0.3, "sft_replay_from": "mastered,partial"}
    cfg["train"] = {"rounds": 2, "reprobe": True}
    res = sw.run(cfg, out=tmp_path / "run", progress=False, echo=lambda *a: None)
    out = Path(res.out)
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["route"]["truncated"] == "wrong" and "sft_replay" in manifest["counts"]
    assert manifest["demonstrations"]["sft_replay"]["from"] == ["mastered", "partial"]
    rounds = pq.read_table(out / "train" / "rounds.parquet").to_pylist()
    assert {r["round"] for r in rounds} == {1, 2}
    assert (out / "train" / "transitions.parquet").exists()
    assert "Re-probe, round 2" in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match="train.roundz is not an option"):
        sw.run({**cfg, "train": {"roundz": 2}}, out=tmp_path / "bad", progress=False, echo=lambda *a: None)


def test_the_default_holds_out_enough_unseen_items_for_a_paired_interval():
    from stagewise.end_to_end import _load_data
    from stagewise.runconfig import load_config

    pool, heldout = _load_data(load_config())
    assert len(heldout) >= 40 and len(pool) >= 40
    assert not {p.id for p in pool} & {p.id for p in heldout}
    assert not {p.prompt for p in pool} & {p.prompt for p in heldout}
