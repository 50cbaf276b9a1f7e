"""The export's dataset card: a Hugging Face README.md whose YAML `configs:` list the splits, so
`datasets.load_dataset(DIR, "rl")` works, plus provenance, the routing rule in words, counts, the
mastery histogram (PNG), pass rate by source, known limitations and the trainer command lines.

Rendering (front matter, atomic write, matplotlib) lives in curate/cards.py; this module decides
what an export's card says.
"""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.curate.cards import bar_png, histogram_png, markdown_table, size_category, write_card
from stagewise.curate.statistics import wilson_interval
from stagewise.stages.commands import card_markdown
from stagewise.stages.contract import ALL_SPLITS, SPLITS, VALIDATION_SPLITS

MASTERY_PNG = "mastery.png"
SOURCE_PNG = "pass_rate_by_source.png"
SPLIT_HELP = {
    "sft": "SFT items with a verified demonstration",
    "sft_val": "SFT items held out for validation (never in `sft.parquet`)",
    "rl": "RL items (prompt + gold answer)",
    "rl_val": "RL items held out for validation (never in `rl.parquet`)",
    "replay": "mastered items kept to measure forgetting (never RL)",
    "unrouted": "items that could not be routed, with the reason",
    "assignments": "every probed item: bucket, stage, reason, statistics",
}


def _config_files(name: str, splits: dict) -> dict[str, str]:
    """A config's `datasets` splits and their files: `train`, plus `validation` (sft_val.parquet beside
    sft.parquet) when the export holds one out."""
    files = {"train": f"{name}.parquet"}
    if splits.get(f"{name}_val"):
        files["validation"] = f"{name}_val.parquet"
    return files


def front_matter(manifest: dict) -> dict:
    """HF dataset-card metadata: one config per split, each a `train` split of one parquet file and, for
    sft and rl when the export holds items out, a `validation` split of sft_val / rl_val.parquet."""
    size = size_category(manifest["counts"]["items"])
    # `datasets` cannot read a 0-row parquet file, so an empty split has no file (the manifest says why
    # under `omitted`) and no `configs` entry.
    splits = manifest["counts"]["splits"]
    names = [name for name in ("assignments", *SPLITS) if name == "assignments" or splits.get(name)]
    configs = [{"config_name": name, "data_files": [{"split": split, "path": path}
                                                    for split, path in _config_files(name, splits).items()]}
               for name in names]
    configs[0]["default"] = True
    # `datasets` keys its cache on this metadata, not on the files' paths or contents: without per-export
    # sizes, two exports into folders of the same name (or a re-export with --overwrite) would load the
    # first one's cached rows.
    files = manifest.get("files") or {}
    infos = []
    for name in names:
        parts = [(split, files[path]) for split, path in _config_files(name, splits).items() if path in files]
        if parts:
            infos.append({"config_name": name, "download_size": sum(info["bytes"] for _, info in parts),
                          "splits": [{"name": split, "num_examples": info["rows"],
                                      "num_bytes": info.get("arrow_bytes", info["bytes"])}
                                     for split, info in parts]})
    return {"pretty_name": f"stagewise export ({manifest['format']}) of {_model(manifest)}",
            "tags": ["stagewise", "reasoning", "post-training", manifest["format"]],
            "task_categories": ["text-generation"], "size_categories": [size], "configs": configs,
            **({"dataset_info": infos} if infos else {})}


def _model(manifest: dict) -> str:
    model = manifest.get("model")
    if isinstance(model, dict):
        return str(model.get("name") or model.get("model") or "unknown model")
    return str(model or "unknown model")


def _model_path(manifest: dict) -> str:
    model = manifest.get("model")
    if isinstance(model, dict):
        return str(model.get("path") or model.get("name") or model.get("model") or "MODEL")
    return str(model or "MODEL")


def _model_refs(manifest: dict) -> tuple[str, str, str]:
    """How the card's commands name the model: (shell word, python setup line, python expression).

    A stagewise alias such as `smollm2-135m` is no hub id; trainers get the converted local copy."""
    path = _model_path(manifest)
    if "/" in path or path == "MODEL":
        return path, "", repr(path)
    resolve = f"from stagewise.curate.models import resolve_model; print(resolve_model({path!r}))"
    return (f'"$(python3 -c "{resolve}")"',
            (f"from stagewise.curate.models import resolve_model\nMODEL = resolve_model({path!r})  "
             "# stagewise's converted copy"), "MODEL")


