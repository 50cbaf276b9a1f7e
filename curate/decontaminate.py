"""Decontamination: find candidate items that share an n-gram with a benchmark they will be judged on.

    index = NgramIndex.build(["gsm8k:test"], ngram=8)        # the sets a pool must not contain
    result = decontaminate("pool.jsonl", against=["gsm8k:test"], out="matches.parquet")
    result.contaminated                                       # pool items with at least one match
    hits = index.match_problems(problems)                     # {problem id: [Match, ...]}

The rule is open-r1's: two prompts overlap when they share a run of `ngram` (default 8) words. Words
are the whitespace-separated tokens of the prompt after the normalisation the duplicate check uses
(`schema.normalise_text`: NFKC, lower case, collapsed whitespace). A prompt shorter than `ngram` words
has a single "n-gram", its whole text, so such a prompt matches only an identical prompt (and a set
decontaminated against itself reports every item, short ones included).

Templated sets (reasoning-gym prompts all open with the same instruction) would flag every pool item
of the same generator. An n-gram found in more than `max_share` of a set's items (and in at least
three of them) is the set's template, not its content: it is counted in `template_ngrams`, and the
words it covers are removed from both sides before the n-grams are formed, so "...problem: 4 - 1 =" and
"...problem: 4 + 3 =" do not overlap but two copies of "4 - 1 =" under that instruction do.

Only prompts are compared: a gold answer ("18") says nothing about overlap.

It streams: the pool is read in chunks (the profile's readers: JSONL byte blocks, Parquet record
batches, other sources row by row), each chunk is normalised and cut into n-grams with polars and
numpy (a rolling polynomial hash over 64-bit word hashes, wrapping), looked up in the benchmark's
sorted hash array, and only the candidate hits go back to Python, where the n-gram's words are
compared, so a hash collision can never report a false match.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

# The pool is read by profile's streaming reader; profile imports this module too, so both import the
# other as a module.
from stagewise.curate import profile as profiling
from stagewise.curate.atomic import atomic_target
from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.schema import stable_id
from stagewise.curate.sources import expand, load_problems, parse_spec, write_jsonl

DEFAULT_NGRAM = 8
DEFAULT_MAX_SHARE = 0.5
_TEMPLATE_MIN_ITEMS = 3
_PRIME = 1099511628211  # FNV's 64-bit prime: the multiplier of the rolling hash
_SHORT_SALT = 0x9E3779B97F4A7C15  # marks whole-prompt keys of short prompts apart from n-gram keys
_WORD_SEED = 20240917
MATCH_COLUMNS = ("source", "row", "id", "prompt", "set", "benchmark_item", "benchmark_id", "ngram",
                 "shared_ngrams")


@dataclass
class Match:
    """One pool item overlapping one benchmark item: the first shared n-gram and how many are shared."""

    set: str
    benchmark_item: str  # "<set label>#<0-based row in that set>", e.g. gsm8k/test#123
    benchmark_id: str
    ngram: str
    shared_ngrams: int = 1

    def reason(self, n: int) -> str:
        return f"contaminated: {n}-gram overlap with {self.benchmark_item}"


def normalise_series(prompts):
    """polars twin of schema.normalise_text (NFKC only where a prompt is not ASCII: it is the identity there)."""
    import polars as pl

    s = prompts.cast(pl.String).fill_null("")
    non_ascii = s.str.len_bytes() != s.str.len_chars()
    if non_ascii.any():
        idx = non_ascii.arg_true()
        s = s.scatter(idx, s.gather(idx).str.normalize("NFKC"))
    return s.str.to_lowercase()


def _words(prompts):
    """Per prompt, its list of words after normalisation (whitespace-separated tokens)."""
    return normalise_series(prompts).str.extract_all(r"\S+")


def _rolling(hashes, lens, n: int):
    """(row, position, key) of every n-gram, and a whole-prompt key for rows shorter than n words."""
    import numpy as np

    starts = np.zeros(len(lens), np.int64)
    if len(lens) > 1:
        np.cumsum(lens[:-1], out=starts[1:])
    rows, keys, pos = [], [], []
    total = len(hashes)
    prime = np.uint64(_PRIME)
    if total >= n:
        m = total - n + 1
        g = np.zeros(m, np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                g = g * prime + hashes[j:j + m]
        row_of = np.repeat(np.arange(len(lens)), lens)[:m]
        p = np.arange(m) - starts[row_of]
        ok = p + n <= lens[row_of]  # an n-gram never spans two prompts
        rows.append(row_of[ok])
        keys.append(g[ok])
        pos.append(p[ok])
    short = np.nonzero((lens > 0) & (lens < n))[0]
    if len(short):  # few in real pools: a Python loop is fine
        sk = np.zeros(len(short), np.uint64)
        with np.errstate(over="ignore"):
            for i, r in enumerate(short.tolist()):
                h = np.uint64(_SHORT_SALT) + np.uint64(lens[r])
                for w in hashes[starts[r]:starts[r] + lens[r]]:
                    h = h * prime + w
                sk[i] = h
        rows.append(short)
        keys.append(sk)
        pos.append(np.zeros(len(short), np.int64))
    if not rows:
        return starts, np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return starts, np.concatenate(rows), np.concatenate(keys), np.concatenate(pos)


class _Grams:
    """The n-gram keys of a batch of prompts: flat arrays (row in batch, word position, key).

    With `template` (a sorted key array), the words covered by a template n-gram are removed first
    and the keys are those of the remaining content words; a prompt with no content word left keeps
    all its words, so two identical template-only prompts still match.
    """

    def __init__(self, prompts, n: int, template=None):
        import numpy as np
        import polars as pl

        words = _words(prompts)
        lens = words.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = words.explode().drop_nulls() if lens.sum() else pl.Series("w", [], pl.String)
        hashes = flat.hash(seed=_WORD_SEED).to_numpy() if len(flat) else np.zeros(0, np.uint64)
        starts, rows, keys, pos = _rolling(hashes, lens, n)
        if template is not None and len(template) and len(keys):
            at = np.searchsorted(template, keys)
            at[at == len(template)] = 0
            hit = template[at] == keys
            if hit.any():
                first = starts[rows[hit]] + pos[hit]
                width = np.minimum(n, lens[rows[hit]])
                cover = np.zeros(len(hashes) + 1, np.int64)
                np.add.at(cover, first, 1)
                np.add.at(cover, first + width, -1)
                keep = np.cumsum(cover[:-1]) == 0
                row_of_word = np.repeat(np.arange(len(lens)), lens)
                content = np.bincount(row_of_word[keep], minlength=len(lens))
                keep |= (content == 0)[row_of_word]
                lens = np.bincount(row_of_word[keep], minlength=len(lens)).astype(np.int64)
                hashes, flat = hashes[keep], flat.filter(pl.Series(keep))
                starts, rows, keys, pos = _rolling(hashes, lens, n)
        self.n, self.lens, self.flat, self.starts = n, lens, flat, starts
        self.rows, self.keys, self.pos = rows, keys, pos

    def text(self, row: int, pos: int) -> str:
        """The words of the n-gram (or the whole short prompt) at `pos` of `row`."""
        start, length = int(self.starts[row]), int(self.lens[row])
        return " ".join(self.flat.slice(start + pos, min(self.n, length)).to_list())


@dataclass
class BenchmarkSet:
    label: str
    spec: str
    items: int
    template_ngrams: int = 0


@dataclass
class NgramIndex:
    """The n-grams of the benchmark sets, as a sorted array of keys (and, per key, its items)."""

    ngram: int
    sets: list[BenchmarkSet]
    keys: object  # numpy uint64, sorted, unique
    owners: dict  # key -> list of (set index, row in set, benchmark id, word position)
    template: object = None  # numpy uint64, sorted: the sets' template n-grams (removed before matching)
    set_grams: list = field(default_factory=list)  # per set, its _Grams: the words a match is checked on

    @classmethod
    def build(cls, specs, *, ngram: int = DEFAULT_NGRAM, max_share: float = DEFAULT_MAX_SHARE,
              source_options: dict | None = None) -> NgramIndex:
        """Load every benchmark spec (each file of a directory is its own set) and index its n-grams."""
        import numpy as np
        import polars as pl

        check_ngram(ngram)
        if not 0 < max_share <= 1:
            raise ConfigError(f"max_share {max_share} is not in (0, 1]; pass e.g. 0.5")
        specs = [specs] if isinstance(specs, str) else list(specs or [])
        if not specs:
            raise ConfigError("no benchmark set named; pass --against SPEC (e.g. --against gsm8k:test)")
        loaded = []  # (label, spec, items) per set: each file of a directory is its own set
        for spec in specs:
            by_source: dict[str, list] = {}
            for p in load_problems(spec, dedupe=False, **(source_options or {})):
                by_source.setdefault(p.source, []).append(p)
            loaded += [(label, str(spec), items) for label, items in by_source.items()]
        # Pass 1: a set's template n-grams are those found in more than max_share of its items.
        sets: list[BenchmarkSet] = []
        template: set[int] = set()
        for label, spec, items in loaded:
            grams = _Grams(pl.Series([p.prompt for p in items], dtype=pl.String), ngram)
            per_key = pl.DataFrame({"key": grams.keys, "row": grams.rows}).unique()
            limit = max(_TEMPLATE_MIN_ITEMS - 1, max_share * len(items))
            mine = per_key.group_by("key").len().filter(pl.col("len") > limit)["key"].to_list()
            template.update(mine)
            sets.append(BenchmarkSet(label, spec, len(items), len(mine)))
        template_keys = np.array(sorted(template), dtype=np.uint64)
        # Pass 2: the content n-grams, with every set's template words removed.
        owners: dict = {}
        set_grams = []
        for set_idx, (label, spec, items) in enumerate(loaded):
            grams = _Grams(pl.Series([p.prompt for p in items], dtype=pl.String), ngram, template_keys)
            set_grams.append(grams)
            seen = set()
            for key, row, pos in zip(grams.keys.tolist(), grams.rows.tolist(), grams.pos.tolist()):
                if (key, row) in seen:
                    continue
                seen.add((key, row))
                owners.setdefault(key, []).append((set_idx, row, items[row].id, pos))
        keys = np.array(sorted(owners), dtype=np.uint64)
        return cls(ngram, sets, keys, owners, template_keys, set_grams)

    def describe(self) -> list[dict]:
        return [{"set": s.label, "spec": s.spec, "items": s.items, "template_ngrams": s.template_ngrams}
                for s in self.sets]

    def match_prompts(self, prompts) -> dict[int, list[Match]]:
        """{row of `prompts`: its matches, one per benchmark item}, for a batch of prompts (a polars Series)."""
        import numpy as np
        import polars as pl

        out: dict[int, list[Match]] = {}
        if len(self.keys) == 0 or len(prompts) == 0:
            return out
        grams = _Grams(prompts, self.ngram, self.template)
        if len(grams.keys) == 0:
            return out
        at = np.searchsorted(self.keys, grams.keys)
        at[at == len(self.keys)] = 0
        hit = np.nonzero(self.keys[at] == grams.keys)[0]
        if len(hit) == 0:
            return out
        # One row per (pool item, benchmark item): its first shared n-gram and how many it shares.
        hits = pl.DataFrame({"row": grams.rows[hit], "pos": grams.pos[hit], "key": grams.keys[hit]})
        pairs = (hits.join(self._owner_frame(), on="key").sort("row", "pos")
                 .group_by("row", "item", maintain_order=True)
                 .agg(pl.col("pos").first(), pl.col("entry").first(), pl.len().alias("shared")))
        for row, _, pos, entry, shared in pairs.iter_rows():
            set_idx, brow, bid, bpos = self._owners_flat[entry]
            text = grams.text(row, pos)
            if self.set_grams[set_idx].text(brow, bpos) != text:  # a hash collision, not an overlap (64-bit keys: in theory only)
                continue
            label = self.sets[set_idx].label
            out.setdefault(row, []).append(Match(label, f"{label}#{brow}", bid, text, shared))
        return out

    def _owner_frame(self):
        """(key, item, entry): the index as a frame polars can join; entry indexes `_owners_flat`."""
        import polars as pl

        if getattr(self, "_frame", None) is None:
            flat, keys, items, ids = [], [], [], {}
            for key, entries in self.owners.items():
                for entry in entries:
                    keys.append(key)
                    items.append(ids.setdefault(entry[:2], len(ids)))  # (set, row): one benchmark item
                    flat.append(entry)
            self._owners_flat = flat
            self._frame = pl.DataFrame({"key": pl.Series(keys, dtype=pl.UInt64), "item": items,
                                        "entry": range(len(flat))})
        return self._frame

    def match_problems(self, problems) -> dict[str, list[Match]]:
        """{problem id: matches} for the contaminated ones among `problems` (Problem objects or dicts)."""
        import polars as pl

        problems = list(problems)
        ids = [p.id if hasattr(p, "id") else p["id"] for p in problems]
        prompts = pl.Series([p.prompt if hasattr(p, "prompt") else p["prompt"] for p in problems], dtype=pl.String)
        return {ids[row]: m for row, m in self.match_prompts(prompts).items()}


def left_out(problems, against, *, ngram: int = DEFAULT_NGRAM) -> tuple[list, dict]:
    """Split off the contaminated problems: (the clean ones, a report naming each one left out and why)."""
    index = against if isinstance(against, NgramIndex) else NgramIndex.build(against, ngram=ngram)
    problems = list(problems)
    hits = index.match_problems(problems)
    report = {"ngram": index.ngram, "against": [s["spec"] for s in index.describe()], "sets": index.describe(),
              "contaminated": len(hits),
              "items": [{"id": pid, "reason": found[0].reason(index.ngram), "ngram": found[0].ngram,
                         "benchmark_item": found[0].benchmark_item} for pid, found in hits.items()]}
    return [p for p in problems if p.id not in hits], report


def check_ngram(ngram) -> None:
    if not isinstance(ngram, int) or isinstance(ngram, bool) or ngram < 1:
        raise ConfigError(f"--ngram {ngram!r} is not a positive whole number; pass e.g. --ngram 8")


@dataclass
class DecontaminationResult:
    """Counts per pool source and benchmark set, the matches (polars DataFrame) and where they went."""

    ngram: int
    rows: int
    contaminated: int
    sources: dict  # pool source -> {"rows": n, "contaminated": n, "by_set": {set: n}}
    sets: list[dict]
    matches: object  # polars DataFrame with MATCH_COLUMNS
    out: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, max_matches: int | None = None) -> dict:
        rows = self.matches.to_dicts()
        shown = rows if max_matches is None else rows[:max_matches]
        return {"ngram": self.ngram, "rows": self.rows, "contaminated": self.contaminated,
                "sources": self.sources, "sets": self.sets, "matches": shown,
                "matches_total": len(rows), "out": self.out, "warnings": list(self.warnings)}


def decontaminate(*data, against, ngram: int = DEFAULT_NGRAM, max_share: float = DEFAULT_MAX_SHARE,
                  out=None, prompt_col=None, answer_col=None, solution_col=None, id_col=None, task=None,
                  skip_bad: bool = False, rejects=None, progress=None) -> DecontaminationResult:
    """Find the pool items (the specs in `data`) sharing an n-gram with any item of the `against` sets.

    `against` is a list of specs, or an NgramIndex built already (then `ngram` and `max_share` are its own).

    Streams the pool; writes the matches to `out` (parquet, atomically) if given. Raises InputError /
    ConfigError for a bad spec before anything is written. Bad rows raise unless `skip_bad` (then they
    are counted in `warnings`, and written to `rejects` as JSON Lines if given).
    `progress(rows_so_far)` after each chunk.
    """
    import polars as pl

    if len(data) == 1 and isinstance(data[0], (list, tuple)):
        data = tuple(data[0])
    if not data:
        raise InputError("no data named", fix="pass a file, directory, gsm8k:test, hf:NAME or rg:NAME")
    if out is not None and os.path.splitext(os.fspath(out))[1].lower() != ".parquet":
        raise ConfigError(f"--out {out}: the matches are written as parquet; name a .parquet file")
    subs = [sub for s in data for sub in expand(parse_spec(s))]  # bad pool specs fail before indexing
    cols = {"prompt_col": prompt_col, "answer_col": answer_col, "solution_col": solution_col,
            "id_col": id_col, "task": task}
    index = against if isinstance(against, NgramIndex) else NgramIndex.build(against, ngram=ngram,
                                                                                max_share=max_share)
    sources: dict[str, dict] = {}
    records: list[dict] = []
    rejected: list[dict] = []
    done = 0
    for sub in subs:
        sink, _ = profiling._profile_source(sub, cols, 0, None, skip_bad,
                                  make_acc=lambda label=sub.label, d=done: _MatchSink(index, label, d, progress))
        done += sink.rows
        entry = sources.setdefault(sub.label, {"rows": 0, "contaminated": 0, "by_set": {}})
        entry["rows"] += sink.rows
        entry["contaminated"] += sink.contaminated
        for name, n in sink.by_set.items():
            entry["by_set"][name] = entry["by_set"].get(name, 0) + n
        rejected += sink.rejected
        for r in sink.records:
            answer = r.pop("answer")
            r["id"] = r["id"] or stable_id(r["prompt"] or "", answer or "")  # the id load_problems gives it
            records.append(r)
    for entry in sources.values():
        entry["by_set"] = {s.label: entry["by_set"].get(s.label, 0) for s in index.sets}
    schema = {"source": pl.String, "row": pl.Int64, "id": pl.String, "prompt": pl.String, "set": pl.String,
              "benchmark_item": pl.String, "benchmark_id": pl.String, "ngram": pl.String,
              "shared_ngrams": pl.Int64}
    matches = pl.DataFrame(records, schema=schema) if records else pl.DataFrame(schema=schema)
    contaminated = sum(e["contaminated"] for e in sources.values())
    result = DecontaminationResult(index.ngram, done, contaminated, sources, index.describe(), matches)
    if rejected:
        result.warnings.append(f"skipped {len(rejected):,} bad rows" + (f" (written to {rejects})" if rejects else ""))
    if rejects is not None:
        write_jsonl(rejects, rejected)
    if out is not None:
        result.out = write_matches(matches, out)
    return result


def write_matches(matches, path) -> str:
    path, tmp = atomic_target(path)
    matches.write_parquet(tmp)
    os.replace(tmp, path)
    return path


class _MatchSink:
    """Takes the place of the profile's accumulator: each canonical chunk is matched against the index.

    The profile's reader may give up on its fast path part-way and start the source again with the
    row readers with a fresh sink (`make_acc`), so nothing is counted twice.
    """

    def __init__(self, index: NgramIndex, label: str, offset: int, progress):
        self.index, self.label, self.offset, self.progress = index, label, offset, progress
        self.rows = self.contaminated = 0
        self.by_set: Counter = Counter()
        self.records: list[dict] = []
        self.rejected: list[dict] = []
        self.counts = {"sources": Counter(), "parse_failures": Counter()}

    def add(self, canon, source: str, preset: str) -> None:
        if canon.height == 0:
            return
        hits = self.index.match_prompts(canon["prompt"])
        if hits:
            prompts, ids, answers = canon["prompt"], canon["id"], canon["answer"]
            for row, found in sorted(hits.items()):
                self.contaminated += 1
                for name in {m.set for m in found}:
                    self.by_set[name] += 1
                for m in found:
                    self.records.append({"source": self.label, "row": self.rows + row, "id": ids[row],
                                         "answer": answers[row], "prompt": prompts[row], "set": m.set,
                                         "benchmark_item": m.benchmark_item, "benchmark_id": m.benchmark_id,
                                         "ngram": m.ngram, "shared_ngrams": m.shared_ngrams})
        self.rows += canon.height
        self.counts["sources"][source] += canon.height
        if self.progress:
            self.progress(self.offset + self.rows)
