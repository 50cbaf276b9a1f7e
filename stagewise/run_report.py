"""The run report: one list of blocks rendered twice, as report.md (images beside it) and as a
self-contained report.html (images inlined as base64, no JavaScript), so the two never disagree.

The page is written for a person: a summary computed from the run's numbers first, then the probe,
the routing with every routed item's samples in a `<details>` block per item, training, evaluation,
the dataset profile, and the whole config last. Every sentence is built from this run's numbers; no
path of the machine appears (run files are named relative to the run directory, other paths by name).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.errors import ConfigError, InputError, StagewiseError
from stagewise.curate.models import cache_dir
from stagewise.curate.store import SAMPLE_COLUMNS, ProbeStore
from stagewise.train.stage_eval import StageEval, display_table, pass_at_1_by_checkpoint, read_metrics, show_value

BUCKET_ORDER = ("unmastered", "partial", "mastered")
STATUS_ORDER = ("correct", "wrong", "no_answer", "timeout", "error")
STAGE_WORDS = {"sft": "SFT", "rl": "RL", "both": "SFT and RL", "replay": "the replay split", "drop": "dropped",
               "unrouted": "unrouted (no verified demonstration)"}
# Items per bucket shown with their samples; the rest are counted, and all are in the run's files.
MAX_ITEMS_PER_BUCKET = 60

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:62em;margin:2em auto;
 padding:0 1em;line-height:1.45;color:#1d1d1f}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d0d0d0;padding:3px 9px;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.6em 0}
pre{background:#f6f6f6;padding:.7em;overflow:auto;white-space:pre-wrap;word-break:break-word}
code{background:#f1f1f1;padding:0 .2em;border-radius:3px}
details{border:1px solid #ddd;border-radius:4px;margin:.3em 0;padding:.2em .6em}
details[open]{background:#fcfcfc}summary{cursor:pointer}
.verdict-correct{color:#11772d;font-weight:600}.verdict-wrong{color:#b3261e;font-weight:600}
.verdict-no_answer,.verdict-timeout,.verdict-error{color:#8a5a00;font-weight:600}
.lead{font-size:1.05em}
"""


# --------------------------------------------------------------------------- blocks and rendering


