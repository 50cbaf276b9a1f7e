"""The hf backend's scheduler against a reference that shares none of its machinery: the same model run
without a cache, one sequence at a time, sampling each token from a generator seeded the same way."""

from __future__ import annotations

import pytest
import torch
from stagewise.curate.backends import make_backend
from stagewise.curate.backends.base import GenerationRequest, SamplingParams, sample_seed

PROMPTS = ["What is 2 + 2?", "Name a colour.", "Spell the word cat backwards, please, slowly and carefully.",
           "x", "Count from one to three.", "Why is the sky blue? Explain in one sentence."]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = make_backend("hf", tiny_model_dir, batch_size=4, threads=1)
    yield b
    b.close()


def _requests(k, max_new_tokens, temperature=1.0, top_p=1.0, prompts=PROMPTS, run_seed=0):
    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    return [GenerationRequest(f"p{i}", [{"role": "user", "content": text}], list(range(k)),
                              [sample_seed(run_seed, f"p{i}", j) for j in range(k)], params)
            for i, text in enumerate(prompts)]


def _reference(backend, req, idx, seed):
    """Tokens one sample should have: full forward each step (no cache, no batch, no padding)."""
    model, params = backend.model, req.params
    ids = backend.prompt_ids(req.messages)
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.inference_mode():
        while True:
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1].float()
            if params.temperature <= 0:
                tok = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits / params.temperature, dim=-1)
                if params.top_p < 1.0:
                    sorted_p, order = torch.sort(probs, descending=True)
                    keep = torch.cumsum(sorted_p, -1) - sorted_p < params.top_p
                    filtered = torch.zeros_like(probs)
                    filtered[order[keep]] = sorted_p[keep]
                    probs = filtered
                # Inverse CDF with one float64 uniform per token from the sample's own generator.
                cdf = probs.double().cumsum(-1)
                u = float(torch.rand((), generator=gen, dtype=torch.float64)) * float(cdf[-1])
                tok = int((cdf <= u).sum().clamp(max=len(cdf) - 1))
            out.append(tok)
            if tok in backend.stop_ids:
                return out, "stop"
            if len(out) >= params.max_new_tokens:
                return out, "length"


def _check_against_reference(backend, requests, results):
    by_key = {(r.key, r.sample_idx): r for r in results}
    assert len(by_key) == len(results) == sum(len(r.sample_indices) for r in requests)
    for req in requests:
        for idx, seed in zip(req.sample_indices, req.seeds):
            tokens, reason = _reference(backend, req, idx, seed)
            got = by_key[(req.key, idx)]
            text = backend.tokenizer.decode(tokens[:-1] if reason == "stop" else tokens, skip_special_tokens=True)
            assert (got.text, got.n_tokens, got.finish_reason) == (text, len(tokens), reason), (req.key, idx)


def test_samples_match_an_uncached_one_at_a_time_reference(backend):
    # 6 prompts x 3 samples through 4 slots: slots are refilled mid-flight and the buffer is compacted.
    reqs = _requests(3, 40)
    before = dict(backend.stats)
    results = backend.generate(reqs)
    _check_against_reference(backend, reqs, results)
    stats = {k: backend.stats[k] - before[k] for k in before}
    assert stats["compactions"] >= 1
    assert {r.finish_reason for r in results} == {"stop", "length"}


def test_each_prompt_is_prefilled_once_and_finished_rows_cost_nothing(backend):
    reqs = _requests(4, 30)
    before = dict(backend.stats)
    results = backend.generate(reqs)
    stats = {k: backend.stats[k] - before[k] for k in before}
    assert stats["prompts_prefilled"] == len(reqs)
    assert stats["prefill_tokens"] == sum(len(backend.prompt_ids(r.messages)) for r in reqs)
    # The first token comes from the prefill; every decode step a live slot takes yields one kept token.
    assert stats["live_slot_steps"] == sum(r.n_tokens - 1 for r in results)
    # Dead slots only occur in the tail, after the last prompt was admitted.
    assert stats["slot_steps"] - stats["live_slot_steps"] <= stats["decode_steps"] * backend.batch_size // 2


