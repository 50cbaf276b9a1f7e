"""Data cards: Markdown in the Hugging Face dataset-card format (YAML front matter) plus PNG plots.

`profile` and `export` both write cards, so rendering lives here in the lowest layer. Every write is
atomic (temp file + os.replace): a reader never sees half a card or half an image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from stagewise.curate.atomic import atomic_target as _atomic_target  # noqa: E402
from stagewise.curate.atomic import write_text_atomic  # noqa: E402,F401


def render_card(*, front_matter: dict, title: str, sections: Sequence[tuple[str, str]]) -> str:
    """The card text: `---` YAML `---`, a title, then one `## heading` per section."""
    import yaml

    head = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True, default_flow_style=False)
    parts = ["---", head.rstrip("\n"), "---", "", f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip("\n"), ""]
    return "\n".join(parts)


def write_card(path, *, front_matter: dict, title: str, sections: Sequence[tuple[str, str]]) -> str:
    """Write a Markdown data card with YAML front matter (Hugging Face dataset-card format)."""
    return write_text_atomic(path, render_card(front_matter=front_matter, title=title, sections=sections))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; pipes and newlines in cells are escaped."""

    def cell(v) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def size_category(n: int) -> str:
    """The Hugging Face `size_categories` bucket for n rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    plt = _figure()
    path, tmp = _atomic_target(path)
    fig.tight_layout()
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def histogram_png(values, path, *, title: str, xlabel: str, bins=30, labels: Sequence[str] | None = None) -> str:
    """A histogram of `values` (one sequence, or several overlaid with `labels`) saved as PNG."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    series = values if labels else [values]
    for i, vals in enumerate(series):
        ax.hist(list(vals) if not hasattr(vals, "__array__") else vals, bins=bins, alpha=0.6 if labels else 0.9,
                label=labels[i] if labels else None)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    if labels:
        ax.legend()
    return _save(fig, path)


def bar_png(labels: Sequence[str], values: Sequence[float], path, *, title: str, ylabel: str) -> str:
    """A bar chart saved as PNG (see `bar_figure`)."""
    return _save(bar_figure(labels, values, title=title, ylabel=ylabel), path)


def bar_figure(labels: Sequence[str], values: Sequence[float], *, title: str, ylabel: str):
    """Horizontal bars, one row per label: source names such as `gsm8k/train_head500` are long, and
    on a vertical bar chart their x labels overlap; stacked as rows they never do."""
    plt = _figure()
    labels = [str(x) for x in labels]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * max(len(labels), 1)))
    positions = list(range(len(labels)))[::-1]  # first label on top, as in the tables beside it
    ax.barh(positions, values)
    ax.set_yticks(positions, labels)
    ax.set_title(title)
    ax.set_xlabel(ylabel)
    for pos, value in zip(positions, values):
        ax.annotate(f"{value:.3g}", (value, pos), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=8)
    top = max((float(v) for v in values), default=0.0)
    ax.set_xlim(0, top * 1.15 if top > 0 else 1)  # bars start at zero; all-zero values still get an axis
    fig.tight_layout()
    return fig
