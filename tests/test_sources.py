"""Problem sources: every format, preset, column rule and bad input."""

from __future__ import annotations

import csv
import json
import os

import pytest
from stagewise.curate.errors import InputError
from stagewise.curate.presets import answer_type, last_boxed, parse_gsm8k
from stagewise.curate.schema import stable_id
from stagewise.curate.sources import load_problems, parse_spec


def write_jsonl(path, rows, *, bom=False):
    with open(path, "wb") as f:
        if bom:
            f.write(b"\xef\xbb\xbf")
        f.writelines((row if isinstance(row, str) else json.dumps(row)).encode("utf-8") + b"\n" for row in rows)
    return str(path)


ROWS = [
    {"question": "What is 2+2?", "answer": "4"},
    {"question": "What is 3*3?", "answer": "9"},
]


# -- shipped GSM8K and the gsm8k preset ---------------------------------------------------------

def test_shipped_gsm8k_test_has_1319_integer_answers():
    problems = load_problems("gsm8k:test")
    assert len(problems) == 1319
    assert all(answer_type(p.answer) == "integer" for p in problems)
    first = problems[0]
    assert first.answer == "18" and first.task == "gsm8k" and first.source == "gsm8k/test"
    assert "<<" not in first.solution and first.solution.startswith("Janet sells 16 - 3 - 4 = 9")
    assert problems.report["sources"][0]["columns"]["preset"] == "gsm8k"


def test_shipped_gsm8k_train_by_name_and_by_path(repo_data_dir):
    by_name = load_problems("gsm8k:train")
    by_path = load_problems(os.path.join(repo_data_dir, "gsm8k", "train_head500.jsonl"))
    assert len(by_name) == len(by_path) == 500
    assert [p.id for p in by_name] == [p.id for p in by_path]
    # the plain path was recognised as GSM8K from its '####' answers, and the report says so
    assert by_path.report["sources"][0]["columns"]["notes"] == ["preset gsm8k auto-detected"]


def test_gsm8k_thousands_separators_removed_and_calculator_annotations_stripped(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [
        {"question": "Big?", "answer": "He has 2,000+125=<<2000+125=2125>>2,125 coins.\n#### 2,125"}])
    (p,) = load_problems(f"gsm8k:{path}")
    assert p.answer == "2125"
    assert p.solution == "He has 2,000+125=2,125 coins."
    assert parse_gsm8k("no marker here") is None


def test_gsm8k_row_without_marker_names_line_column_and_fix(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "a", "answer": "x #### 1"},
                                              {"question": "b", "answer": "just 2"}])
    with pytest.raises(InputError) as exc:
        load_problems(f"gsm8k:{path}")
    err = exc.value
    assert (err.path, err.line, err.column) == (path, 2, "answer")
    assert "####" in str(err) and "--skip-bad" in str(err) and "--answer-col" in str(err)


# -- math preset ---------------------------------------------------------------------------------

def test_math_preset_takes_last_balanced_boxed(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"problem": "Half?", "solution": "First \\boxed{1}. Finally $\\boxed{\\frac{1}{2}}$."},
        {"problem": "Set?", "solution": "So \\boxed{\\{1, \\{2\\}\\}}", "answer": ""},
        {"problem": "Given", "solution": "\\boxed{7}", "answer": "8"},
    ])
    problems = load_problems(f"math:{path}")
    assert [p.answer for p in problems] == ["\\frac{1}{2}", "\\{1, \\{2\\}\\}", "8"]
    assert all(p.task == "math" for p in problems)
    assert last_boxed("\\boxed{a{b{c{d{e}}}}} and \\boxed{x{y}}") == "x{y}"
    assert last_boxed("no box") is None


def test_math_row_without_boxed_is_an_error_naming_the_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "p", "solution": "\\boxed{1}"},
                                              {"problem": "q", "solution": "no answer"}])
    with pytest.raises(InputError) as exc:
        load_problems(f"math:{path}")
    assert exc.value.line == 2 and "boxed" in str(exc.value)


