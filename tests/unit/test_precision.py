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
        LeanSampler(var, vae, precision="int4")


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


def test_fp8_rows_are_scaled_to_the_e4m3_range():
    """Each row's largest magnitude lands on e4m3's largest value (448), and q * s is x to
    e4m3's 3 mantissa bits: relative error 2^-4 at most, or the subnormal step 2^-9 x s."""
    from variant.sampling.kernels import FP8, quantize_rows
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 64, generator=g) * torch.logspace(-3, 3, 6).unsqueeze(1)
    q, s = quantize_rows(x)
    assert q.dtype == FP8 and s.shape == (6, 1)
    assert torch.equal(q.float().abs().amax(1), torch.full((6,), 448.0))
    torch.testing.assert_close(s.squeeze(1), x.abs().amax(1) / 448)
    err = (q.float() * s - x).abs()
    assert (err <= x.abs() * 2**-4 + s * 2**-9).all()
    qg, sg = quantize_rows(x, gelu=True)
    qr, sr = quantize_rows(torch.nn.functional.gelu(x, approximate="tanh"))
    assert torch.equal(qg.float(), qr.float()) and torch.equal(sg, sr)


def test_fp8_linear_multiplies_the_quantised_operands():
    from variant.sampling.fp8 import Fp8Linear
    from variant.sampling.kernels import quantize_rows
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(2, 5, 64)
    f = Fp8Linear(lin)
    y = f(x)
    assert y.shape == (2, 5, 32) and y.dtype == torch.bfloat16
    xq, xs = quantize_rows(x.reshape(-1, 64))
    wq, ws = quantize_rows(lin.weight.detach())
    bf16 = lambda t: t.detach().bfloat16().float()   # noqa: E731 - the bias is kept in the output dtype
    exact = (xq.float() * xs) @ (wq.float() * ws).t() + bf16(lin.bias)
    torch.testing.assert_close(y.float(), exact.view(2, 5, 32), rtol=2**-8, atol=1e-5)   # bf16 output rounding
    rel = (y.float() - lin(x)).norm() / lin(x).norm()
    assert 1e-3 < rel < 0.1          # fp8's operand rounding: visible, and a few percent at most
    bias = torch.randn(32)
    torch.testing.assert_close(f(x, bias).float(), (exact - bf16(lin.bias) + bf16(bias)).view(2, 5, 32),
                               rtol=2**-8, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 16"):
        Fp8Linear(torch.nn.Linear(64, 24))


def test_fp8_precision_samples_with_fp8_linears_and_costs_more_than_bf16(one_thread):
    """The opt-in fp8 mode: its own sampling copy with every block Linear in e4m3, a warning,
    and a distance to float32 above the bf16-matmul mode's (same stream and head)."""
    from variant.sampling.fp8 import Fp8Linear
    var, vae = small_var(depth=4), small_vae()
    with torch.no_grad():
        var.head.weight.mul_(8.0)
    with pytest.warns(UserWarning, match="fp8"):
        lean = LeanSampler(var, vae, precision="fp8")
    b = lean.var.blocks[0]
    assert all(isinstance(m, Fp8Linear) for m in (b.attn.mat_qkv, b.attn.proj, b.ffn.fc1, b.ffn.fc2))
    out = lean.generate(torch.tensor([0, 1]), var.subnet(2, 3), top_k=4, decode=True)
    assert out.images.shape == (2, 3, 10, 10) and torch.isfinite(out.images).all()
    with pytest.warns(UserWarning):
        rows = pd.DataFrame(measure_precision(var, vae, [var.subnet()], batch=3,
                                              modes=["lean-fp32", "lean-bf16-fp32", "lean-fp8"],
                                              top_k=20, top_p=0.9, log=lambda s: None))
    worst = rows.groupby("mode")["tv_vs_fp32"].max()
    assert worst["lean-fp8"] > worst["lean-bf16-fp32"] > 10 * worst["lean-fp32"]


def test_fp8_needs_an_fp8_gpu(monkeypatch):
    from variant.sampling.fp8 import check_fp8_device
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ValueError, match="A100 is 8.0"):
        check_fp8_device(torch.device("cuda"))
    check_fp8_device(torch.device("cpu"))     # emulated there
