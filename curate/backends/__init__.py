"""Generation backends behind one small interface (`curate.backends.base.Backend`).

    backend = make_backend("hf", "smollm2-135m", batch_size=32)
    results = backend.generate([GenerationRequest(key, messages, [0, 1], [seed0, seed1], params)])

`hf` is transformers with its own CPU-friendly scheduler, `vllm` the GPU engine (extra `stagewise[vllm]`),
`openai` any OpenAI-compatible server (extra `stagewise[openai]`). Each is imported only when chosen.
"""

from __future__ import annotations

from stagewise.curate.backends.base import (
    Backend,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    sample_seed,
)
from stagewise.curate.errors import ConfigError

BACKENDS = ("hf", "vllm", "openai")

__all__ = ["BACKENDS", "Backend", "GenerationRequest", "GenerationResult", "SamplingParams", "make_backend",
           "sample_seed"]


def make_backend(name: str, model: str, **opts) -> Backend:
    """A ready backend by name. Options a backend does not use are ignored (e.g. `base_url` for hf),
    so callers can pass one option set whatever the backend; None values mean "the default"."""
    opts = {k: v for k, v in opts.items() if v is not None}
    if name == "hf":
        from stagewise.curate.backends.hf import HFBackend

        return HFBackend(model, **_pick(opts, "batch_size", "device", "dtype", "trust_remote_code",
                                          "threads"))
    if name == "vllm":
        from stagewise.curate.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, **_pick(opts, "tensor_parallel_size", "data_parallel_size", "dtype",
                                          "gpu_memory_utilization", "max_model_len", "trust_remote_code",
                                          "engine_options", "chunk_size"))
    if name == "openai":
        from stagewise.curate.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model, **_pick(opts, "base_url", "api_key", "concurrency", "max_retries",
                                            "timeout_s", "backoff_s", "use_n"))
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (--backend)")


def _pick(opts: dict, *names: str) -> dict:
    return {k: opts[k] for k in names if k in opts}
