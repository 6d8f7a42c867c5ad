"""The two KV caches: the reference's (grows by concatenation) and the lean one (one
buffer allocated up front, the last scale never stored)."""
from __future__ import annotations

import torch

from variant.costmodel import VARShape, tokens_per_layer
from variant.models import VAR
from variant.models.supernet import Subnet


class ConcatKVCache:
    """The reference's cache: keys and values grow by concatenation, one scale at a time.
    Under fp16 autocast keys are float32 (they come out of the fp32 L2 normalisation) and
    values float16, as the reference holds them."""

    def __init__(self):
        self.k = self.v = None

    def append(self, k, v):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        return self.k, self.v

    @property
    def tokens(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes


def lean_tokens_per_layer(var: VAR, subnet: Subnet, stop: int | None = None) -> list[int]:
    """Tokens each layer stores: every sampled scale but the last (stop - 1), which no
    later scale reads. For stop = K this is costmodel.tokens_per_layer(last_scale=False)."""
    stop = var.num_scales if stop is None else stop
    shape = VARShape(depth=var.depth, width=var.width, num_heads=var.num_heads,
                     patch_nums=tuple(var.patch_nums[:stop]))
    return tokens_per_layer(shape, subnet, last_scale=False)


class LeanKVCache:
    """All layers' keys and values in one buffer allocated up front.

    Layer i owns a contiguous (2, rows, T_i, H, c) slice, filled scale by scale: `extend`
    hands out the views the next scale's keys and values are written into, `held` what
    the layer attends to. The last scale is never stored (see lean.LeanNetwork.attention).
    """

    def __init__(self, tokens: list[int], rows: int, num_heads: int, head_dim: int, dtype, device):
        self.capacity = list(tokens)
        per_token = rows * num_heads * head_dim
        self.storage = torch.empty(2 * sum(tokens) * per_token, dtype=dtype, device=device)
        self.k, self.v, offset = [], [], 0
        for t in tokens:
            kv = self.storage[offset:offset + 2 * t * per_token].view(2, rows, t, num_heads, head_dim)
            self.k.append(kv[0])
            self.v.append(kv[1])
            offset += 2 * t * per_token
        self.pos = [0] * len(tokens)

    def reset(self):
        self.pos = [0] * len(self.capacity)

    def held(self, i: int):
        """Keys and values layer i holds, (rows, t, H, c) views."""
        return self.k[i][:, :self.pos[i]], self.v[i][:, :self.pos[i]]

    def extend(self, i: int, l: int):
        """Views for layer i's next l keys and values, to be written in place."""
        p = self.pos[i]
        if p + l > self.capacity[i]:
            raise RuntimeError(f"layer {i}: KV cache of {self.capacity[i]} tokens is full")
        self.pos[i] = p + l
        return self.k[i][:, p:p + l], self.v[i][:, p:p + l]

    @property
    def tokens(self) -> list[int]:
        return list(self.pos)

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes
