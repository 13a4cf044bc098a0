"""megatron-core's static engine (``--use-legacy-static-engine``), driven as Megatron-LM's static driver does.

Megatron-LM's examples/inference/advanced/gpt_static_inference.py builds a ``StaticInferenceContext`` of
``--inference-max-requests`` requests (Megatron's default 8) and ``--inference-max-seq-length`` tokens, wraps the
model, and calls ``StaticInferenceEngine(..., legacy=True).generate`` with every prompt at once: static batches
of at most that many requests, no coordinator, no dynamic context. With ``--cuda-graph-impl local`` it first
generates 10 tokens for one "warmup" prompt (to capture its graphs), so the batch's request ids start at 1.
Every rank runs the same batches (tensor-parallel collectives line up); rank 0 writes the result in the golden
format, keyed by the engine's request ids, logprobs being the prompt's then the generated tokens'.
"""

from __future__ import annotations

import time

SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "return_log_probs", "num_tokens_to_generate")
WARMUP_PROMPT = "warmup"  # Megatron-LM's static driver's CUDA-graph warmup request


def build_static_engine(adapter, model, tokenizer, plan: dict):
    """The legacy static engine over the model (the release's wrapper, via the adapter)."""
    from megatron.core.inference.contexts import StaticInferenceContext
    from megatron.core.inference.engines import StaticInferenceEngine
    from megatron.core.inference.text_generation_controllers.text_generation_controller import (
        TextGenerationController,
    )

    inference = plan["inference"]
    context = StaticInferenceContext(inference["max_requests"], inference["max_sequence_length"])
    wrapper = adapter.build_wrapper(model, context, plan)
    controller = TextGenerationController(inference_wrapped_model=wrapper, tokenizer=tokenizer)
    adapter.record("static_engine", {"max_batch_size": inference["max_requests"],
                                     "max_sequence_length": inference["max_sequence_length"], "legacy": True})
    return StaticInferenceEngine(text_generation_controller=controller, legacy=True)


class _SilentProgress:
    """What the static engine asks of tqdm: a progress bar it updates and never reads."""

    def __init__(self, *args, **kwargs):
        pass

    def update(self, count: int = 1) -> None:
        pass


def install_static_standins(cpu: bool) -> list[str]:
    """What the legacy static engine needs beyond the dynamic engine's stand-ins, as the stand-in lines.

    It refuses to run without tqdm, which it uses only to draw a progress bar; tqdm is no dependency of
    megatron-core nor of the toolchains. Where it is missing, a silent bar stands in (nothing read). On a CPU
    (``cpu``: the platform's stand-ins), its controller moves the batch's finished-flags with ``Tensor.cuda()``,
    which then leaves the tensor where it is, as every other tensor of the run.
    """
    import torch
    from megatron.core.inference.engines import static_engine

    applied = []
    if not getattr(static_engine, "HAVE_TQDM", True):
        static_engine.HAVE_TQDM, static_engine.tqdm = True, _SilentProgress
        applied.append("static engine's tqdm progress bar -> silent (tqdm not installed; display only)")
    if cpu and not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        applied.append("Tensor.cuda() -> identity (the static batch's tensors stay on the CPU)")
        applied += _cpu_causal_mask()
    return applied


def _cpu_causal_mask() -> list[str]:
    """Without flash attention the static engine's prefill attends through megatron-core's local softmax, whose
    default causal mask is made on "cuda": the same mask, made on the CPU."""
    import functools

    import torch
    from megatron.core.fusions import fused_softmax

    @functools.cache
    def get_default_causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq), diagonal=1).bool()

    fused_softmax.get_default_causal_mask = get_default_causal_mask
    return ["megatron.core.fusions.fused_softmax.get_default_causal_mask -> the same mask made on the CPU"]


def run_static(engine, plan: dict, rank: int) -> dict | None:
    """Every rank: the suite's prompts as one static batch; rank 0 returns the golden-format result."""
    from megatron.core.inference.sampling_params import SamplingParams

    sampling = plan["sampling"]
    params = SamplingParams(**{name: sampling[name] for name in SAMPLING_FIELDS})
    prompts = [item["prompt"] for item in plan["schedule"]["submit"]]
    if plan["inference"].get("static_warmup"):
        # as Megatron's driver does with --cuda-graph-impl local (eager here): its result is not kept, and the
        # batch's requests are numbered after it
        engine.generate(prompts=[WARMUP_PROMPT], sampling_params=SamplingParams(num_tokens_to_generate=10))
    started = time.perf_counter()
    records = engine.generate(prompts=prompts, sampling_params=params)
    latency = time.perf_counter() - started
    if rank != 0:
        return None
    results = {}
    for record in records:
        entry = {
            "input_prompt": record.prompt,
            "generated_text": record.generated_text,
            "generated_tokens": [int(token) for token in record.generated_tokens],
            "latency": latency,
        }
        if sampling["return_log_probs"]:
            entry["logprobs"] = list(record.prompt_log_probs or []) + list(record.generated_log_probs or [])
        results[str(record.request_id)] = entry
    return results
