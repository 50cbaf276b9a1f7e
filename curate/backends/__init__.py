"""Generation backends behind one small interface (`curate.backends.base.Backend`).

    backend = make_backend("hf", "smollm2-135m", batch_size=32)
    backend = make_backend("vllm", "Qwen/Qwen3-8B", tensor_parallel_size=4, gpu_memory_utilization=0.85)
    results = backend.generate([GenerationRequest(key, messages, [0, 1], [seed0, seed1], params)])

`hf` is transformers with its own CPU-friendly scheduler, `vllm` the GPU engine (extra `stagewise[vllm]`),
`openai` any OpenAI-compatible server (extra `stagewise[openai]`). Each is imported only when chosen.

Backend arguments (`--backend-arg KEY=VALUE` on the command line, `probe.backend_args` in a run config)
are checked against the chosen backend's accepted keys before anything loads: a misspelt key is an
error naming the accepted ones, never silently dropped.
"""

from __future__ import annotations

from stagewise.curate.backends.base import (
    Backend,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    sample_seed,
)
from stagewise.curate.backends.hf import HFBackend
from stagewise.curate.backends.openai_backend import OpenAIBackend
from stagewise.curate.backends.vllm_backend import VLLMBackend
from stagewise.curate.config import parse_sets
from stagewise.curate.errors import ConfigError

BACKENDS = ("hf", "vllm", "openai")

# What each backend accepts. hf: `from_pretrained` and scheduler settings; openai: client settings and,
# per request, `extra_body` (e.g. chat_template_kwargs), `extra_headers` and a few sampling extras;
# vllm: these plus every field of vllm.EngineArgs of the installed vLLM (checked when it loads).
BACKEND_ARGS = {
    "hf": ("batch_size", "device", "device_map", "dtype", "trust_remote_code", "threads", "attn_implementation",
           "revision"),
    "openai": ("base_url", "api_key", "concurrency", "max_retries", "timeout_s", "backoff_s", "use_n",
               "extra_body", "extra_headers", "stop", "presence_penalty", "frequency_penalty"),
    "vllm": ("tensor_parallel_size", "data_parallel_size", "pipeline_parallel_size", "dtype",
             "gpu_memory_utilization", "max_model_len", "trust_remote_code", "engine_options", "chunk_size"),
}
# Arguments that change what a server is asked for: part of a probe run's identity (a resume with another
# extra_body would mix samples drawn under different requests).
SAMPLING_ARGS = ("extra_body", "stop", "presence_penalty", "frequency_penalty")
# Options every caller may pass whatever the backend (the probe's own --batch-size and --base-url).
_SHARED = ("batch_size", "base_url")

__all__ = ["BACKENDS", "BACKEND_ARGS", "SAMPLING_ARGS", "Backend", "GenerationRequest", "GenerationResult", "SamplingParams",
           "check_backend_args", "make_backend", "parse_backend_args", "sample_seed"]


def make_backend(name: str, model: str, **opts) -> Backend:
    """A ready backend by name. `batch_size` and `base_url` are accepted for every backend (and ignored
    where meaningless); any other option must be one the backend accepts (ConfigError otherwise).
    None values mean "the default"."""
    opts = {k: v for k, v in opts.items() if v is not None}
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (--backend)")
    own = {k: v for k, v in opts.items() if k in BACKEND_ARGS[name]}
    rest = {k: v for k, v in opts.items() if k not in _SHARED and k not in own}
    if name == "vllm":
        # Other keys are vllm.EngineArgs fields; VLLMBackend checks them against the installed vLLM.
        own["engine_options"] = {**rest, **(own.get("engine_options") or {})}
        return VLLMBackend(model, **own)
    check_backend_args(name, rest)
    if name == "hf":
        return HFBackend(model, **own)

    return OpenAIBackend(model, **own)


def check_backend_args(name: str, args: dict, extra_keys=()) -> None:
    """ConfigError naming every key `name` does not accept, and the keys it does."""
    accepted = tuple(BACKEND_ARGS.get(name, ())) + tuple(extra_keys)
    unknown = [k for k in args if k not in accepted]
    if unknown:
        raise ConfigError(
            f"unknown backend argument(s) {', '.join(map(repr, unknown))} for --backend {name}; "
            f"accepted: {', '.join(sorted(accepted))}"
            + (" (and any vllm.EngineArgs field of the installed vLLM)" if name == "vllm" else ""))


def parse_backend_args(pairs) -> dict:
    """`["dtype=bfloat16", "extra_body.chat_template_kwargs.enable_thinking=false"]` -> a nested dict.

    Values are YAML scalars or flow collections (`8`, `0.9`, `true`, `{a: 1}`); a dotted key builds a
    nested mapping, so one argument can set a single field of `extra_body` (the `--set` parser)."""
    return parse_sets(pairs, option="--backend-arg", example="dtype=bfloat16")