@dataclass
class Report:
    """Blocks: ("h2"|"h3", text), ("p", markdown), ("table", (columns, rows)), ("img", (path, alt)),
    ("code", text), ("details", (summary text, [blocks])). `scrub` is applied to every text rendered."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)
    scrub: object = None

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", text))

    def text(self, markdown: str) -> None:
        self.blocks.append(("p", markdown))

    def table(self, rows: list[dict], columns: list[str] | None = None) -> None:
        if rows:
            self.blocks.append(("table", (columns or list(rows[0]), rows)))
        else:
            self.blocks.append(("p", "_(no rows)_"))

    def image(self, path: str | os.PathLike, alt: str) -> None:
        if Path(path).exists():
            self.blocks.append(("img", (str(path), alt)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def details(self, summary: str, blocks: list[tuple[str, object]]) -> None:
        self.blocks.append(("details", (summary, blocks)))

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        out = Path(out_dir)
        md, htm = out / "report.md", out / "report.html"
        write_text_atomic(md, self.markdown(out))
        write_text_atomic(htm, self.html())
        return md, htm

    def _s(self, text) -> str:
        text = "" if text is None else str(text)
        return self.scrub(text) if self.scrub else text

    # Markdown ------------------------------------------------------------------------------------
    def markdown(self, out: Path) -> str:
        return "\n".join([f"# {self._s(self.title)}\n", *self._md_blocks(self.blocks, out)])

    def _md_blocks(self, blocks, out: Path) -> list[str]:
        parts = []
        for kind, value in blocks:
            if kind in ("h2", "h3"):
                parts.append("#" * int(kind[1]) + f" {self._s(value)}\n")
            elif kind == "p":
                parts.append(f"{self._s(value)}\n")
            elif kind == "code":
                text = self._s(value).rstrip()
                fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
                parts.append(f"{fence}\n{text}\n{fence}\n")
            elif kind == "table":
                cols, rows = value
                lines = ["| " + " | ".join(self._md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
                lines += ["| " + " | ".join(self._md_cell(r.get(c)) for c in cols) + " |" for r in rows]
                parts.append("\n".join(lines) + "\n")
            elif kind == "img":
                path, alt = value
                parts.append(f"![{alt}]({Path(os.path.relpath(path, out)).as_posix()})\n")
            elif kind == "details":
                summary, inner = value
                plain = self._s(summary).replace("`", "")  # GitHub shows <summary> text as is
                parts.append(f"<details><summary>{html.escape(plain)}</summary>\n")
                parts += self._md_blocks(inner, out)
                parts.append("</details>\n")
        return parts

    def _md_cell(self, value) -> str:
        return self._s(_fmt(value)).replace("|", "\\|").replace("\n", " ")

    # HTML ----------------------------------------------------------------------------------------
    def html(self) -> str:
        body = [f"<h1>{html.escape(self._s(self.title))}</h1>", *self._html_blocks(self.blocks)]
        return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(self._s(self.title))}</title><style>{_STYLE}</style></head>"
                f"<body>{''.join(body)}</body></html>")

    def _html_blocks(self, blocks) -> list[str]:
        out = []
        for kind, value in blocks:
            if kind in ("h2", "h3"):
                out.append(f"<{kind} id='{_anchor(value)}'>{html.escape(self._s(value))}</{kind}>")
            elif kind == "p":
                out.append(_markdown_html(self._s(value)))
            elif kind == "code":
                out.append(f"<pre>{html.escape(self._s(value))}</pre>")
            elif kind == "table":
                cols, rows = value
                head = "".join(f"<th>{html.escape(self._s(c))}</th>" for c in cols)
                trs = "".join("<tr>" + "".join(self._td(r.get(c)) for c in cols) + "</tr>" for r in rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                path, alt = value
                data = base64.b64encode(Path(path).read_bytes()).decode()
                out.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
            elif kind == "details":
                summary, inner = value
                out.append(f"<details><summary>{_markdown_html(self._s(summary), inline=True)}</summary>"
                           + "".join(self._html_blocks(inner)) + "</details>")
        return out

    def _td(self, value) -> str:
        num = isinstance(value, (int, float)) and not isinstance(value, bool)
        text = html.escape(self._s(_fmt(value)))
        if isinstance(value, str) and value in STATUS_ORDER:
            text = f"<span class='verdict-{value}'>{text}</span>"
        return f"<td class='num'>{text}</td>" if num else f"<td>{text}</td>"


def _markdown_html(text: str, inline: bool = False) -> str:
    """CommonMark to HTML with raw HTML escaped (model output and file names pass through here)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False})
    return md.renderInline(text) if inline else md.render(text)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def _fmt(value) -> str:
    return show_value(value, missing="–")


def _plain(value) -> str:
    """A value of a two-column field/value table as text (left-aligned like its label)."""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return _fmt(value)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _ci(lo, hi) -> str:
    return f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "–"


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# --------------------------------------------------------------------------- paths


def path_scrubber(run_dir: Path, cfg: dict):
    """A function that rewrites every absolute path of this machine in a text: files of the run become
    relative to the run directory, a model given as a local directory becomes its folder name, the
    stagewise and Hugging Face caches and the home directory become placeholders."""
    replacements: list[tuple[str, str]] = []
    run_abs = Path(run_dir).resolve()
    for prefix in {str(run_abs), os.path.abspath(run_dir), str(run_dir)}:
        if prefix not in ("", "."):
            replacements += [(prefix + "/", ""), (prefix, ".")]
    model = str(cfg.get("model") or "")
    if os.path.isabs(model):
        replacements.append((model.rstrip("/"), Path(model).name))
        replacements.append((str(Path(model).resolve()), Path(model).name))
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    for prefix, name in ((str(cache_dir()), "<stagewise cache>"), (hf_home, "<hf cache>"),
                         (os.path.expanduser("~"), "~")):
        if prefix and prefix not in ("/", "~"):
            replacements.append((prefix, name))
            replacements.append((str(Path(prefix).resolve()), name))
    # Longest first, so a run directory inside the home directory becomes relative, not "~/...".
    replacements.sort(key=lambda kv: -len(kv[0]))

    def scrub(text: str) -> str:
        for old, new in replacements:
            if old in text:
                text = text.replace(old, new)
        return text

    return scrub


# --------------------------------------------------------------------------- the report


