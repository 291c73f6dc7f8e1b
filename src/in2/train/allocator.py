"""The CUDA caching allocator's settings for training."""

from __future__ import annotations

import os

SETTING = "expandable_segments:True"


def expandable_segments() -> None:
    """Let PyTorch's CUDA allocator grow its segments in place instead of caching blocks of fixed sizes, unless
    the user configured the allocator (PYTORCH_ALLOC_CONF or PYTORCH_CUDA_ALLOC_CONF). Long rows allocate
    activations of many sizes; with the default allocator, 8 GiB of a 64K-128K LoRA step on one GPU were
    reserved but unused (benchmarks/RESULTS.md). Call before the first CUDA allocation."""
    if not (os.environ.get("PYTORCH_ALLOC_CONF") or os.environ.get("PYTORCH_CUDA_ALLOC_CONF")):
        os.environ["PYTORCH_ALLOC_CONF"] = SETTING