# -- formats and directories ----------------------------------------------------------------------

def test_every_file_format_and_a_directory(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "mixed"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [ROWS[0]])
    (d / "b.json").write_text(json.dumps({"data": [{"question": "Q b", "answer": "2"}]}))
    pq.write_table(pa.Table.from_pylist([{"question": "Q c", "answer": 3}]), d / "c.parquet")
    with open(d / "d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        w.writerow(["Q d, with a comma", "4"])
    (d / "notes.txt").write_text("ignored: not a data file")
    problems = load_problems(str(d))
    assert [p.prompt for p in problems] == ["What is 2+2?", "Q b", "Q c", "Q d, with a comma"]
    assert [p.answer for p in problems] == ["4", "2", "3", "4"]
    assert [p.source for p in problems] == ["mixed/a", "mixed/b", "mixed/c", "mixed/d"]


def test_json_list_and_csv_with_bom(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(ROWS))
    assert len(load_problems(str(tmp_path / "l.json"))) == 2
    with open(tmp_path / "b.csv", "w", encoding="utf-8-sig", newline="") as f:
        f.write("question,answer\nQ,1\n")
    (p,) = load_problems(str(tmp_path / "b.csv"))
    assert (p.prompt, p.answer) == ("Q", "1")


def test_utf8_bom_jsonl_is_accepted(tmp_path):
    path = write_jsonl(tmp_path / "bom.jsonl", ROWS, bom=True)
    assert [p.prompt for p in load_problems(path)] == ["What is 2+2?", "What is 3*3?"]


def test_hf_save_to_disk_dataset_and_dict(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert len(load_problems(str(tmp_path / "ds"))) == 2
    # inside a directory of sources it is one source, not a pile of metadata .json files
    outer = tmp_path / "outer"
    datasets.Dataset.from_list(ROWS[:1]).save_to_disk(str(outer / "inner"))
    write_jsonl(outer / "more.jsonl", ROWS[1:])
    assert [p.source for p in load_problems(str(outer))] == ["outer/inner", "outer/more"]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                               "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    test = load_problems(str(tmp_path / "dd") + "@test")
    assert len(test) == 1 and test[0].source.endswith("@test")
    with pytest.raises(InputError, match=r"several splits \(train, test\).*@SPLIT"):
        load_problems(str(tmp_path / "dd"))


def test_hf_spec_loads_a_local_dataset_folder(tmp_path):
    d = tmp_path / "local_hf"
    d.mkdir()
    write_jsonl(d / "train.jsonl", ROWS)
    write_jsonl(d / "test.jsonl", ROWS[:1])
    problems = load_problems(f"hf:{d}@test")
    assert len(problems) == 1 and problems[0].source == f"{d}@test"
    spec = parse_spec("hf:openai/gsm8k:main@test")
    assert (spec.kind, spec.target, spec.config, spec.split) == ("hf", "openai/gsm8k", "main", "test")


# -- reasoning-gym -------------------------------------------------------------------------------

def test_reasoning_gym_entries_keep_what_score_answer_needs():
    import reasoning_gym

    problems = load_problems("rg:gsm_symbolic?size=3&seed=2")
    assert len(problems) == 3
    p = problems[0]
    assert p.task == "rg:gsm_symbolic" and p.source == "rg:gsm_symbolic"
    entry = p.meta_dict["rg_entry"]
    assert entry["question"] == p.prompt and p.solution == entry["metadata"]["answer_cot"]
    ds = reasoning_gym.create_dataset("gsm_symbolic", size=3, seed=2)
    assert ds.score_answer(p.answer, entry) == 1.0  # the entry survives the JSON round trip


def test_reasoning_gym_config_knobs_are_passed():
    problems = load_problems("rg:basic_arithmetic?size=5&seed=1&min_terms=2&max_terms=2")
    assert len(problems) == 5
    assert all(p.meta_dict["rg_entry"]["metadata"]["num_terms"] == 2 for p in problems)


def test_unknown_reasoning_gym_name_lists_close_matches():
    with pytest.raises(InputError, match="did you mean: basic_arithmetic"):
        load_problems("rg:basic_arithmatic?size=3")


def test_bad_reasoning_gym_knob_lists_valid_knobs():
    with pytest.raises(InputError, match="valid knobs: .*min_terms"):
        load_problems("rg:basic_arithmetic?size=3&no_such_knob=1")


# -- columns, ids, duplicates --------------------------------------------------------------------

def test_auto_detected_columns_are_reported(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"uid": "a1", "problem": "P?", "target": "5", "rationale": "why",
                                               "difficulty": 3}])
    problems = load_problems(path)
    (p,) = problems
    assert (p.id, p.prompt, p.answer, p.solution) == ("a1", "P?", "5", "why")
    assert p.meta_dict == {"difficulty": 3}
    cols = problems.report["sources"][0]["columns"]
    assert (cols["prompt"], cols["answer"], cols["solution"], cols["id"]) == ("problem", "target", "rationale", "uid")