def write_run_report(run_dir, cfg: dict, *, profile: dict, probed: dict, exported: dict, trained: dict,
                     notes: list[str], seconds: dict, summary: dict | None = None) -> Path:
    """report.md + report.html of a `stagewise run` directory; returns the Markdown path. `summary` is
    the run's summary.json (end_to_end.run_summary); the page's summary shows the same numbers."""
    run_dir = Path(run_dir)
    summary = dict(summary or {})
    if not summary.get("wall_seconds") and seconds:
        summary["wall_seconds"] = {**seconds, "total": sum(seconds.values())}
    trained = trained or {}
    scrub = path_scrubber(run_dir, cfg)
    model = scrub(str(cfg["model"]))
    rep = Report(f"stagewise run: {model}", scrub=scrub)
    assignments = _read_assignments(run_dir / "export" / "assignments.parquet")
    manifest = _read_json(run_dir / "export" / "manifest.json")
    probe_summary = (probed or {}).get("summary") or {}

    _intro(rep, cfg, model, probe_summary, summary)
    _summary_section(rep, summary, assignments, trained, notes)
    _probe_section(rep, run_dir, probe_summary, manifest)
    _routing_section(rep, run_dir, assignments, manifest)
    _items_section(rep, run_dir, assignments, (probed or {}).get("run_id"))
    _training_section(rep, run_dir, trained)
    _evaluation_section(rep, trained)
    _profile_section(rep, run_dir, profile or {})
    _config_section(rep, cfg)
    md, _ = rep.write(run_dir)
    return md


def _intro(rep: Report, cfg: dict, model: str, probe_summary: dict, summary: dict) -> None:
    data = cfg.get("data") or {}
    heldout = (summary.get("heldout") or {}).get("items")
    wall = (summary.get("wall_seconds") or {}).get("total")
    parts = [(f"{probe_summary.get('items', '?')} candidate items from {len(data.get('sources') or [])} "
              f"source(s) were probed with `{model}`, {probe_summary.get('k', '?')} samples each, routed by "
              "mastery and trained on")]
    if heldout:
        parts.append(f"; {heldout} held-out items, disjoint from the pool, were evaluated before and after")
    text = "".join(parts) + "."
    if wall is not None:
        text += f" The run took {_seconds(wall)} of wall time."
    rep.text(text + " Every number on this page comes from this run; file names are relative to the run "
                    "directory.")


def _summary_section(rep: Report, summary: dict, assignments, trained: dict, notes: list[str]) -> None:
    rep.heading("Summary")
    # Buckets and where they went.
    if assignments is not None:
        rows = []
        total = assignments.height
        for bucket in _buckets_present(assignments):
            sub = assignments.filter(assignments["bucket"] == bucket)
            stages = sub["stage"].value_counts().sort("stage").rows()
            rows.append({"bucket": bucket, "items": sub.height, "share": _pct(sub.height, total),
                         "went to": ", ".join(f"{STAGE_WORDS.get(s, s)} {n}" for s, n in stages)})
        rep.text("**Buckets.** Each item's mastery p̂ = correct / samples decides its bucket: 0 is "
                 "unmastered, 1 is mastered, anything between is partial.")
        rep.table(rows, ["bucket", "items", "share", "went to"])
    for note in notes:
        rep.text(f"**Note:** {note}.")

    held = summary.get("heldout") or {}
    before, after, gain = held.get("before") or {}, held.get("after") or {}, held.get("gain") or {}
    if before.get("pass@1") is not None and after.get("pass@1") is not None:
        rep.text(f"**Held-out pass@1** over {held.get('items')} items: {before['pass@1']:.3f} "
                 f"{_ci(before.get('ci_low'), before.get('ci_high'))} before training, {after['pass@1']:.3f} "
                 f"{_ci(after.get('ci_low'), after.get('ci_high'))} {after.get('checkpoint', 'after')}.")
        if gain.get("mean") is not None:
            rep.text(_gain_sentence(gain))
    elif held:
        rep.text("**Held-out pass@1:** not measured at both ends of this run (evaluation disabled or a "
                 "stage skipped).")
    else:
        rep.text("**Held-out pass@1:** no held-out set in this run (`data.eval_sources` is empty).")

    split_rows, sentence = _status_split(before.get("statuses"), after.get("statuses"),
                                         after.get("checkpoint", "after"))
    if split_rows:
        rep.text("**Verifier statuses on the held-out samples**, before and after: format learning "
                 "turns `no_answer` into `wrong` or `correct`; answer learning turns `wrong` into `correct`. "
                 + sentence)
        rep.table(split_rows, ["status", "before", f"{after.get('checkpoint', 'after')}"])

    moved = _moves(trained)
    if moved:
        rep.text("**What moved** on the exported items (pass@1 per bucket at each checkpoint): "
                 + moved[0] + ("" if len(moved) == 1 else " " + " ".join(moved[1:])))
    if trained.get("moved"):
        rep.text(f"The re-probe after SFT found {len(trained['moved'])} item(s) now in the RL band and moved "
                 "them into RL.")

    wall = summary.get("wall_seconds") or {}
    if wall:
        total = wall.get("total") or sum(v for k, v in wall.items() if k != "total")
        rows = [{"stage": k, "seconds": f"{v:.1f}", "share": _pct(v, total)} for k, v in wall.items() if k != "total"]
        rows.append({"stage": "total", "seconds": f"{total:.1f}", "share": "100%"})
        slowest = max((r for r in rows if r["stage"] != "total"), key=lambda r: float(r["seconds"]))
        rep.text(f"**Wall time:** {_seconds(total)} in all; the {slowest['stage']} stage took the most "
                 f"({slowest['share']}).")
        rep.table(rows, ["stage", "seconds", "share"])