def _table(header: list[str], rows: list[list]) -> str:
    return markdown_table(header, rows)


def _sampling(manifest: dict) -> dict:
    return dict(manifest["probe"].get("sampling") or {})


def limitations(assignments) -> str:
    """Known limitations, with numbers for this export's sample counts."""
    ns = sorted({int(n) for n in assignments["n"].to_list() if n}) or [0]
    n = ns[0]
    lines = []
    if n:
        lines.append(f"- **{0}/{n} correct does not mean never solvable**: at p = 0.1, P(0/{n}) = "
                     f"{0.9 ** n:.2f}; at p = 0.05, P(0/{n}) = {0.95 ** n:.2f}. Some `unmastered` items are "
                     "reachable by sampling; more samples (or `--adaptive`) move them to `partial`.")
        lines.append(f"- **{n}/{n} correct does not mean always solved**: at p = 0.9, P({n}/{n}) = "
                     f"{0.9 ** n:.2f}.")
        lo, hi = wilson_interval(n=n, c=n // 2)
        lines.append(f"- **p̂ is noisy at n = {n}**: an item at {n // 2}/{n} has a 95% Wilson interval of "
                     f"[{lo:.2f}, {hi:.2f}]. Thresholds on p̂ (band, relift) inherit this noise.")
    if len(ns) > 1:
        lines.append(f"- Items were probed a different number of times (n from {ns[0]} to {ns[-1]}, adaptive "
                     "probing or a resumed run); buckets use all of an item's samples.")
    lines += [
        ("- Routing is specific to the probed model, its sampling settings, chat template and prompt "
         "template (see Provenance). Another model, or RL with other settings, needs a new probe."),
        ("- Verifiers check the final answer only. A reference solution or teacher answer whose reasoning is "
         "flawed but whose final answer is right passes as a demonstration."),
        ("- Problems come from public benchmarks; check their licence and contamination before publishing "
         "a model trained on them."),
    ]
    return "\n".join(lines)


def _commands(manifest: dict, dirname: str = "DIR") -> str:
    """Trainer commands generated from this export's sizes and settings (stages/commands.py)."""
    model, py_setup, py_model = _model_refs(manifest)
    text = card_markdown(manifest, dirname, model=model, py_setup=py_setup, py_model=py_model)
    if manifest["format"] == "trl":
        text += ("\n\nOr with the bundled trainer: `stagewise train --data "
                 f"{dirname} --model {_model_path(manifest)} --out runs/{dirname}`.")
    return text


def _samples_per_item(probe: dict) -> str:
    adaptive = probe.get("adaptive")
    if isinstance(adaptive, dict):
        return (f"adaptive: at least {adaptive.get('min_samples')}, uniform items up to "
                f"{adaptive.get('k_max')}")
    return str(probe.get("num_samples") or probe.get("k_max") or "–")


def _prompting_rows(probe: dict) -> list[list]:
    """The system prompt and template as the probe resolved them per task family (what the model saw)."""
    resolved = probe.get("resolved") or {}
    if not resolved:
        return [["system prompt", f"`{probe.get('system_prompt')!r}`"],
                ["prompt template", f"`{probe.get('prompt_template')!r}`"]]
    rows = []
    for family, pair in sorted(resolved.items()):
        suffix = f" ({family} tasks)" if len(resolved) > 1 else ""
        rows.append([f"system prompt{suffix}", f"`{pair.get('system_prompt')!r}`"])
        rows.append([f"prompt template{suffix}", f"`{pair.get('prompt_template')!r}`"])
    return rows


def _contamination_note(counts: dict, route: dict) -> str:
    """A sentence on the items left out for overlapping a benchmark (empty when not decontaminated)."""
    check = route.get("decontaminate")
    if not check:
        return ""
    n, sets = counts.get("contaminated", 0), ", ".join(f"`{x['set']}`" for x in check["sets"])
    return (f"Decontaminated against {sets} ({check['ngram']}-gram overlap of normalised prompts): {n} "
            f"item{'s' if n != 1 else ''} left out, in `unrouted.parquet` with the reason.\n\n")


def _split_counts(counts: dict) -> str:
    return ", ".join(f"{s} {counts['splits'].get(s, 0)}" for s in ALL_SPLITS)


def _split_row(split: str, rows: int, omitted: dict) -> list:
    """One row of the card's split table; a validation file is its training config's `validation` split."""
    if split in SPLITS:
        empty = (" (empty: no file and no `configs` entry, since `datasets` and verl cannot read a 0-row "
                 "parquet file; `manifest.json` lists it under `omitted`)")
        return [f"`{split}`", rows, SPLIT_HELP[split] + ("" if rows else empty)]
    layout = VALIDATION_SPLITS[split]
    why = omitted.get(f"{split}.parquet", "0 rows").removeprefix("0 rows: ")
    return [f"`{layout}` split `validation` (`{split}.parquet`)", rows,
            SPLIT_HELP[split] + ("" if rows else f" (none: {why})")]


def _truncation_text(truncation: dict, mode: str | None) -> str:
    """The share of samples cut off at max_new_tokens per bucket, and what routing did with them."""
    if not any(t.get("truncated") for t in truncation.values()):
        return ""
    rows = [[b, t["samples"], t["truncated"], f"{t['rate']:.0%}"] for b, t in truncation.items()]
    what = ("excluded from n (`--truncated exclude`)" if mode == "exclude"
            else "counted as wrong (`--truncated wrong`, as RL's reward scores them)")
    return ("\n\nSamples cut off at `max_new_tokens` (finish = length), per bucket; they were " + what
            + ":\n\n" + _table(["bucket", "samples", "cut off", "rate"], rows))


def _replay_text(replay: dict, assignments) -> str:
    """Which SFT rows are replay rows, and how many were asked for."""
    ids = [r["id"] for r in assignments.iter_rows(named=True)
           if r["stage"] == "replay-sft" or "also replayed in SFT" in (r["reason"] or "")]
    shown = ", ".join(f"`{i}`" for i in ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
    return (f"{replay['taken']} rows of `sft.parquet` ({replay['achieved']:.0%}; asked for "
            f"{replay['fraction']:g}) replay verified demonstrations of items the model already solves "
            f"({', '.join(replay.get('from') or ['mastered'])}), so SFT keeps what it knows. They have "
            "`stage = replay-sft` and a reason, are never held-out items, and never the `replay` split that "
            f"measures forgetting. Items: {shown}.")


def write_export_card(out_dir, *, manifest: dict, assignments, name: str | None = None) -> Path:
    """Write README.md (+ mastery.png, pass_rate_by_source.png) into `out_dir`; return the README path.
    `name` is the folder name the commands in the card use (the export is built in a temporary folder)."""
    import polars as pl

    out_dir = Path(out_dir)
    name = name or out_dir.name
    p_hats = assignments["p_hat"].drop_nulls().to_numpy()  # an array: matplotlib reshapes a list item by item
    # One bar per possible value c/n (edges halfway between), so 0/n and n/n stand out.
    n_max = max(1, int(assignments["n"].max() or 1))
    edges = [(k - 0.5) / n_max for k in range(n_max + 2)]
    histogram_png(p_hats, out_dir / MASTERY_PNG, title=f"Mastery of {_model(manifest)} ({len(p_hats)} items)",
                  xlabel="p̂ = correct / samples", bins=edges)
    by_source = (assignments.with_columns(pl.col("source").fill_null("(unknown)"))
                 .group_by("source")
                 .agg(pl.len().alias("items"), pl.col("p_hat").mean().alias("mean_p_hat"),
                      (pl.col("bucket") == "unmastered").sum().alias("unmastered"),
                      (pl.col("bucket") == "partial").sum().alias("partial"),
                      (pl.col("bucket") == "mastered").sum().alias("mastered"))
                 .sort("source"))
    bar_png(by_source["source"].to_list(), [v or 0.0 for v in by_source["mean_p_hat"].to_list()],
            out_dir / SOURCE_PNG, title="Pass rate (mean p̂) by source", ylabel="mean p̂")

    counts, route = manifest["counts"], manifest["route"]
    probe = manifest["probe"]
    stages = [s for s in ("sft", "rl", "both", "replay", "replay-sft", "drop", "unrouted")
              if s != "replay-sft" or counts["stages"].get(s)]
    bucket_rows = [[b, *[row.get(s, 0) for s in stages], sum(row.values())]
                   for b, row in counts["buckets_by_stage"].items() if sum(row.values())]
    bucket_rows.append(["**total**", *[counts["stages"].get(s, 0) for s in stages], counts["items"]])
    omitted = manifest.get("omitted") or {}
    split_rows = [_split_row(s, counts["splits"].get(s, 0), omitted) for s in ALL_SPLITS]
    split_rows.append(["`assignments`", counts["items"], SPLIT_HELP["assignments"]])
    source_rows = [[r["source"], r["items"],
                    f"{r['mean_p_hat']:.3f}" if r["mean_p_hat"] is not None else "–",
                    r["unmastered"], r["partial"], r["mastered"]] for r in by_source.iter_rows(named=True)]
    thresholds = {k: v for k, v in route.items() if k not in ("policy", "rule") and v not in (None, 0)}
    demo = manifest["demonstrations"]
    demo_rows = [[name, rep.get("tried", 0), rep.get("verified", 0)] for name, rep in demo["report"].items()]
    sampling = _sampling(manifest)
    provenance = _table(["field", "value"], [
        ["model", f"`{_model(manifest)}`"],
        ["model identity", f"`{json.dumps(manifest.get('model'), default=str)}`"],
        ["probe run", f"`{manifest['run_id']}`"],
        ["samples per item", _samples_per_item(probe)],
        ["sampling", ", ".join(f"{k}={v}" for k, v in sampling.items()) or "–"],
        *_prompting_rows(probe),
        ["seed", probe.get("seed")],
        ["exported", f"{manifest['created_at']} by stagewise {manifest['versions'].get('stagewise')}"],
    ])
    warnings = "\n".join(f"- {w}" for w in manifest.get("warnings") or []) or "None."
    sections = [
        ("Summary", (f"{counts['items']} problems probed with `{_model(manifest)}`, routed with policy "
                     f"`{route['policy']}` and exported for **{manifest['format']}**. "
                     f"Splits: {_split_counts(counts)}.\n\n" + _contamination_note(counts, route) +
                     "```python\nfrom datasets import load_dataset\n"
                     f"rl = load_dataset(\"{name}\", \"rl\", split=\"train\")  # this folder\n```")),
        ("Splits", _table(["config", "rows", "what"], split_rows)),
        ("Routing rule", f"Policy **`{route['policy']}`**: {route['rule']}."
                         + (f"\n\nOptions: {', '.join(f'`{k}` = {v}' for k, v in thresholds.items())}."
                            if thresholds else "")
                         + "\n\nEvery item's bucket (c = 0 unmastered, 0 < c < n partial, c = n mastered), "
                           "stage and reason in words are in `assignments.parquet`."),
        ("Counts (buckets × stages)", _table(["bucket", *stages, "total"], bucket_rows)
         + f"\n\nWarnings:\n\n{warnings}"),
        ("Mastery", f"![mastery histogram]({MASTERY_PNG})\n\nDistribution of p̂ over all probed items."
         + _truncation_text(counts.get("truncation") or {}, route.get("truncated"))),
        ("Pass rate by source", _table(["source", "items", "mean p̂", "unmastered", "partial", "mastered"],
                                       source_rows) + f"\n\n![pass rate by source]({SOURCE_PNG})"),
        ("Demonstrations", "Every SFT target was accepted by the item's own verifier and ends with the "
                           "answer in the format the probe's prompt asked for. Sources, in order:\n\n"
         + _table(["source", "items tried", "verified"], demo_rows or [["–", 0, 0]])
         + "\n\nProvenance per row: `demo_source`, `demo_provenance`. SFT items without a verified "
           "demonstration are in `unrouted.parquet` with the reason."),
        *([("SFT replay", _replay_text(demo.get("sft_replay") or {}, assignments))]
          if (demo.get("sft_replay") or {}).get("taken") else []),
        ("Provenance", provenance + "\n\nThe full configuration, file hashes and library versions are in "
                                    "`manifest.json`; trainers read the sampling settings from there."),
        ("How to train", _commands(manifest, name)),
        ("Known limitations", limitations(assignments)),
    ]
    path = out_dir / "README.md"
    write_card(path, front_matter=front_matter(manifest),
               title=f"stagewise export: {_model(manifest)}, policy {route['policy']}", sections=sections)
    return path
