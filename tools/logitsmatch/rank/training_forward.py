"""The ``forward`` schedule: megatron-core's GPTModel forward over whole sequences, no engine (train/inference parity).

Every rank runs the same requests in the same order, so tensor-parallel collectives (and the experts'
all-to-alls) line up as in a training step; rank 0 writes the result in the golden format. Each request's
sequence is its prompt's tokens (the engine's tokenization: the tokenizer's ids, a leading BOS dropped, none
added) followed by the reference result's generated tokens; the model sees it in one forward with megatron's
training-data causal mask (``attention_mask`` True above the diagonal), no KV cache and no dynamic context.
The logits are gathered over the tensor-parallel ranks, log-softmaxed in float32 over the whole padded
vocabulary (as the engine's context does), and gathered at each next token: prompt length - 1 prompt logprobs,
then one per generated token, as the engine reports them.
"""

from __future__ import annotations


def prompt_tokens(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids as the engine adds them (``tokenize_prompt`` with add_BOS False)."""
    tokens = list(tokenizer.tokenize(prompt))
    while tokens and tokens[0] == tokenizer.bos:
        tokens.pop(0)
    return tokens


def sequence_logprobs(model, tokens: list[int]) -> list[float]:
    """log p(token[i+1] | tokens[..i]) for i in 0..len-2, from one training-path forward."""
    import torch
    import torch.nn.functional as F
    from megatron.core import tensor_parallel

    device = next(model.parameters()).device
    length = len(tokens)
    input_ids = torch.tensor([tokens], dtype=torch.long, device=device)
    position_ids = torch.arange(length, dtype=torch.long, device=device).unsqueeze(0)
    attention_mask = torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=1)[None, None]
    logits = model(input_ids, position_ids, attention_mask)  # [1, length, vocab / TP]
    logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
    log_probs = F.log_softmax(logits.squeeze(0).float(), dim=-1)
    following = input_ids[0, 1:]
    return log_probs[torch.arange(length - 1, device=device), following].tolist()


def run_forward(model, tokenizer, plan: dict, rank: int) -> dict | None:
    """Every rank: each reference request's logprobs through the forward; rank 0 returns the golden-format result."""
    reference = plan["schedule"]["reference"]["requests"]
    results = {}
    for request_id in sorted(reference, key=int):
        request = reference[request_id]
        prompt = prompt_tokens(tokenizer, request["input_prompt"])
        generated = list(request["generated_tokens"])
        logprobs = sequence_logprobs(model, prompt + generated)
        if request.get("logprobs_count") is not None and len(logprobs) != request["logprobs_count"]:
            raise RuntimeError(f"request {request_id}: the forward gives {len(logprobs)} logprobs, the reference "
                               f"has {request['logprobs_count']} (tokenization differs from the engine's)")
        results[request_id] = {
            "input_prompt": request["input_prompt"],
            "generated_text": request["generated_text"],
            "generated_tokens": generated,
            "latency": None,
            "logprobs": logprobs,
        }
    return results if rank == 0 else None