def _gain_sentence(gain: dict) -> str:
    mean, lo, hi = gain["mean"], gain.get("ci_low"), gain.get("ci_high")
    level = f"{100 * gain.get('level', 0.95):.0f}%"
    head = (f"**Paired change:** {_signed(mean)} pass@1 per item over {gain.get('n_items')} items "
            f"({gain.get('method', 'paired interval')})")
    if lo is None or hi is None:
        return head + "; too few items for an interval."
    head += f", {level} interval [{_signed(lo)}, {_signed(hi)}]"
    if lo > 0:
        return head + ": the interval lies above zero, so training raised held-out pass@1 in this run."
    if hi < 0:
        return head + ": the interval lies below zero, so training lowered held-out pass@1 in this run."
    return head + ": the interval includes zero, so this run shows no change it can tell apart from noise."


def _status_split(before: dict | None, after: dict | None, label: str) -> tuple[list[dict], str]:
    if not before and not after:
        return [], ""
    before, after = before or {}, after or {}
    names = [*STATUS_ORDER, *sorted((set(before) | set(after)) - set(STATUS_ORDER))]
    tb, ta = sum(before.values()), sum(after.values())
    rows = [{"status": s, "before": f"{before.get(s, 0)} ({_pct(before.get(s, 0), tb)})",
             label: f"{after.get(s, 0)} ({_pct(after.get(s, 0), ta)})"} for s in names]
    changes = []
    for s in ("no_answer", "wrong", "correct"):
        b, a = before.get(s, 0) / tb if tb else 0, after.get(s, 0) / ta if ta else 0
        if abs(a - b) >= 0.005:
            changes.append(f"`{s}` {'rose' if a > b else 'fell'} from {_pct(b, 1)} to {_pct(a, 1)} of samples")
        else:
            changes.append(f"`{s}` stayed at {_pct(a, 1)}")
    return rows, "In this run " + "; ".join(changes) + "."


def _evaluations(trained: dict) -> list:
    return [StageEval.from_dict(e) for e in trained.get("evaluation") or []]


def _moves(trained: dict) -> list[str]:
    """Sentences on the exported items' pass@1 per bucket across checkpoints, largest move first."""
    out = []
    for rec in pass_at_1_by_checkpoint(_evaluations(trained)):
        if rec["set"] == "heldout" or rec["group"] not in BUCKET_ORDER:
            continue
        points = [(name, r.value) for name, r in rec["by_checkpoint"].items() if r.value is not None]
        if len(points) < 2:
            continue
        first, last = points[0][1], points[-1][1]
        path = " → ".join(f"{v:.3f} ({name})" for name, v in points)
        verb = "rose" if last > first + 1e-9 else "fell" if last < first - 1e-9 else "did not move"
        out.append((abs(last - first), f"{rec['group']} items ({rec['n_items']}) {verb}: {path}."))
    out.sort(key=lambda x: -x[0])
    return [s for _, s in out]