def test_a_sample_does_not_depend_on_its_batch(tiny_model_dir, backend):
    full = {(r.key, r.sample_idx): r.text for r in backend.generate(_requests(4, 30))}
    # As a resumed or adaptive run asks: a different batch size, other items absent, later indices only.
    other = make_backend("hf", tiny_model_dir, batch_size=3)
    reqs = _requests(4, 30)[::-2]
    for r in reqs:
        r.sample_indices, r.seeds = r.sample_indices[2:], r.seeds[2:]
    part = {(r.key, r.sample_idx): r.text for r in other.generate(reqs)}
    assert part and part == {key: full[key] for key in part}
    # ... while different seeds give different samples.
    assert len({full[("p0", j)] for j in range(4)}) > 1


def test_greedy_and_top_p_match_the_reference(backend):
    greedy = _requests(1, 20, temperature=0.0)
    _check_against_reference(backend, greedy, backend.generate(greedy))
    nucleus = _requests(2, 20, top_p=0.3, prompts=PROMPTS[:3])
    _check_against_reference(backend, nucleus, backend.generate(nucleus))


def test_results_stream_as_samples_finish(backend):
    reqs = _requests(2, 25)
    stream = backend.generate_stream(reqs)
    first = next(stream)
    rest = list(stream)
    assert first.key and len(rest) == 2 * len(PROMPTS) - 1


def test_bad_batch_size_names_the_flag(tiny_model_dir):
    from stagewise.curate.errors import ConfigError

    with pytest.raises(ConfigError, match="--batch-size"):
        make_backend("hf", tiny_model_dir, batch_size=0)


def test_cli_refuses_an_unknown_hf_backend_arg_naming_the_accepted_keys(tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "stagewise")
    out = subprocess.run([exe, "probe", "gsm8k:test", "--limit", "1", "--model", tiny_model_dir,
                          "--store", str(tmp_path / "s.duckdb"), "--backend-arg", "bogus=1"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "'bogus'" in out.stderr and "device_map" in out.stderr and "dtype" in out.stderr
    assert not (tmp_path / "s.duckdb").exists()


def test_backend_args_reach_from_pretrained(tiny_model_dir):
    b = make_backend("hf", tiny_model_dir, batch_size=2, threads=1, dtype="bfloat16", device_map="cpu")
    try:
        assert b.model.dtype == torch.bfloat16
        assert b.identity()["dtype"] == "bfloat16"
        results = b.generate(_requests(1, 4, prompts=["hi"]))
        assert len(results) == 1
    finally:
        b.close()


def test_parse_backend_args_builds_nested_values():
    from stagewise.curate.backends import parse_backend_args
    from stagewise.curate.errors import ConfigError

    parsed = parse_backend_args(["tensor_parallel_size=4", "gpu_memory_utilization=0.85", "enforce_eager=true",
                                 "extra_body.chat_template_kwargs.enable_thinking=false", "dtype=bfloat16"])
    assert parsed == {"tensor_parallel_size": 4, "gpu_memory_utilization": 0.85, "enforce_eager": True,
                      "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}, "dtype": "bfloat16"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_backend_args(["tensor_parallel_size"])


def test_export_refuses_an_unknown_teacher_backend_arg_before_reading_the_store(tmp_path):
    from click.testing import CliRunner

    from stagewise.cli import cli

    res = CliRunner().invoke(cli, ["export", "--store", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "o"),
                                   "--teacher", "m", "--teacher-backend-arg", "bogus=1"])
    assert res.exit_code == 1 and "'bogus'" in res.output and "device_map" in res.output


def test_generating_prints_no_deprecation_warning(tiny_model_dir):
    # transformers deprecated forward's `past_key_values` for `cache`: the old name printed a warning
    # several times per command, in the middle of the progress output.
    import logging
    import warnings

    logging.Logger.warning_once.cache_clear()  # transformers says each deprecation once per process
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = make_backend("hf", tiny_model_dir, batch_size=2, threads=1)
            results = list(b.generate(_requests(2, 6, prompts=PROMPTS[:2])))
            b.close()
    finally:
        hf_logger.removeHandler(handler)
    assert len(results) == 4
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert deprecations == []
    assert [r.getMessage() for r in records if "deprecat" in r.getMessage().lower()] == []