def test_explicit_column_flags_win(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"q": "Q?", "question": "other", "gold": "7", "key": "k"}])
    (p,) = load_problems(path, prompt_col="q", answer_col="gold", id_col="key", task="exact")
    assert (p.prompt, p.answer, p.id, p.task) == ("Q?", "7", "k", "exact")


def test_misnamed_column_lists_columns_and_flag(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"question": "Q", "solution": "S"}])
    with pytest.raises(InputError) as exc:
        load_problems(path, answer_col="answer")
    msg = str(exc.value)
    assert "column 'answer' not found" in msg and "question, solution" in msg and "--answer-col" in msg
    path2 = write_jsonl(tmp_path / "noprompt.jsonl", [{"text_a": "Q", "answer": "1"}])
    with pytest.raises(InputError, match=r"no prompt column.*text_a.*--prompt-col"):
        load_problems(path2)


def test_ids_are_stable_hashes_and_duplicates_are_counted_and_dropped(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"question": "What is 2+2?", "answer": "4"},
        {"question": "What is 2+2?", "answer": "4"},           # exact duplicate
        {"question": "  what IS   2+2? ", "answer": "4"},      # duplicate after normalising
        {"question": "Other", "answer": "1"},
    ])
    problems = load_problems(path)
    assert len(problems) == 2
    assert problems[0].id == stable_id("What is 2+2?", "4")
    assert problems.report["duplicates"] == 2 and problems.report["exact_duplicates"] == 1
    assert "2 duplicate prompts dropped" in problems.summary()
    kept = load_problems(path, dedupe=False)
    assert len(kept) == 4 and kept.report["duplicates"] == 2
    assert len({p.id for p in kept}) == 4  # repeated hash ids are made unique, and counted
    assert kept.report["ids_renamed"] == 2


def test_limit_and_several_specs(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS)
    problems = load_problems(a, "gsm8k:test", limit=5)
    assert len(problems) == 5
    assert [p.source for p in problems][:3] == ["test_limit_and_several_specs0/a"] * 2 + ["gsm8k/test"]


# -- bad input -----------------------------------------------------------------------------------