def _probe_section(rep: Report, run_dir: Path, ps: dict, manifest: dict | None) -> None:
    rep.heading("Probe")
    if not ps:
        rep.text("_(no probe summary)_")
        return
    rows = [("model", ps.get("model")), ("backend", ps.get("backend")), ("samples per item", ps.get("k")),
            ("adaptive sampling", "yes" if ps.get("adaptive") else "no"), ("items", ps.get("items")),
            ("samples", ps.get("samples")), ("generated tokens", ps.get("tokens")),
            ("mean pass@1", ps.get("mean_pass_at_1")), ("probe time (s)", ps.get("seconds")),
            ("throughput (tokens/s)", ps.get("tokens_per_s")),
            ("samples resumed from the store", ps.get("samples_resumed")),
            ("duplicate items ignored", ps.get("ignored_duplicates")), ("probe run id", ps.get("run_id")),
            ("store", ps.get("store"))]
    rep.table([{"field": k, "value": _plain(v)} for k, v in rows if v is not None], ["field", "value"])
    prompting = _prompting(manifest)
    if prompting:
        rep.text("The prompt each item was sampled with (the item's question replaces `{prompt}`):")
        rep.code(prompting)

    statuses = ps.get("statuses") or {}
    total = sum(statuses.values())
    if total:
        rep.heading("Verifier statuses", 3)
        rows = [{"status": s, "samples": statuses.get(s, 0), "share": _pct(statuses.get(s, 0), total)}
                for s in (*STATUS_ORDER, *sorted(set(statuses) - set(STATUS_ORDER)))]
        finish = ps.get("finish_reasons") or {}
        length = finish.get("length", 0)
        unverified = statuses.get("timeout", 0) + statuses.get("error", 0)
        rep.text(f"Of {total} probe samples, {statuses.get('correct', 0)} are correct, "
                 f"{statuses.get('wrong', 0)} wrong and {statuses.get('no_answer', 0)} have no answer the "
                 f"verifier could extract ({_pct(statuses.get('no_answer', 0), total)}); "
                 f"{unverified} timed out or failed in the verifier and count as evidence of nothing. "
                 f"{length} sample(s) ({_pct(length, total)}) stopped at the token limit.")
        rep.table(rows, ["status", "samples", "share"])
        if finish:
            rep.table([{"finish reason": k, "samples": v, "share": _pct(v, total)} for k, v in finish.items()],
                      ["finish reason", "samples", "share"])
        truncation = ps.get("truncation_by_bucket") or {}
        if any(t.get("truncated") for t in truncation.values()):
            rep.text("Samples cut off at the token limit, per bucket (routing warns above 20%: the budget, not "
                     "the skill, then shapes the bucket; `--truncated exclude` takes them out of n):")
            rep.table([{"bucket": b, "samples": t["samples"], "cut off": t["truncated"], "rate": _pct(t["truncated"],
                                                                                                  t["samples"])}
                       for b, t in truncation.items()], ["bucket", "samples", "cut off", "rate"])
        reasons = ps.get("failure_reasons") or {}
        if reasons:
            rep.table([{"verifier failure": k, "samples": v} for k, v in reasons.items()])


def _prompting(manifest: dict | None) -> str | None:
    probe = (manifest or {}).get("probe") or {}
    template, system = probe.get("prompt_template"), probe.get("system_prompt")
    for resolved in (probe.get("resolved") or {}).values():
        template = template or resolved.get("prompt_template")
        system = system or resolved.get("system_prompt")
    if not template and not system:
        return None
    return (f"[system]\n{system}\n\n" if system else "") + f"[user]\n{template or '{prompt}'}"


def _routing_section(rep: Report, run_dir: Path, assignments, manifest: dict | None) -> None:
    rep.heading("Routing")
    route = (manifest or {}).get("route") or {}
    if route.get("policy"):
        rep.text(f"Policy `{route['policy']}`: {route.get('rule', '')}.")
    export_dir = run_dir / "export"
    rep.image(export_dir / "mastery.png", "mastery histogram")
    rep.image(export_dir / "pass_rate_by_source.png", "pass rate by source")
    if assignments is None:
        rep.text("_(no assignments.parquet in the export)_")
        return
    stages = [s for s in STAGE_WORDS if s in set(assignments["stage"].to_list())]
    rows = []
    for bucket in _buckets_present(assignments):
        sub = assignments.filter(assignments["bucket"] == bucket)
        counts = dict(sub["stage"].value_counts().rows())
        rows.append({"bucket": bucket, **{s: counts.get(s, 0) for s in stages}, "total": sub.height})
    rows.append({"bucket": "total", **{s: int((assignments["stage"] == s).sum()) for s in stages},
                 "total": assignments.height})
    rep.table(rows, ["bucket", *stages, "total"])
    if "source" in assignments.columns:
        by_source = []
        for source in sorted(set(assignments["source"].fill_null("(unknown)").to_list())):
            sub = assignments.filter(assignments["source"].fill_null("(unknown)") == source)
            p = [v for v in sub["p_hat"].to_list() if v is not None]
            by_source.append({"source": source, "items": sub.height, "mean p̂": sum(p) / len(p) if p else None,
                              **{b: int((sub["bucket"] == b).sum()) for b in BUCKET_ORDER}})
        rep.table(by_source, ["source", "items", "mean p̂", *BUCKET_ORDER])


