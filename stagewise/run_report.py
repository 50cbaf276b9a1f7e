"""The run report: one list of blocks rendered twice, as report.md (images beside it) and as a
self-contained report.html (images inlined as base64), so the two never disagree."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.atomic import write_text_atomic


@dataclass
class Report:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

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

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        out = Path(out_dir)
        md, htm = out / "report.md", out / "report.html"
        write_text_atomic(md, self._markdown(out))
        write_text_atomic(htm, self._html())
        return md, htm

    def _markdown(self, out: Path) -> str:
        parts = [f"# {self.title}\n"]
        for kind, value in self.blocks:
            if kind == "h2":
                parts.append(f"## {value}\n")
            elif kind == "p":
                parts.append(f"{value}\n")
            elif kind == "code":
                parts.append(f"```\n{value.rstrip()}\n```\n")
            elif kind == "table":
                cols, rows = value
                lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
                parts.append("\n".join(lines) + "\n")
            elif kind == "img":
                path, alt = value
                parts.append(f"![{alt}]({os.path.relpath(path, out)})\n")
        return "\n".join(parts)

    def _html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(value)}</pre>")
            elif kind == "table":
                cols, rows = value
                head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols)
                              + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                path, alt = value
                data = base64.b64encode(Path(path).read_bytes()).decode()
                body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
                 "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}"
                 "pre{background:#f4f4f4;padding:1em;overflow:auto}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_run_report(run_dir, cfg: dict, *, profile: dict, probed: dict, exported: dict, trained: dict,
                     notes: list[str], seconds: dict) -> Path:
    """report.md + report.html of a `stagewise run` directory; returns the Markdown path."""
    import polars as pl
    import yaml

    run_dir = Path(run_dir)
    rep = Report(f"stagewise run: {cfg['model']}")
    rep.text(f"Run directory `{run_dir}`. Every number below comes from this run.")

    rep.heading("Config")
    rep.code(yaml.safe_dump(cfg, sort_keys=False))

    rep.heading("Dataset profile")
    keep = ("rows", "sources", "tasks", "duplicates_exact", "duplicates_normalised", "missing_answers",
            "missing_solutions", "answer_types")
    rep.table([{"statistic": k, "value": json_short(profile.get(k))} for k in keep if k in profile])
    for png in sorted((run_dir / "profile").glob("*.png")):
        rep.image(png, "prompt length histogram")

    rep.heading("Mastery and routing")
    summary = (probed or {}).get("summary") or {}
    rep.text(f"Probe run `{(probed or {}).get('run_id')}`: "
             + ", ".join(f"{k} {json_short(v)}" for k, v in summary.items() if not isinstance(v, dict)))
    export_dir = run_dir / "export"
    for png in sorted(export_dir.glob("*.png")):
        rep.image(png, png.stem.replace("_", " "))
    assignments = export_dir / "assignments.parquet"
    if assignments.exists():
        df = pl.read_parquet(assignments)
        counts = df.group_by("bucket", "stage").len().sort("bucket", "stage")
        rep.table(counts.rename({"len": "items"}).to_dicts())
        for note in notes:
            rep.text(f"**Note:** {note}.")
        rep.heading("What went where and why")
        cols = [c for c in ("id", "source", "task", "bucket", "stage", "reason", "p_hat", "ci_low", "ci_high")
                if c in df.columns]
        rep.table(df.select(cols).sort("bucket", "stage").head(200).to_dicts())

    rep.heading("Training")
    for stage_name in ("sft", "rl"):
        res = (trained or {}).get(stage_name)
        if res:
            rep.text(f"{stage_name.upper()}: " + ", ".join(f"{k} {json_short(v)}" for k, v in res.items()
                                                         if k in ("global_step", "step_time_s", "model_dir")))
    for stage_name, why in ((trained or {}).get("skipped") or {}).items():
        rep.text(f"**{stage_name.upper()} skipped:** {why}.")
    if (trained or {}).get("moved"):
        rep.text(f"The re-probe moved {len(trained['moved'])} SFT items into RL.")
    rep.image(run_dir / "train" / "curves.png", "training curves: SFT loss, RL reward, held-out SFT loss")
    rep.text("SFT and RL do not decouple: RL can raise the held-out SFT loss while it raises the reward.")

    rep.heading("Evaluation (pass@1 with 95% CI per checkpoint)")
    from stagewise.train.stage_eval import StageEval, display_table

    rep.table(display_table([StageEval.from_dict(e) for e in (trained or {}).get("evaluation") or []]))
    forgetting = (trained or {}).get("forgetting") or {}
    if forgetting:
        rep.heading("Forgetting on the mastered bucket")
        rep.table([{"checkpoint": k, "pass@1": v, "drop from before": forgetting.get("drop", {}).get(k)}
                   for k, v in forgetting.get("mastered_pass@1", {}).items()])

    rep.heading("Wall time per stage")
    rep.table([{"stage": k, "seconds": round(v, 1)} for k, v in seconds.items()])
    md, _ = rep.write(run_dir)
    return md


def json_short(value) -> str:
    import json

    if isinstance(value, float):
        return f"{value:.3f}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
