"""`stagewise profile`: statistics a curator relies on, both engines agreeing, bad input, card, CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from stagewise.curate import profile as profile_mod
from stagewise.curate.errors import InputError
from stagewise.curate.presets import BOXED_PATTERN, answer_type, answer_type_expr, choose_columns, last_boxed
from stagewise.curate.sources import load_problems

import stagewise as sw
from stagewise.cli import cli


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    return str(path)


MIXED = [
    {"question": "Int?", "answer": "12"},
    {"question": "Dec?", "answer": "-1.5"},
    {"question": "Frac?", "answer": "\\frac{3}{4}"},
    {"question": "Slash?", "answer": "3/4"},
    {"question": "Latex?", "answer": "2\\sqrt{3}"},
    {"question": "Text?", "answer": "Paris"},
    {"question": "Empty?", "answer": ""},
    {"question": "Null?", "answer": None},
    {"question": "Int?", "answer": "12"},                     # exact duplicate prompt
    {"question": "  INT? ", "answer": "12", "solution": "s"},  # duplicate after normalising
    {"question": None, "answer": "1"},                        # no prompt: counted, not fatal
]


def test_profile_of_shipped_gsm8k_test():
    p = sw.profile("gsm8k:test").to_dict()
    assert p["rows"] == 1319
    assert p["answer_types"]["integer"] == 1319
    assert p["parse_failures"] == {"gsm8k": 0}
    assert p["missing"] == {"prompt": 0, "answer": 0, "solution": 0}
    assert p["tasks"] == {"gsm8k": 1319} and p["sources"] == {"gsm8k/test": 1319}
    assert p["columns"][0]["engine"] == "polars" and p["columns"][0]["prompt"] == "question"
    assert [s["answer"] for s in p["samples"]] == ["18", "3", "70000"]
    assert p["lengths"]["prompt_chars"]["count"] == 1319


def test_statistics_on_a_mixed_file_and_both_engines_agree(tmp_path):
    jsonl = write_jsonl(tmp_path / "mixed.jsonl", MIXED)
    (tmp_path / "mixed.json").write_text(json.dumps(MIXED))  # .json goes through the row readers
    fast = sw.profile(jsonl).to_dict()
    rows = sw.profile(str(tmp_path / "mixed.json")).to_dict()
    assert fast["columns"][0]["engine"] == "polars" and rows["columns"][0]["engine"] == "rows"
    assert fast["rows"] == 11
    assert fast["duplicates"] == {"exact": 1, "normalised": 2}
    assert fast["missing"] == {"prompt": 1, "answer": 2, "solution": 10}
    assert fast["answer_types"] == {"integer": 4, "decimal": 1, "fraction": 2, "latex": 1, "text": 1, "empty": 2}
    for key in ("rows", "duplicates", "missing", "answer_types", "parse_failures", "lengths"):
        assert fast[key] == rows[key], key


def test_small_blocks_give_the_same_profile(tmp_path, monkeypatch):
    """Cutting the file into many byte blocks (as for a 1M-row file) changes nothing."""
    from stagewise.curate.sources import shipped_path

    path = tmp_path / "g.jsonl"
    with open(shipped_path("gsm8k", "test"), "rb") as f:
        path.write_bytes(f.read())
    whole = sw.profile(f"gsm8k:{path}").to_dict()
    monkeypatch.setattr(profile_mod, "BLOCK_BYTES", 4096)
    blocked = sw.profile(f"gsm8k:{path}").to_dict()
    for key in ("rows", "duplicates", "missing", "answer_types", "parse_failures", "lengths", "samples"):
        assert whole[key] == blocked[key], key


def test_gsm8k_parse_failures_are_counted_not_raised(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "a", "answer": "x #### 1,000"},
                                              {"question": "b", "answer": "no marker"},
                                              {"question": "c", "answer": "y ####  "}])
    p = sw.profile(f"gsm8k:{path}").to_dict()
    assert p["parse_failures"] == {"gsm8k": 2}
    assert p["answer_types"]["integer"] == 1 and p["missing"]["answer"] == 2
    with pytest.raises(InputError):  # loading for a probe, by contrast, stops at the bad row
        load_problems(f"gsm8k:{path}")


def test_polars_and_python_presets_agree_on_shipped_gsm8k_and_math():
    from stagewise.curate.sources import shipped_path

    problems = load_problems("gsm8k:test", dedupe=False)
    raw = pl.read_ndjson(shipped_path("gsm8k", "test"))
    plan = choose_columns(raw.columns, raw.row(0, named=True), where="x", preset="gsm8k")
    canon = raw.select(plan.polars_exprs(raw.schema))
    assert canon["answer"].to_list() == [p.answer for p in problems]
    assert canon["solution"].to_list() == [p.solution for p in problems]
    odd = pl.DataFrame({"question": ["q1", "q2", "q3"],
                        "answer": ["a <<1+1=2>>2 #### b #### 1,234", "x####7", "#### -3"]})
    canon = odd.select(plan.polars_exprs(odd.schema))
    python = [plan.convert(r) for r in odd.iter_rows(named=True)]
    assert canon["answer"].to_list() == [r["answer"] for r in python] == ["1234", "7", "-3"]
    assert canon["solution"].to_list() == [r["solution"] for r in python] == ["a 2 #### b", "x", None]
    texts = ["\\boxed{1}", "a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}", "none", "\\boxed{\\{1,\\{2\\}\\}}"]
    got = pl.Series(texts).to_frame("s").select(
        pl.col("s").str.extract_all(BOXED_PATTERN).list.last().str.extract(BOXED_PATTERN, 1))["s"].to_list()
    assert got == [last_boxed(t) for t in texts]


def test_answer_type_rules_match_between_python_and_polars():
    values = ["7", "-7", "+3", "1,000", "0.5", ".5", "3.", "1/2", "-\\dfrac{1}{2}", "\\frac{a}{b}", "x^2", "$5",
              "yes", "", "   ", None, "1 / 2", "2\\pi"]
    got = pl.DataFrame({"answer": values}, schema={"answer": pl.String}).select(answer_type_expr())
    assert got.to_series().to_list() == [answer_type(v) for v in values]


def test_malformed_line_raises_with_line_or_is_skipped(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [MIXED[0], '{"question": "oops", ', MIXED[1]])
    with pytest.raises(InputError) as exc:
        sw.profile(path)
    assert exc.value.line == 2 and exc.value.path == path
    rejects = tmp_path / "rej.jsonl"
    p = sw.profile(path, skip_bad=True, rejects=rejects).to_dict()
    assert p["rows"] == 2 and p["bad_rows"] == 1 and p["rejects"] == str(rejects)
    assert json.loads(rejects.read_text())["line"] == 2


def test_a_list_answer_among_strings_is_named_by_line(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [{"question": "a", "answer": "1"}, {"question": "b", "answer": ["2"]},
                                              {"question": "c", "answer": "[0, 1]"}])
    with pytest.raises(InputError) as exc:
        sw.profile(path)
    assert (exc.value.line, exc.value.column) == (2, "answer") and "got a list" in str(exc.value)
    p = sw.profile(path, skip_bad=True).to_dict()
    assert p["rows"] == 2 and p["bad_rows"] == 1  # the interval answer "[0, 1]" is not mistaken for a list


def test_list_typed_answer_column_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [{"question": "a", "answer": ["1"]}, {"question": "b", "answer": ["2"]}])
    with pytest.raises(InputError) as exc:
        sw.profile(path)
    assert exc.value.column == "answer" and "--answer-col" in str(exc.value)


def test_bom_non_utf8_and_empty(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(MIXED[0]).encode() + b"\n")
    assert sw.profile(str(bom)).to_dict()["rows"] == 1
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(MIXED[0]).encode() + b'\n{"question": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(InputError) as exc:
        sw.profile(str(latin))
    assert exc.value.line == 2 and "UTF-8" in str(exc.value)
    (tmp_path / "blank.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        sw.profile(str(tmp_path / "blank.jsonl"))


def test_csv_parquet_and_reasoning_gym_sources(tmp_path):
    (tmp_path / "t.csv").write_text("problem,final_answer\nP1,1\nP2,2.5\n")
    pl.DataFrame({"question": ["Q"], "answer": [3]}).write_parquet(tmp_path / "t.parquet")
    p = sw.profile(str(tmp_path / "t.csv"), str(tmp_path / "t.parquet"), "rg:basic_arithmetic?size=4&seed=1")
    d = p.to_dict()
    assert d["rows"] == 7
    assert d["tasks"] == {"math": 3, "rg:basic_arithmetic": 4}
    assert [c["engine"] for c in d["columns"]] == ["rows", "polars", "rows"]
    assert d["columns"][0]["answer"] == "final_answer"


def test_token_lengths_with_a_tokenizer(tmp_path):
    from stagewise.curate.models import build_char_tokenizer

    build_char_tokenizer().save_pretrained(tmp_path / "tok")
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "abcd", "answer": "1", "solution": "xy"},
                                              {"question": "abcdefgh", "answer": "2"}])
    lengths = sw.profile(path, tokenizer=str(tmp_path / "tok")).to_dict()["lengths"]
    # a character tokenizer: one token per character
    assert lengths["prompt_tokens"] == lengths["prompt_chars"]
    assert lengths["solution_tokens"]["count"] == 1 and lengths["solution_tokens"]["max"] == 2
    with pytest.raises(InputError, match="cannot load tokenizer"):
        sw.profile(path, tokenizer=str(tmp_path / "missing"))


def test_card_has_front_matter_tables_and_a_histogram(tmp_path):
    card = tmp_path / "cards" / "README.md"
    result = sw.profile("gsm8k:test", card=card)
    text = card.read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["size_categories"] == ["1K<n<10K"] and "stagewise" in front["tags"]
    assert "## Answer types" in text and "| integer | 1319 |" in text
    png = tmp_path / "cards" / "README_lengths.png"
    assert result.plots == [str(png)] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](README_lengths.png)" in text


# -- CLI (in-process) ----------------------------------------------------------------------------

def test_cli_profile_table_and_json():
    runner = CliRunner()
    out = runner.invoke(cli, ["profile", "gsm8k:test"])
    assert out.exit_code == 0, out.output
    assert "Profile: 1,319 rows" in out.output and "integer 1,319" in out.output
    out = runner.invoke(cli, ["profile", "gsm8k:test", "--json", "--samples", "1"])
    data = json.loads(out.output)
    assert data["rows"] == 1319 and len(data["samples"]) == 1


def test_cli_bad_input_is_one_paragraph_exit_1(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"question": "Q", "solution": "S"}])
    out = CliRunner().invoke(cli, ["profile", path, "--answer-col", "answer"])
    assert out.exit_code == 1
    assert "Traceback" not in out.output
    assert "column 'answer' not found" in out.output and "--answer-col" in out.output
    out = CliRunner().invoke(cli, ["profile", str(tmp_path / "nope.jsonl")])
    assert out.exit_code == 1 and "file not found" in out.output


def test_cli_skip_bad_reports_the_count(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [MIXED[0], "{broken", MIXED[1]])
    rejects = tmp_path / "rej.jsonl"
    out = CliRunner().invoke(cli, ["profile", path, "--skip-bad", "--rejects", str(rejects)])
    assert out.exit_code == 0, out.output
    assert f"Skipped 1 bad row; written to {rejects}." in out.output


def test_task_column_agrees_between_engines(tmp_path):
    rows = [{"question": "a", "answer": "1", "task": "exact"}, {"question": "b", "answer": "2", "task": "algebra"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    (tmp_path / "t.json").write_text(json.dumps(rows))
    assert sw.profile(path).to_dict()["tasks"] == sw.profile(str(tmp_path / "t.json")).to_dict()["tasks"] == {
        "exact": 1, "math": 1}


def test_progress_reports_rows_across_sources(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(profile_mod, "BLOCK_BYTES", 64 << 10)
    sw.profile("gsm8k:test", "gsm8k:train", progress=seen.append)
    assert seen == sorted(seen) and len(seen) > 2 and seen[-1] == 1319 + 500


def test_profile_counts_rows_overlapping_a_benchmark_in_json_and_card(tmp_path):
    card = tmp_path / "card.md"
    res = sw.profile("gsm8k:train", decontaminate=["gsm8k:test"], card=str(card))
    c = res.stats["contamination"]
    assert c["rows"] == 500 and c["contaminated"] == 5 and c["ngram"] == 8
    assert c["sources"]["gsm8k/train_head500"]["by_set"] == {"gsm8k/test": 5}
    assert "## Contamination" in card.read_text() and "5 of 500 rows" in card.read_text()
    assert sw.profile("gsm8k:train").stats["contamination"] is None
    with pytest.raises(InputError):
        sw.profile("gsm8k:train", decontaminate=["gsm8k:nope"])