def _items_section(rep: Report, run_dir: Path, assignments, run_id: str | None) -> None:
    rep.heading("Items by bucket")
    if assignments is None:
        rep.text("_(no assignments)_")
        return
    by_bucket = {}
    for bucket in _buckets_present(assignments):
        sub = assignments.filter(assignments["bucket"].fill_null("unverified") == bucket)
        by_bucket[bucket] = sub.sort("p_hat", "id", descending=[True, False], nulls_last=True)
    shown_ids = [str(i) for sub in by_bucket.values() for i in sub["id"].head(MAX_ITEMS_PER_BUCKET).to_list()]
    problems, samples, why = _read_store(run_dir / "probe.duckdb", run_id, shown_ids)
    rep.text("Open an item to see its prompt, the model's samples with the answer the verifier extracted, "
             "its verdict and why generation stopped, and the reason for its routing. All items are in "
             "`export/assignments.parquet`, all samples in `probe.duckdb` (table `samples`)."
             + (f" Samples could not be read: {why}." if why else ""))
    for bucket, sub in by_bucket.items():
        stages = ", ".join(f"{STAGE_WORDS.get(s, s)} {n}" for s, n in sub["stage"].value_counts().sort("stage").rows())
        rep.heading(f"{bucket.capitalize()}: {sub.height} item(s) → {stages}", 3)
        shown = sub.head(MAX_ITEMS_PER_BUCKET).to_dicts()
        for row in shown:
            item_samples = samples.get(str(row["id"]), [])
            rep.details(_item_line(row, item_samples), _item_blocks(row, problems.get(str(row["id"])), item_samples))
        if sub.height > len(shown):
            rep.text(f"{sub.height - len(shown)} more {bucket} item(s) not shown here; they are in "
                     "`export/assignments.parquet` and their samples in `probe.duckdb`.")


def _item_line(row: dict, samples: list[dict]) -> str:
    n, c = row.get("n"), row.get("c")
    score = f"{c}/{n} correct" if n is not None and c is not None else "not verified"
    others = {}
    for s in samples:
        if s.get("status") != "correct":
            others[s.get("status")] = others.get(s.get("status"), 0) + 1
    if others:
        score += " (" + ", ".join(f"{k} {v}" for k, v in sorted(others.items(), key=lambda kv: str(kv[0]))) + ")"
    return f"`{row['id']}` · {row.get('source') or '?'} · {score} · → {STAGE_WORDS.get(row.get('stage'), row.get('stage'))}"


def _item_blocks(row: dict, problem, samples: list[dict]) -> list:
    routing = (f"**Routing:** {row.get('reason') or '–'} (p̂ {_fmt(row.get('p_hat'))}, 95% CI "
               f"{_ci(row.get('ci_low'), row.get('ci_high'))}).")
    blocks: list = [("p", routing)]
    if problem is not None:
        blocks += [("p", "**Prompt:**"), ("code", problem.prompt),
                   ("p", f"**Gold answer:** `{_inline_code(problem.answer)}`")]
    if not samples:
        blocks.append(("p", "_(no samples stored for this item)_"))
    for s in samples:
        extracted = s.get("extracted")
        head = (f"**Sample {int(s['sample_idx']) + 1}:** verdict `{s.get('status')}`, extracted "
                + (f"`{_inline_code(extracted)}`" if extracted not in (None, "") else "nothing")
                + f", finish reason `{s.get('finish_reason') or 'unknown'}`"
                + (f", {s['n_tokens']} tokens" if s.get("n_tokens") is not None else "")
                + (f"; verifier: {s['reason']}" if s.get("reason") and s.get("status") in ("timeout", "error")
                   else ""))
        blocks += [("p", head), ("code", s.get("completion") or "")]
    return blocks


def _inline_code(text) -> str:
    return str(text).replace("`", "'").replace("\n", " ")


