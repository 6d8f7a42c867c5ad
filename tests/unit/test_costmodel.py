"""The analytic cost model against the reference's measured anchors and our own sampler."""
import pytest
import torch

from conftest import small_vae, small_var
from variant.costmodel import (KVAccounting, VARShape, kv_cache_bytes, kv_cache_mib, parameter_count, tokens_per_layer,
                               training_step_flops)
from variant.models.supernet import Subnet
from variant.sampling import generate

D30 = VARShape.from_depth(30)


@pytest.mark.parametrize("d, N, batch, mib", [
    (None, None, 64, 28687.5), (16, 6, 64, 17091.6), (8, 6, 64, 10465.3), (4, 6, 64, 7152.2),
    (2, 6, 64, 5495.6), (16, 7, 64, 18351.6), (None, None, 128, 57375.0)])
def test_reference_accounting_matches_measured_anchors(d, N, batch, mib):
    assert kv_cache_mib(D30, d, N, batch, "reference") == pytest.approx(mib, abs=0.1)


def test_var_d16_anchor_and_sizes():
    assert kv_cache_mib(VARShape.from_depth(16), None, None, 64) == pytest.approx(8160.0, abs=0.1)
    assert parameter_count(D30) / 1e9 == pytest.approx(2.0, abs=0.02)            # "2.0B"
    assert parameter_count(VARShape.from_depth(16)) / 1e6 == pytest.approx(310, abs=2)


def test_lean_accounting_from_first_principles():
    """Lean: 2-byte keys and values, and no layer stores the last 16x16 scale."""
    rows, C = 128, 1920
    assert kv_cache_mib(D30, None, None, 64, "lean") * 2**20 == (680 - 256) * 30 * rows * C * 4
    bridge = 1 + 4 + 9 + 16 + 25 + 36
    per_layer = [680 - 256 if i in (0, 29) else bridge for i in range(30)]   # d=2, N=6
    assert kv_cache_mib(D30, 2, 6, 64, "lean") * 2**20 == sum(per_layer) * rows * C * 4


@pytest.mark.parametrize("d, N", [(None, None), (2, 2), (3, 4), (4, 0)])
def test_counts_equal_what_the_sampler_caches(d, N):
    """Tokens per layer and bytes, derived on paper, equal the sampler's real cache."""
    var, vae = small_var(), small_vae()
    shape = VARShape(depth=var.depth, width=var.width, num_heads=var.num_heads, patch_nums=var.patch_nums)
    subnet = var.subnet(d, N)
    out = generate(var, vae, torch.tensor([0, 1, 2]), subnet, top_k=1, decode=False)
    assert out.kv_tokens_per_layer == tokens_per_layer(shape, subnet)
    fp32 = KVAccounting(key_bytes=4, value_bytes=4)
    assert out.kv_bytes == kv_cache_bytes(shape, subnet, batch=3, accounting=fp32)


def test_shape_of_a_built_var_is_its_released_shape_and_counts_its_parameters():
    from variant.models import VAR
    model = VAR(depth=2, patch_nums=(1, 2, 3))
    assert VARShape.of(model) == VARShape.from_depth(2, patch_nums=(1, 2, 3))
    assert parameter_count(VARShape.of(model)) == sum(p.numel() for p in model.parameters())


def test_training_step_flops_from_first_principles():
    """Full depth: 3 x forward = 6 x (12 C^2 x D x L + head C V x L + word embedding Cvae C
    x (L - 1): the first scale is the start token) + 12 C x D x sum_k n_k end_k; a subnet step
    costs less, by the skipped layers' weight and attention work."""
    from variant.models import VAR
    model = VAR(depth=4, width=64, num_heads=2, vocab_size=32, cvae=8, patch_nums=(1, 2, 3))
    shape = VARShape.of(model)
    C, D, sizes = 64, 4, (1, 4, 9)
    L = sum(sizes)
    pairs = 1 * 1 + 4 * 5 + 9 * 14
    full = 6 * L * (D * 12 * C * C + C * 32) + 6 * (L - 1) * C * 8 + 12 * C * D * pairs
    assert training_step_flops(shape, Subnet.full(4, 3), 3) == 3 * full
    sub = Subnet(4, 2, 1, 3)   # scale 0 runs layers 0..3; scales 1, 2 only layers 0 and 3
    weights = 1 * (D * 12 * C * C + C * 32) + 13 * (2 * 12 * C * C + C * 40)
    sub_pairs = 2 * pairs + 2 * 1          # layers 0, 3 see everything; 1, 2 only scale 0
    assert training_step_flops(shape, sub, 1) == 6 * weights + 12 * C * sub_pairs