def test_missing_file_names_the_path_and_the_fix(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(InputError) as exc:
        load_problems(str(tmp_path / "trian.jsonl"))
    assert "file not found" in str(exc.value) and "did you mean: train.jsonl" in str(exc.value)


def test_unknown_format_and_unknown_prefix(tmp_path):
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(InputError, match=r"unknown format '\.txt'.*supported"):
        load_problems(str(tmp_path / "data.txt"))
    with pytest.raises(InputError, match=r"unknown source prefix 'hub:'"):
        load_problems("hub:openai/gsm8k")


def test_malformed_json_line_stops_with_line_or_is_skipped_and_rejected(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], '{"question": "b", answer": "2"}', ROWS[1]])
    with pytest.raises(InputError) as exc:
        load_problems(path)
    assert exc.value.line == 2 and "malformed JSON" in str(exc.value) and "--skip-bad" in str(exc.value)
    rejects = tmp_path / "rejects.jsonl"
    problems = load_problems(path, skip_bad=True, rejects=rejects)
    assert len(problems) == 2 and problems.report["bad_rows"] == 1
    assert problems.report["bad_by_reason"] == {"malformed": 1}
    (rej,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert rej["line"] == 2 and rej["raw"] == '{"question": "b", answer": "2"}'
    assert "1 bad rows skipped" in problems.summary()


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "a", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(InputError) as exc:
        load_problems(str(path))
    assert exc.value.line == 2 and "not UTF-8" in str(exc.value) and "iconv" in str(exc.value)
    problems = load_problems(str(path), skip_bad=True)
    assert len(problems) == 1 and problems.report["bad_by_reason"] == {"encoding": 1}


def test_null_and_list_answers_are_bad_rows(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [ROWS[0], {"question": "b", "answer": None},
                                              {"question": "c", "answer": ["1", "2"]}])
    with pytest.raises(InputError) as exc:
        load_problems(path)
    assert (exc.value.line, exc.value.column) == (2, "answer") and "null answer" in str(exc.value)
    lists = write_jsonl(tmp_path / "l.jsonl", [ROWS[0], {"question": "c", "answer": ["1", "2"]}])
    with pytest.raises(InputError) as exc:
        load_problems(lists)
    assert exc.value.line == 2 and "got a list" in str(exc.value)
    problems = load_problems(path, skip_bad=True)
    assert len(problems) == 1 and problems.report["bad_by_reason"] == {"missing": 1, "type": 1}


def test_empty_dataset(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_problems(str(tmp_path / "empty.jsonl"))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        load_problems(str(tmp_path / "blank.jsonl"))
    all_bad = write_jsonl(tmp_path / "allbad.jsonl", ["{nope", "{nope"])
    with pytest.raises(InputError, match=r"empty: no usable problems \(read 2 rows, 2 bad\)"):
        load_problems(all_bad, skip_bad=True)


def test_reasoning_gym_entries_saved_to_a_file_are_recognised(tmp_path):
    import reasoning_gym

    ds = reasoning_gym.create_dataset("basic_arithmetic", size=3, seed=4)
    path = write_jsonl(tmp_path / "rg.jsonl", [dict(ds[i]) for i in range(3)])
    for spec in (path, f"reasoning-gym:{path}"):
        problems = load_problems(spec)
        assert [p.task for p in problems] == ["rg:basic_arithmetic"] * 3
        assert ds.score_answer(problems[0].answer, problems[0].meta_dict["rg_entry"]) == 1.0


def test_math_format_is_auto_detected(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "Half?", "solution": "So \\boxed{\\frac12}."}])
    problems = load_problems(path)
    assert problems[0].answer == "\\frac12" and problems[0].task == "math"
    assert problems.report["sources"][0]["columns"]["preset"] == "math"


def test_a_task_column_is_used_only_when_it_names_a_verifier(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "a", "answer": "1", "task": "exact"},
                                              {"question": "b", "answer": "2", "task": "algebra"},
                                              {"question": "c", "answer": "3", "task": "rg:basic_arithmetic"}])
    problems = load_problems(path)
    assert [p.task for p in problems] == ["exact", "math", "rg:basic_arithmetic"]
    assert problems[1].meta_dict == {"task": "algebra"}  # a category, kept
    assert [p.task for p in load_problems(path, task="exact")] == ["exact"] * 3


def test_reasoning_gym_arithmetic_gets_a_worked_solution_from_its_expression():
    from stagewise.curate.verifiers import score

    problems = load_problems("rg:basic_arithmetic?size=3&seed=2&min_terms=2&max_terms=3")
    for p in problems:
        expression = p.meta_dict["rg_entry"]["metadata"]["expression"] if isinstance(p.meta, str) else None
        assert p.solution == f"{expression} = {p.answer}"
        # The demonstration the exporter will build from it is accepted by the item's own verifier.
        assert score(f"{p.solution}\n<answer>{p.answer}</answer>", p).status == "correct"