def _training_section(rep: Report, run_dir: Path, trained: dict) -> None:
    rep.heading("Training")
    rows = []
    for name in ("sft", "rl", "joint"):
        res = trained.get(name)
        if res:
            rows.append({"stage": name.upper(), "steps": res.get("global_step"),
                         "mean step (s)": res.get("step_time_s"),
                         "final train loss": (res.get("metrics") or {}).get("train_loss"),
                         "model": res.get("model_dir")})
    if rows:
        rep.table(rows, ["stage", "steps", "mean step (s)", "final train loss", "model"])
    for name, why in (trained.get("skipped") or {}).items():
        rep.text(f"**{name.upper()} skipped:** {why}.")
    _loop_section(rep, trained)
    rep.image(run_dir / "train" / "curves.png", "training curves: SFT loss, RL reward, held-out SFT loss")
    for sentence in _curve_sentences(run_dir / "train"):
        rep.text(sentence)


def _loop_section(rep: Report, trained: dict) -> None:
    """The full re-probe and the rounds: who left or joined RL, the bucket transitions, and RL's groups
    with zero reward variance (all wrong ones feed the next round's SFT set)."""
    for reprobe in trained.get("reprobes") or []:
        rep.text(f"Re-probe, round {reprobe['round']}: {reprobe['probed']} of {reprobe['items']} items; "
                 f"{len(reprobe['left_rl'])} left RL, {len(reprobe['joined_rl'])} joined RL (decided by the "
                 "export's own routing policy).")
    if trained.get("transitions"):
        rep.text("Bucket transitions at each re-probe (train/transitions.parquet):")
        rep.table(trained["transitions"], ["round", "before", "after", "count"])
    for groups in trained.get("rl_groups") or []:
        if groups.get("groups"):
            rep.text(f"RL, round {groups['round']}: {groups['groups']} groups, {groups['zero_variance']} with zero "
                     f"reward variance ({groups['all_wrong']} all wrong, {groups['all_right']} all right); "
                     f"{groups['all_wrong_prompts']} prompts were all wrong in every group.")


def _curve_sentences(train_dir: Path) -> list[str]:
    """What the curves show, read from the metrics the plot was drawn from."""
    sft = read_metrics(train_dir / "sft" / "metrics.jsonl")
    rl = read_metrics(train_dir / "rl" / "metrics.jsonl")
    out = []

    def series(rows, key, stage=None):
        return [m[key] for m in rows if key in m and (stage is None or m.get("stage") == stage)]

    def change(name, values):
        if len(values) < 2:
            return f"{name}: {values[0]:.3f} (one point)." if values else None
        first, last = values[0], values[-1]
        if round(first, 3) == round(last, 3):
            return f"{name} stayed at {last:.3f} over {len(values)} logged points."
        return f"{name} {'rose' if last > first else 'fell'} from {first:.3f} to {last:.3f} over {len(values)} logged points."

    for sentence in (change("SFT training loss", series(sft, "loss", "sft")),
                     change("RL reward", series(rl, "reward")),
                     change("During RL, the held-out SFT loss (the SFT objective on demonstrations not trained on)",
                            series(rl, "heldout_sft_loss"))):
        if sentence:
            out.append(sentence)
    return out


def _evaluation_section(rep: Report, trained: dict) -> None:
    evals = _evaluations(trained)
    rep.heading("Evaluation")
    if not evals:
        rep.text("No evaluation in this run.")
        return
    rep.text("pass@1 with its 95% interval over items at each checkpoint. `heldout` items were never probed or "
             "trained on; `export items` are a sample of the routed items per bucket (the mastered bucket is "
             "never trained on, so a drop there is forgetting).")
    rep.table(display_table(evals), ["set", "group", "items", *(ev.checkpoint for ev in evals)])
    forgetting = trained.get("forgetting") or {}
    if forgetting:
        rep.heading("Forgetting on the mastered bucket", 3)
        rep.table([{"checkpoint": k, "pass@1": v, "drop from before": forgetting.get("drop", {}).get(k)}
                   for k, v in forgetting.get("mastered_pass@1", {}).items()])


