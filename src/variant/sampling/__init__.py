"""Sampling: one scale loop (loop.py) run by the reference backend (reference.py) and the
lean path (lean.py, with kernels.py, cache.py and precision.py); tokens.py draws tokens."""
from variant.sampling.cache import ConcatKVCache, LeanKVCache
from variant.sampling.kernels import attend_split
from variant.sampling.lean import LeanSampler
from variant.sampling.loop import SampleRequest, Samples, check_pair
from variant.sampling.precision import PRECISIONS, Precision, default_precision, sampling_copy, tf32
from variant.sampling.reference import generate
from variant.sampling.tokens import sample_tokens, sample_tokens_sorted, top_k_top_p_filter

__all__ = ["PRECISIONS", "ConcatKVCache", "LeanKVCache", "LeanSampler", "Precision", "SampleRequest",
           "Samples", "attend_split", "check_pair", "default_precision", "generate", "sample_tokens",
           "sample_tokens_sorted", "sampling_copy", "tf32", "top_k_top_p_filter"]
