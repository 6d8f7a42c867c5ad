"""From logits to tokens: the top-k / top-p filter and the two token draws."""
from __future__ import annotations

import torch


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Logits with everything outside the top-k, then outside the top-p nucleus, set to -inf.
    The most likely token always survives."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, order = logits.sort(dim=-1)  # ascending
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
    return logits


def sample_tokens(logits: torch.Tensor, top_k=0, top_p=0.0, generator=None) -> torch.Tensor:
    """One token per position from (B, l, V) logits (the reference's draw)."""
    B, l, V = logits.shape
    probs = top_k_top_p_filter(logits.float(), top_k, top_p).softmax(-1)
    return torch.multinomial(probs.view(-1, V), 1, generator=generator).view(B, l)


def sample_tokens_sorted(logits: torch.Tensor, top_k=0, top_p=0.0, generator=None) -> torch.Tensor:
    """The distribution of sample_tokens, drawn from the top-k candidates only.

    topk returns the candidates in descending order, so the nucleus is a prefix: token i
    stays if the mass before it is below top_p (the reference's rule, read from the top).
    One uniform number per position picks a token by inverse CDF: no host sync, so the
    whole pass can be captured in a CUDA graph, and the work is (rows, k), not (rows, V).
    """
    V = logits.shape[-1]
    k = top_k if 0 < top_k < V else V
    values, index = logits.topk(k, dim=-1)      # in the logits' dtype: the same set, fewer bytes
    probs = values.float().softmax(-1)
    if top_p > 0:
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), device=cdf.device, generator=generator) * cdf[..., -1:]
    pick = torch.searchsorted(cdf, u, right=True).clamp_max_(k - 1)
    return index.gather(-1, pick).squeeze(-1)
