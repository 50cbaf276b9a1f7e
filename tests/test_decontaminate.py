"""Decontamination: an exact copy, a paraphrase sharing one 8-gram and a near miss at 7 words, templates,
self-decontamination, the parquet of matches, the CLI's JSON, and bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from stagewise.curate.decontaminate import NgramIndex, decontaminate
from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.schema import normalise_text

from stagewise.cli import cli

BENCH = [
    {"id": "b0", "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                             "clips in May. How many clips did Natalia sell altogether?", "answer": "72"},
    {"id": "b1", "question": "Weng earns 12 dollars an hour for babysitting. Yesterday she did 50 minutes of "
                             "babysitting. How much did she earn?", "answer": "10"},
    {"id": "b2", "question": "What is 2 + 3?", "answer": "5"},
]
# Words 0-7 of b1 after normalisation: "weng earns 12 dollars an hour for babysitting."
PARAPHRASE = ("Yesterday a girl did some work. Weng earns 12 dollars an hour for babysitting. "
              "Tell me what she made today, in cents please.")
# Shares exactly 7 consecutive words with b0 ("natalia sold clips to 48 of her"), never 8.
NEAR_MISS = "Natalia sold clips to 48 of her cousins on Monday and counted what was left over."


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


@pytest.fixture()
def bench(tmp_path):
    (tmp_path / "bench").mkdir()
    return write_jsonl(tmp_path / "bench" / "test.jsonl", BENCH)


@pytest.fixture()
def pool(tmp_path):
    rows = [
        {"question": BENCH[0]["question"].upper().replace(" ", "  "), "answer": "72"},  # exact copy (normalised)
        {"question": PARAPHRASE, "answer": "1000"},
        {"question": NEAR_MISS, "answer": "3"},
        {"question": "A completely different question about trains and their timetables today?", "answer": "4"},
    ]
    return write_jsonl(tmp_path / "pool.jsonl", rows)


def test_an_exact_copy_a_paraphrase_with_one_shared_8_gram_are_found_and_a_7_word_near_miss_is_not(bench, pool):
    res = decontaminate(pool, against=[bench])
    assert res.rows == 4 and res.contaminated == 2
    by_row = {r["row"]: r for r in res.matches.to_dicts()}
    assert set(by_row) == {0, 1}
    assert by_row[0]["benchmark_item"] == "bench/test#0" and by_row[0]["benchmark_id"] == "b0"
    assert by_row[0]["shared_ngrams"] == len(normalise_text(BENCH[0]["question"]).split()) - 7
    assert by_row[1]["benchmark_item"] == "bench/test#1" and by_row[1]["shared_ngrams"] == 1
    assert by_row[1]["ngram"] == "weng earns 12 dollars an hour for babysitting."
    (label, counts), = res.sources.items()
    assert label.endswith("/pool") and counts == {"rows": 4, "contaminated": 2, "by_set": {"bench/test": 2}}
    # the same near miss is found once the n-gram is 7 words long
    assert decontaminate(pool, against=[bench], ngram=7).contaminated == 3


def test_a_set_decontaminated_against_itself_reports_every_item_short_ones_included(bench):
    res = decontaminate(bench, against=[bench])
    assert res.contaminated == 3
    own = res.matches.filter(pl.col("benchmark_id") == pl.col("id"))
    assert sorted(own["row"].to_list()) == [0, 1, 2]
    short = own.filter(pl.col("row") == 2).row(0, named=True)
    assert short["ngram"] == "what is 2 + 3?"  # shorter than 8 words: the whole prompt is its key
    full = decontaminate("gsm8k:test", against=["gsm8k:test"], ngram=8)
    assert full.rows == full.contaminated == 1319


def test_template_words_of_a_set_are_ignored_so_only_shared_content_counts(tmp_path):
    instruction = "State the final answer to the following arithmetic problem:"
    bench = write_jsonl(tmp_path / "rg.jsonl", [{"question": f"{instruction} {a} + {b} =", "answer": str(a + b)}
                                                for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]])
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"question": f"{instruction} 3 + 4 =", "answer": "7"},     # a real copy of item 1
        {"question": f"{instruction} 11 + 12 =", "answer": "23"},  # same template, other numbers
    ])
    res = decontaminate(pool, against=[bench])
    assert res.sets[0]["template_ngrams"] >= 1
    assert res.contaminated == 1
    (m,) = res.matches.to_dicts()
    assert m["row"] == 0 and m["benchmark_item"].endswith("/rg#1") and m["ngram"] == "3 + 4 ="


def test_matches_go_to_parquet_with_the_ngram_and_the_benchmark_item(bench, pool, tmp_path):
    out = tmp_path / "m.parquet"
    res = decontaminate(pool, against=[bench], out=out)
    df = pl.read_parquet(out)
    assert res.out == str(out) and df.height == 2
    assert {"source", "row", "id", "prompt", "set", "benchmark_item", "benchmark_id", "ngram",
            "shared_ngrams"} <= set(df.columns)


def test_problems_in_memory_are_matched_by_id_and_a_reason_names_the_benchmark_item(bench):
    from stagewise.curate.sources import load_problems

    index = NgramIndex.build([bench])
    problems = load_problems(bench)
    hits = index.match_problems(problems)
    assert set(hits) == {p.id for p in problems}
    assert hits["b0"][0].reason(8) == "contaminated: 8-gram overlap with bench/test#0"


def test_bad_input_is_one_clear_error_and_nothing_is_written(bench, pool, tmp_path):
    out = tmp_path / "m.parquet"
    with pytest.raises(InputError, match="not found"):
        decontaminate(pool, against=[str(tmp_path / "missing.jsonl")], out=out)
    with pytest.raises(InputError, match="unknown reasoning-gym dataset"):
        decontaminate("rg:no_such_set", against=[bench], out=out)
    with pytest.raises(ConfigError, match="--ngram"):
        decontaminate(pool, against=[bench], ngram=0, out=out)
    with pytest.raises(ConfigError, match="parquet"):
        decontaminate(pool, against=[bench], out=tmp_path / "m.csv")
    assert not out.exists() and not (tmp_path / "m.csv").exists()
    r = CliRunner().invoke(cli, ["decontaminate", pool, "--against", "gsm8k:tset", "--out", str(out)])
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_the_cli_json_has_a_top_level_contaminated_count_and_nothing_else_on_stdout(bench, pool):
    r = CliRunner().invoke(cli, ["decontaminate", pool, "--against", bench, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["contaminated"] == 2 and data["rows"] == 4 and data["ngram"] == 8
    assert [s["by_set"] for s in data["sources"].values()] == [{"bench/test": 2}]
    assert data["sets"][0]["set"] == "bench/test" and data["warnings"] == []
    assert {m["benchmark_item"] for m in data["matches"]} == {"bench/test#0", "bench/test#1"}


def test_the_cli_table_counts_per_source_and_set(bench, pool):
    r = CliRunner().invoke(cli, ["decontaminate", pool, "--against", bench, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "2 of 4 pool items share 8 consecutive words" in r.output and "bench/test#1" in r.output


def test_bad_pool_rows_stop_the_run_unless_skipped_then_they_are_a_warning(bench, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"question": BENCH[1]["question"], "answer": "10"}) + "\nnot json\n")
    with pytest.raises(InputError, match="line 2"):
        decontaminate(str(pool), against=[bench])
    rejects = tmp_path / "rejects.jsonl"
    res = decontaminate(str(pool), against=[bench], skip_bad=True, rejects=rejects)
    assert res.contaminated == 1 and res.warnings == [f"skipped 1 bad rows (written to {rejects})"]
    assert json.loads(rejects.read_text())["line"] == 2