def _profile_section(rep: Report, run_dir: Path, profile: dict) -> None:
    rep.heading("Dataset profile")
    if not profile:
        rep.text("_(no profile)_")
        return
    dup, missing = profile.get("duplicates") or {}, profile.get("missing") or {}
    rows = [("rows", profile.get("rows")), ("exact duplicates", dup.get("exact")),
            ("duplicates after normalisation", dup.get("normalised")),
            ("missing prompts", missing.get("prompt")), ("missing answers", missing.get("answer")),
            ("missing solutions", missing.get("solution")), ("unreadable rows", profile.get("bad_rows"))]
    rep.text("The sources as profiled before sampling the pool (`profile/README.md` has the full card).")
    rep.table([{"statistic": k, "value": _plain(v)} for k, v in rows if v is not None], ["statistic", "value"])
    for key, label in (("sources", "source"), ("tasks", "task"), ("answer_types", "answer type")):
        counts = profile.get(key) or {}
        if isinstance(counts, dict) and counts:
            rep.table([{label: k, "rows": v} for k, v in counts.items()], [label, "rows"])
    for png in sorted((run_dir / "profile").glob("*.png")):
        rep.image(png, "prompt length histogram")


def _config_section(rep: Report, cfg: dict) -> None:
    import yaml

    rep.heading("Config")
    rep.text("The whole resolved config of this run (also in `config.yaml`); "
             "`stagewise run --config config.yaml` repeats it.")
    rep.code(yaml.safe_dump(cfg, sort_keys=False))


# --------------------------------------------------------------------------- reading the run


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_assignments(path: Path):
    import polars as pl

    if not path.exists():
        return None
    return pl.read_parquet(path)


def _buckets_present(assignments) -> list[str]:
    present = set(assignments["bucket"].fill_null("unverified").to_list())
    return [b for b in BUCKET_ORDER if b in present] + sorted(present - set(BUCKET_ORDER))


def _read_store(store_path: Path, run_id: str | None, ids: list[str]) -> tuple[dict, dict, str | None]:
    """({id: Problem}, {id: [sample dicts]}, why not) for these items, from the run's probe store opened
    read-only; only the shown items' samples are read, however large the run."""
    if not store_path.exists():
        return {}, {}, "probe.duckdb is missing"
    try:
        store = ProbeStore(store_path, read_only=True)
    except StagewiseError as exc:
        return {}, {}, str(exc)
    try:
        problems = {p.id: p for p in store.problems(ids)}
        columns = ("problem_id", "sample_idx", *SAMPLE_COLUMNS)
        rows = store.con.execute(
            f"SELECT {', '.join(columns)} FROM samples WHERE run_id = ? AND list_contains(?, problem_id) "
            "ORDER BY problem_id, sample_idx", [run_id or store.latest_run_id(), ids]).fetchall()
        samples: dict[str, list[dict]] = {}
        for row in rows:
            s = dict(zip(columns, row))
            samples.setdefault(s["problem_id"], []).append(s)
        return problems, samples, None
    finally:
        store.close()


# --------------------------------------------------------------------------- looking at it in a browser


def find_chromium() -> str | None:
    """The Chromium executable (Debian's `chromium`, or `chromium-browser` / `google-chrome`), if any."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(html_path, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium on a local HTML file, offline and with a throwaway profile; return stdout."""
    import subprocess
    import tempfile

    exe = find_chromium()
    if exe is None:
        raise ConfigError("Chromium is not installed; install it (Debian: `apt-get install -y chromium`) "
                          "to render the report")
    page = Path(html_path).resolve()
    if not page.exists():
        raise InputError("report not found", path=str(html_path), fix="pass the report.html of a run directory")
    with tempfile.TemporaryDirectory(prefix="stagewise-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args, page.as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def dump_dom(html_path) -> str:
    """The DOM Chromium built from the page (what a browser parsed, not the file's text)."""
    return _chromium(html_path, "--dump-dom")


def render_png(html_path, png_path, *, width: int = 1100, max_height: int = 16000) -> Path:
    """A screenshot of the whole page: Chromium renders into a tall window, then the empty space below
    the page is cropped (the CLI has no full-page option)."""
    from PIL import Image, ImageChops

    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    _chromium(html_path, f"--screenshot={tmp.resolve()}", f"--window-size={width},{max_height}")
    with Image.open(tmp) as shot:
        shot = shot.convert("RGB")
        background = Image.new("RGB", shot.size, shot.getpixel((shot.width - 1, shot.height - 1)))
        box = ImageChops.difference(shot, background).getbbox()
        bottom = min(shot.height, (box[3] if box else shot.height) + 40)
        shot.crop((0, 0, shot.width, bottom)).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, png_path)
    return png_path


if __name__ == "__main__":  # python -m stagewise.run_report RUN/report.html RUN/report.png
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m stagewise.run_report REPORT.html OUT.png")
    print(render_png(sys.argv[1], sys.argv[2]))
