"""Sampling: the reference loop, the lean path and its kernels."""
from variant.sampling.sampler import (PRECISIONS, ConcatKVCache, LeanSampler, Precision, Samples,
                                      attend_split, check_pair, default_precision, generate,
                                      sample_tokens, sample_tokens_sorted, top_k_top_p_filter)

__all__ = ["PRECISIONS", "ConcatKVCache", "LeanSampler", "Precision", "Samples", "attend_split",
           "check_pair", "default_precision", "generate", "sample_tokens", "sample_tokens_sorted",
           "top_k_top_p_filter"]
