"""The lean path: the model's blocks with fused kernels and a KV cache sized up front.

It computes the reference loop's tokens with less memory and time: one KV buffer per
(D, d, N, batch), allocated before sampling, in the matmul dtype, sized by
costmodel.tokens_per_layer(..., last_scale=False); the last scale's keys and values are
attended to but never stored; fused attention, per-sample AdaLN terms, guidance applied
before the (linear) head, and on CUDA one captured graph per configuration. Its
arithmetic follows a `Precision` (precision.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from variant.models import VAR, VQVAE
from variant.models.supernet import Subnet
from variant.models.var import AdaLN
from variant.sampling.cache import LeanKVCache, lean_tokens_per_layer
from variant.sampling.kernels import add_ln_mod, attend_split, ffn_fused, split_qkv, triton
from variant.sampling.loop import SampleRequest, Samples, check_pair, decode_images, guide, sample_scales
from variant.sampling.precision import PRECISIONS, default_precision, sampling_copy, tf32
from variant.sampling.tokens import sample_tokens_sorted


class LeanPass:
    """The scale loop's backend for one lean sampling pass over a plan's cache.

    Each block is the model's AdaLNBlock in (rows, tokens, heads, head_dim) layout: its
    modulation (block.ada_terms), attention projections (attn.qkv, attn.proj) and FFN,
    with the elementwise work between them fused (kernels.py)."""

    def __init__(self, sampler: LeanSampler, cache: LeanKVCache):
        self.var, self.cache, self.precision = sampler.var, cache, sampler.precision
        self.upsampled = sampler.vae.quantize.upsampled_by_matmul
        self.qkv_bias, self.k_scale, self._level_pos = sampler.qkv_bias, sampler.k_scale, sampler.level_pos
        self.triton = sampler.use_triton
        self.concat_last = sampler.last_scale == "concat"   # ablation: see LeanSampler
        self.fp8 = self.precision.fp8
        self.mods, self.head_terms = {}, None

    def condition(self, cond, cond_blocks, layers):
        """Each block's AdaLN terms: the class condition is the same at every scale, so once
        per sample, not per scale; in the stream dtype, contiguous for the fused kernels."""
        stream = self.precision.stream
        for i in layers:
            block = self.var.blocks[i]
            inp = cond_blocks if block.shared_aln else cond_blocks.to(self.precision.matmul)
            self.mods[i] = AdaLN(*(t.contiguous() for t in block.ada_terms(inp, stream)))
        self.head_terms = self.var.head_nm.ada_terms(cond.to(self.precision.head))

    def level_pos(self, k):
        return self._level_pos[k]

    def layers(self, layers, state, store, mask=None):
        state.append(None)    # state = [x, pending FFN residual]: see `block`
        for i in layers:
            self.block(i, state, store, mask)
        x, pending = state
        state.clear()
        return x if pending is None else torch.addcmul(x, *pending)

    def block(self, i, state, store, mask=None):
        """AdaLN block i: the reference's arithmetic in fewer passes.

        state = [x (2B, l, C), pending]: the FFN's residual (f, gamma2) is left pending and
        added by the next block's first LayerNorm kernel (or at the end of `layers`). The
        block takes both out of the list and puts its own back, so nothing outside holds
        them: the input and f are freed once that first kernel has run."""
        block, m = self.var.blocks[i], self.mods[i]
        eps, dtype = block.ln_wo_grad.eps, self.precision.matmul
        x, pending = state
        state.clear()
        f, g = pending or (None, None)
        del pending
        x, h = add_ln_mod(x, f, g, m.shift1, m.scale1, eps, self.triton, dtype)
        del f
        a = self.attention(i, h, store, mask)
        del h
        x, h = add_ln_mod(x, a, m.gamma1, m.shift2, m.scale2, eps, self.triton, dtype)
        del a
        ffn = block.ffn
        f = ffn.fc2(ffn.fc1(h), gelu=True) if self.fp8 else ffn_fused(ffn, h)
        state += [x, (f, m.gamma2)]

    def attention(self, i, h, store, mask):
        """Attention of block i. Its keys and values go straight into the cache; at the
        last scale (store=False) they live only while this layer is computed."""
        attn, cache = self.var.blocks[i].attn, self.cache
        B, L, C = h.shape
        H, c = attn.num_heads, attn.head_dim
        if self.fp8:   # an Fp8Linear (fp8.py) takes the bias as an argument
            qkv = attn.mat_qkv(h, self.qkv_bias[i]).view(B, L, 3, H, c)
        else:
            qkv = attn.qkv(h, self.qkv_bias[i])
        past_k, past_v = cache.held(i)
        k, v = cache.extend(i, L) if store else (qkv.new_empty(B, L, H, c), qkv.new_empty(B, L, H, c))
        if attn.attn_l2_norm:
            q = split_qkv(qkv, k, v, self.k_scale[i], self.triton)
        else:
            q = qkv[:, :, 0]
            k.copy_(qkv[:, :, 1])
            v.copy_(qkv[:, :, 2])
        T = lambda t: t.transpose(1, 2)   # (B, L, H, c) memory, (B, H, L, c) view
        if store and not past_k.shape[1] and L == 1 and mask is None:
            # one query, one key: softmax is 1, the output is v. Copied out of the cache:
            # on the strided view cuBLAS picks a kernel 40x slower.
            return attn.proj(v.reshape(B, L, C).contiguous())
        if store:
            k, v = cache.held(i)
        elif past_k.shape[1] and self.concat_last:   # ablation: the last scale beside the cache
            k, v = torch.cat((past_k, k), 1), torch.cat((past_v, v), 1)
        elif past_k.shape[1]:
            o = attend_split(T(q), T(past_k), T(past_v), T(k), T(v), attn.scale, self.triton)
            return attn.proj(T(o).reshape(B, L, C))
        o = F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=mask, scale=attn.scale)
        return attn.proj(T(o).reshape(B, L, C))

    def guided_logits(self, x, t):
        """Guidance mixes the head's input: the head is linear, so
        head((1+t) a - t b) = (1+t) head(a) - t head(b), at half the cost."""
        scale, shift = self.head_terms
        x = x.to(scale.dtype)
        h = torch.addcmul(shift, F.layer_norm(x, (x.shape[-1],), eps=self.var.head_nm.ln_wo_grad.eps), scale)
        return self.var.head(guide(h, t))

    @staticmethod
    def draw(logits, top_k, top_p, generator):
        return sample_tokens_sorted(logits, top_k, top_p, generator)


@dataclass
class _Plan:
    """What one configuration (subnet, batch, guidance, prefix/stop) keeps between calls."""
    cache: LeanKVCache
    labels: torch.Tensor
    prefix: list[torch.Tensor]
    graph: object = None          # torch.cuda.CUDAGraph once captured
    out: tuple | None = None      # the graph's static outputs (tokens, f_hat)


class LeanSampler:
    """KV-lean sampling of one VAR, any (d, N), without reloading weights.

    The sampler computes with its own copy of the weights in the dtypes of `precision`
    (a PRECISIONS name; default fp16 on CUDA, fp32 on a CPU); the caller's model is not
    changed, and may be dropped to free its memory. Each configuration gets its KV buffer
    once; on CUDA its whole sampling pass is captured once as a CUDA graph and replayed
    (fresh random numbers on each replay). At most `max_plans` configurations stay
    allocated; older ones are freed.

    Ablations (stages/profile.py's LEAN_MODES): kernels="torch" runs the fused kernels'
    arithmetic as plain torch ops instead of "triton"; last_scale="concat" concatenates
    the cache and the last scale for the layer being computed instead of "split" (attend
    to each and merge by log-sum-exp, no copy at all). compile_decode: the VQVAE decode
    through torch.compile (its GroupNorm, SiLU and casts fused; opt-in until
    benchmarks/generation_throughput.py shows its pixels as close to float32).
    """

    def __init__(self, var: VAR, vae: VQVAE, precision: str | None = None,
                 cuda_graphs: bool = True, max_plans: int = 1, kernels: str = "triton",
                 last_scale: str = "split", compile_decode: bool = False):
        check_pair(var, vae)
        device = next(var.parameters()).device
        self.precision_name = precision or default_precision(device)
        if self.precision_name not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        p = self.precision = PRECISIONS[self.precision_name]
        if p.fp8:
            from variant.sampling.fp8 import check_fp8_device
            check_fp8_device(device)
        if not p.faithful:
            warnings.warn(f"lean sampler precision {self.precision_name}: {p.note}", stacklevel=2)
        self.dtype, self.device = p.matmul, device          # dtype: the KV cache's
        self.var, self.vae = sampling_copy(var, p), vae.eval()
        self.fhat_to_img = torch.compile(vae.fhat_to_img, dynamic=False) if compile_decode else vae.fhat_to_img
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self.max_plans = max_plans
        self.kernels, self.last_scale = kernels, last_scale
        self.plans: dict[tuple, _Plan] = {}
        with torch.no_grad():  # per-block constants, computed once
            self.qkv_bias = [b.attn.qkv_bias() for b in self.var.blocks]
            # the attention temperature from the float32 parameter, as the reference has it
            self.k_scale = [b.attn.temperature(torch.float32).flatten() if b.attn.attn_l2_norm else None
                            for b in var.blocks]
            self.level_pos = [self.var.level_pos(k) for k in range(var.num_scales)]

    def release(self):
        """Free every configuration's cache and graph."""
        self.plans.clear()

    @property
    def kv_bytes(self) -> int:
        return sum(p.cache.nbytes for p in self.plans.values())

    @property
    def use_triton(self) -> bool:
        return self.kernels == "triton" and triton is not None and self.device.type == "cuda"

    def _run(self, plan: _Plan, request: SampleRequest, generator=None, record=None):
        """One sampling pass on the plan's static inputs; returns (tokens, f_hat)."""
        plan.cache.reset()
        head_tf32 = self.device.type == "cuda" and self.precision.tf32_head
        with tf32(True) if head_tf32 else contextlib.nullcontext():
            return sample_scales(LeanPass(self, plan.cache), self.vae, plan.labels, request, generator, record)

    def _plan(self, key, subnet, B, n0, stop) -> _Plan:
        plan = self.plans.get(key)
        if plan is None:
            while self.plans and len(self.plans) >= self.max_plans:
                self.plans.pop(next(iter(self.plans)))      # free the oldest first
            var = self.var
            cache = LeanKVCache(lean_tokens_per_layer(var, subnet, stop), 2 * B, var.num_heads,
                                var.width // var.num_heads, self.dtype, self.device)
            prefix = [torch.zeros(B, p * p, dtype=torch.long, device=self.device) for p in var.patch_nums[:n0]]
            plan = self.plans[key] = _Plan(cache, torch.zeros(B, dtype=torch.long, device=self.device), prefix)
        return plan

    def _capture(self, plan, run):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):          # warm-up: lazy initialisation stays out of the graph
            run()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            plan.out = run()
        plan.graph = graph

    @torch.no_grad()
    def decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from a final f_hat, in this precision's decode dtype."""
        return decode_images(self.vae, f_hat, self.precision.decode, self.fhat_to_img)

    @torch.no_grad()
    def generate(self, labels, subnet: Subnet | None = None, cfg: float = 1.5, top_k: int = 0,
                 top_p: float = 0.0, generator=None, decode: bool = True, record_logits: bool = False,
                 prefix: list[torch.Tensor] | None = None, stop: int | None = None,
                 forced_tokens: list[torch.Tensor] | None = None) -> Samples:
        """Same contract as `generate` (record_logits keeps the guided logits only)."""
        request = SampleRequest.of(self.var, subnet, cfg, top_k, top_p, prefix, stop, forced_tokens)
        subnet, stop = request.subnet, request.stop
        B, n0 = labels.shape[0], len(request.prefix)
        plan = self._plan((subnet, B, float(cfg), int(top_k), float(top_p), n0, stop), subnet, B, n0, stop)
        plan.labels.copy_(labels)
        for buf, tok in zip(plan.prefix, request.prefix):
            buf.copy_(tok)
        request = dataclasses.replace(request, prefix=tuple(plan.prefix))   # the graph's static inputs
        record = [] if record_logits else None
        run = lambda: self._run(plan, request, generator, record)
        if self.cuda_graphs and generator is None and not record_logits and not forced_tokens:
            if plan.graph is None:
                self._capture(plan, run)
            plan.graph.replay()
            tokens, f_hat = [t.clone() for t in plan.out[0]], plan.out[1].clone()
        else:
            tokens, f_hat = run()
        images = self.decode(f_hat) if decode else None
        return Samples(tokens=tokens, f_hat=f_hat, images=images,
                       kv_tokens_per_layer=plan.cache.tokens, kv_bytes=plan.cache.nbytes,
                       cfg_logits=record or [])
