"""The lean sampler's precision policy and `variant bench precision`'s distances."""
import pandas as pd
import pytest
import torch

from conftest import small_vae, small_var
from variant.bench.precision import compare, measure_precision
from variant.sampling import PRECISIONS, LeanSampler, generate


def test_total_variation_from_first_principles():
    a = torch.tensor([[[0.0, 0.0, -torch.inf, -torch.inf]]])     # mass on tokens 0, 1
    b = torch.tensor([[[-torch.inf, -torch.inf, 0.0, 0.0]]])     # mass on tokens 2, 3
    assert compare(a, a, 0, 0.0)["tv_vs_fp32"] == 0
    assert compare(a, b, 0, 0.0)["tv_vs_fp32"] == pytest.approx(1.0)
    c = torch.tensor([[[0.0, -torch.inf, 0.0, -torch.inf]]])     # half of the mass moved
    assert compare(a, c, 0, 0.0)["tv_vs_fp32"] == pytest.approx(0.5)
    assert compare(a, c, 0, 0.0)["top1_agreement"] == 1.0


def test_the_sampler_leaves_the_callers_model_as_it_is():
    var, vae = small_var(), small_vae()
    before = {k: v.clone() for k, v in var.state_dict().items()}
    with pytest.warns(UserWarning, match="further from float32"):
        lean = LeanSampler(var, vae, precision="bf16")
    lean.generate(torch.tensor([0, 1]), var.subnet(2, 3), top_k=4, decode=False)
    after = var.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert next(lean.var.blocks.parameters()).dtype == torch.bfloat16
    assert lean.var is not var and not any(a is b for a, b in zip(lean.var.parameters(), var.parameters()))


def test_precisions_keep_their_dtypes():
    var, vae = small_var(), small_vae()
    lean = LeanSampler(var, vae, precision="fp16")
    assert {p.dtype for p in lean.var.blocks.parameters()} == {torch.float16}
    assert lean.var.head.weight.dtype == lean.var.word_embed.weight.dtype == torch.float32
    assert lean.dtype == torch.float16                      # the KV cache
    with pytest.raises(ValueError, match="precision must be one of"):
        LeanSampler(var, vae, precision="fp8")


def test_forced_tokens_are_taken_as_given():
    var, vae = small_var(), small_vae()
    labels = torch.tensor([0, 1])
    free = generate(var, vae, labels, top_k=1, decode=False)
    forced = [torch.zeros_like(t) for t in free.tokens]
    for out in (generate(var, vae, labels, decode=False, forced_tokens=forced),
                LeanSampler(var, vae).generate(labels, decode=False, forced_tokens=forced)):
        assert all(torch.equal(a, b) for a, b in zip(out.tokens, forced))


def test_bench_precision_orders_the_modes(one_thread):
    """On a CPU the reference mode and lean fp32 are float32: no distance beyond rounding;
    bf16 rounding moves the distribution measurably."""
    var, vae = small_var(depth=4), small_vae()
    with torch.no_grad():
        var.head.weight.mul_(8.0)
    with pytest.warns(UserWarning):
        rows = pd.DataFrame(measure_precision(var, vae, [var.subnet(), var.subnet(2, 3)], batch=3,
                                              modes=["reference", "lean-fp32", "lean-bf16"],
                                              top_k=20, top_p=0.9, log=lambda s: None))
    assert len(rows) == 2 * 3 * var.num_scales
    assert set(rows["scale"]) == set(range(1, var.num_scales + 1))
    worst = rows.groupby("mode")["tv_vs_fp32"].max()
    assert worst["reference"] < 1e-4 and worst["lean-fp32"] < 1e-4
    assert worst["lean-bf16"] > 10 * worst["lean-fp32"]
    assert set(PRECISIONS) >= {"fp16", "fp32", "bf16"}
