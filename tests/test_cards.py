"""Data cards: Hugging Face dataset-card Markdown with YAML front matter, and PNG plots, written atomically."""

from __future__ import annotations

import os

import yaml

from stagewise.curate.cards import bar_png, histogram_png, markdown_table, size_category, write_card

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_card_front_matter_title_and_sections_in_order(tmp_path):
    path = tmp_path / "out" / "README.md"
    front = {"configs": [{"config_name": "rl", "data_files": "rl.parquet"}], "tags": ["stagewise"],
             "pretty_name": "Ünïcode name"}
    write_card(path, front_matter=front, title="My data", sections=[("Counts", "| a |\n|---|\n| 1 |"),
                                                                     ("Notes", "two\nlines")])
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    assert yaml.safe_load(head) == front  # round-trips, key order kept for humans
    assert body.index("# My data") < body.index("## Counts") < body.index("## Notes")
    assert os.listdir(tmp_path / "out") == ["README.md"]  # no temp file left behind


def test_write_card_replaces_an_existing_card(tmp_path):
    path = tmp_path / "README.md"
    write_card(path, front_matter={"a": 1}, title="old", sections=[])
    write_card(path, front_matter={"a": 2}, title="new", sections=[])
    assert "# new" in path.read_text() and "# old" not in path.read_text()


def test_histogram_and_bar_png(tmp_path):
    h = histogram_png([1, 2, 2, 3, 3, 3], tmp_path / "h.png", title="lengths", xlabel="chars", bins=3)
    two = histogram_png([[1, 2, 3], [2, 3, 4]], tmp_path / "h2.png", title="t", xlabel="x", labels=["a", "b"])
    b = bar_png(["unmastered", "partial", "mastered"], [3, 5, 2], tmp_path / "b.png", title="buckets",
                ylabel="items")
    for p in (h, two, b):
        with open(p, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        assert os.path.getsize(p) > 1000
    assert sorted(os.listdir(tmp_path)) == ["b.png", "h.png", "h2.png"]


def test_bar_chart_labels_do_not_overlap_however_long_the_source_names():
    from stagewise.curate.cards import bar_figure

    labels = ["gsm8k/train_head500", "rg:basic_arithmetic", "rg:chain_sum", "rg:some_much_longer_task_name",
              "math500/test", "aime/2024"]
    fig = bar_figure(labels, [0.1, 0.5, 0.2, 0.0, 0.3, 0.05], title="pass rate", ylabel="mean p")
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.get_yticklabels()]
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    # and every label lies inside the figure (tight layout, nothing cut off)
    width, height = fig.canvas.get_width_height()
    assert all(b.x0 >= 0 and b.x1 <= width and b.y0 >= 0 and b.y1 <= height for b in boxes)


def test_markdown_table_escapes_pipes_and_newlines():
    table = markdown_table(["x", "y"], [["a|b", "c\nd"], [None, 3]])
    assert table.splitlines() == ["| x | y |", "|---|---|", "| a\\|b | c d |", "|  | 3 |"]


def test_size_category_buckets():
    assert [size_category(n) for n in (0, 999, 1319, 50_000, 1_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]
