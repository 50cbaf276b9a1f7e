"""The run report as a person reads it: built from a real tiny `stagewise run`, opened in headless
Chromium, and checked for what a reader sees (summary first, samples per item, config last, no
markdown syntax, no path of the machine)."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_pipeline import tiny_config


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    import stagewise as sw

    out = tmp_path_factory.mktemp("report-run") / "run"
    sw.run(tiny_config(tiny_model_dir), out=out, progress=False, echo=lambda *_: None)
    return out


def _needs_chromium():
    from stagewise.run_report import find_chromium

    if find_chromium() is None:
        pytest.skip("chromium is not installed, so the report cannot be opened in a browser here "
                    "(Debian: apt-get install -y chromium; .ci/run installs it)")


class _Page(HTMLParser):
    """What the browser built: headings in order, <details> blocks with their text, visible text."""

    def __init__(self):
        super().__init__()
        self.headings: list[tuple[str, str]] = []
        self.details: list[str] = []
        self.text_outside_pre: list[str] = []
        self.tags: list[str] = []
        self._stack: list[str] = []
        self._heading: str | None = None
        self._details_depth = 0
        self._current_details: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._stack.append(tag)
        if tag in ("h1", "h2", "h3"):
            self._heading = ""
        if tag == "details":
            self._details_depth += 1
            self._current_details = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append((tag, self._heading.strip()))
            self._heading = None
        if tag == "details":
            self._details_depth -= 1
            self.details.append("".join(self._current_details))
        while self._stack and self._stack.pop() != tag:
            pass

    def handle_data(self, data):
        if "style" in self._stack or "title" in self._stack:
            return
        if self._heading is not None:
            self._heading += data
        if self._details_depth:
            self._current_details.append(data)
        if "pre" not in self._stack:  # <pre> holds model output, which may contain anything
            self.text_outside_pre.append(data)


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_summary_json_holds_the_paired_heldout_gain_status_split_and_wall_time(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    held = summary["heldout"]
    assert 0.0 <= held["before"]["pass@1"] <= 1.0 and 0.0 <= held["after"]["pass@1"] <= 1.0
    gain = held["gain"]
    assert gain["mean"] == pytest.approx(held["after"]["pass@1"] - held["before"]["pass@1"])
    assert gain["ci_low"] <= gain["mean"] <= gain["ci_high"]
    assert gain["n_items"] == held["items"] == 2 and "paired" in gain["method"]
    # every held-out sample has a status before and after (1 sample per item at each checkpoint)
    for point in (held["before"], held["after"]):
        assert sum(point["statuses"].values()) == held["items"]
        assert set(point["statuses"]) <= {"correct", "wrong", "no_answer", "timeout", "error"}
    wall = summary["wall_seconds"]
    assert set(wall) == {"profile", "probe", "export", "train", "total"}
    assert wall["total"] == pytest.approx(sum(v for k, v in wall.items() if k != "total"), abs=0.05)


def test_the_report_holds_no_path_of_the_machine(tiny_run, tiny_model_dir):
    from stagewise.curate.models import cache_dir

    for name in ("report.html", "report.md"):
        text = (tiny_run / name).read_text()
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
        for path in (str(tiny_run), str(tiny_run.resolve()), tiny_model_dir, str(cache_dir()),
                     os.path.expanduser("~")):
            assert path not in text, (name, path)
        assert not re.search(r"(?<![\w.:/])/(?:tmp|home|root|usr|var|work|Users|private)/", text), name
    # files of the run are named relative to it
    md = (tiny_run / "report.md").read_text()
    assert "](export/mastery.png)" in md and "train/sft/model" in md


def test_statements_follow_the_runs_own_numbers(tiny_run):
    from stagewise.train.stage_eval import read_metrics

    md = (tiny_run / "report.md").read_text()
    assert "RL can raise the held-out SFT loss" not in md  # no fixed claim beside the curves
    losses = [m["heldout_sft_loss"] for m in read_metrics(tiny_run / "train" / "rl" / "metrics.jsonl")
              if "heldout_sft_loss" in m]
    first, last = losses[0], losses[-1]
    said = (f"stayed at {last:.3f}" if round(first, 3) == round(last, 3) else
            f"{'rose' if last > first else 'fell'} from {first:.3f} to {last:.3f}")
    assert f"held-out SFT loss (the SFT objective on demonstrations not trained on) {said}" in md
    summary = json.loads((tiny_run / "summary.json").read_text())
    held = summary["heldout"]
    assert f"{held['before']['pass@1']:.3f}" in md and f"{held['gain']['mean']:+.3f}" in md
    # one row per status, in the probe's table and in the held-out before/after table
    for status in ("correct", "wrong", "no_answer", "timeout", "error"):
        assert sum(line.startswith(f"| {status} |") for line in md.splitlines()) == 2, status
    n_before = held["before"]["statuses"].get("no_answer", 0)
    assert f"| no_answer | {n_before} ({100 * n_before / held['items']:.0f}%) |" in md


def test_a_reader_sees_the_summary_first_every_items_samples_and_the_config_last(tiny_run):
    """Opened in headless Chromium: the DOM the browser built, not the file's text."""
    _needs_chromium()
    import polars as pl

    from stagewise.run_report import dump_dom

    page = _page(dump_dom(tiny_run / "report.html"))
    h2 = [text for tag, text in page.headings if tag == "h2"]
    assert h2[0] == "Summary" and h2[-1] == "Config"
    assert "script" not in page.tags  # static page: no JavaScript

    visible = " ".join(page.text_outside_pre)
    assert "**" not in visible  # markdown is rendered, not shown
    assert "strong" in page.tags
    assert "Held-out pass@1" in visible and "Paired change:" in visible and "Wall time:" in visible
    assert "key=value" not in visible and "{\"" not in visible  # tables, not raw dicts

    assignments = pl.read_parquet(tiny_run / "export" / "assignments.parquet")
    assert len(page.details) == assignments.height  # one <details> per routed item
    k = json.loads((tiny_run / "steps" / "probe.done.json").read_text())["result"]["summary"]["k"]
    for block, item_id in zip(page.details, assignments.sort("p_hat", "id", descending=[True, False])["id"]):
        assert item_id in block and "Routing:" in block and "Prompt:" in block
        assert block.count("verdict") == k and block.count("finish reason") == k
    bucket_headings = [text for tag, text in page.headings if tag == "h3" and "item(s) →" in text]
    assert bucket_headings == [f"Unmastered: {assignments.height} item(s) → SFT and RL {assignments.height}"]


def test_the_screenshot_shows_the_whole_page(tiny_run, tmp_path):
    _needs_chromium()
    from PIL import Image

    from stagewise.run_report import render_png

    png = render_png(tiny_run / "report.html", tmp_path / "report.png", width=1000)
    with Image.open(png) as shot:
        width, height = shot.size
        colours = shot.convert("L").getextrema()
    assert width == 1000 and 1500 < height < 16000  # cropped to the page, not the tall window
    assert colours[0] < 100 < colours[1]  # text on a light page, not a blank image


def test_paths_inside_the_run_become_relative_and_others_lose_their_directories(tmp_path, monkeypatch):
    from stagewise.run_report import path_scrubber

    monkeypatch.setenv("STAGEWISE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "runs" / "r1"
    scrub = path_scrubber(run, {"model": str(tmp_path / "models" / "my-model")})
    assert scrub(f"store {run}/probe.duckdb, dir {run}") == "store probe.duckdb, dir ."
    assert scrub(f"model {tmp_path}/models/my-model") == "model my-model"
    assert scrub(f"{tmp_path}/cache/models/smollm2") == "<stagewise cache>/models/smollm2"
    assert scrub("1/4 correct, pass@1 / pass@k") == "1/4 correct, pass@1 / pass@k"
