"""Chat answers as vLLM 0.32 sends them, recorded from the default model (the engine-only
fields filled in with values), for the tests of what ragtune passes on to clients."""

from __future__ import annotations

from typing import Any


def vllm_completion(**choice: Any) -> dict[str, Any]:
    """A whole answer as vLLM 0.32 sends it (recorded; engine-only fields filled in)."""
    return {
        "id": "chatcmpl-8f465ef96a93b5e4",
        "object": "chat.completion",
        "created": 1796062799,
        "model": "SmolLM2-135M-Instruct",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello there, welcome",
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "reasoning": None,
                },
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
                "token_ids": [19556, 665, 28, 5458],
                "routed_experts": None,
                **choice,
            }
        ],
        "service_tier": None,
        "system_fingerprint": "vllm-0.32.0-00f61c3e",
        "usage": {
            "prompt_tokens": 32,
            "total_tokens": 36,
            "completion_tokens": 4,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        "prompt_logprobs": [None, {"1": {"logprob": -1.0}}],
        "prompt_token_ids": [1, 2, 3],
        "prompt_text": "<|im_start|>system\nsecret instructions",
        "kv_transfer_params": {"do_remote_decode": False},
        "ec_transfer_params": None,
        "metrics": None,
    }


def vllm_stream() -> list[dict[str, Any]]:
    """A stream as vLLM 0.32 sends it with include_usage (recorded)."""
    head = {
        "id": "chatcmpl-8ba7", "object": "chat.completion.chunk", "created": 1796062813,
        "model": "SmolLM2-135M-Instruct",
    }  # fmt: skip
    return [
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            "prompt_token_ids": [1, 2, 3],
            "prompt_text": None,
        },
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Hello", "reasoning": None},
                    "logprobs": None,
                    "finish_reason": None,
                    "token_ids": [19556],
                }
            ],
        },
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": " welcome"},
                    "logprobs": None,
                    "finish_reason": "length",
                    "stop_reason": None,
                    "token_ids": None,
                }
            ],
        },
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 32, "total_tokens": 36, "completion_tokens": 4},
            "system_fingerprint": "vllm-0.32.0-00f61c3e",
        },
    ]
