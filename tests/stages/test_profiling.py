"""The lean sampler against the reference one, and the profiling stage's rows."""
import copy

import pandas as pd
import pytest
import torch

from conftest import GOLDEN_SETS, small_vae, small_var
from variant.models.checkpoint import build_vae, build_var
from variant.costmodel import KVAccounting, VARShape, kv_cache_bytes, kv_cache_mib, tokens_per_layer
from variant.golden import load_golden
from variant.stages.profile import COLUMNS, profile_code, profile_config, write_rows
from variant.util.provenance import device_name
from variant.sampling import ConcatKVCache, LeanSampler, generate
from variant.models.supernet import Subnet

CUDA = torch.cuda.is_available()
SUBNETS = [(None, None), (2, 2), (3, 4), (2, 1), (4, 0), (6, 3)]


def shape_of(var):
    return VARShape(depth=var.depth, width=var.width, num_heads=var.num_heads, patch_nums=var.patch_nums)


def same_tokens(a, b):
    return len(a) == len(b) and all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(a, b))


@pytest.mark.parametrize("golden", GOLDEN_SETS, ids=lambda p: p.name)
def test_lean_equals_reference_on_the_golden_vectors(golden):
    config, var_sd, vae_sd, vec = load_golden(golden)
    var = build_var(var_sd).eval()
    vae = build_vae(vae_sd, var.patch_nums).eval()
    lean = LeanSampler(var, vae)
    for d, n in config["subnets"]:
        ref = vec["infer"][f"d{d}_N{n}"]
        out = lean.generate(vec["label"], var.subnet(d, n), cfg=config["cfg"], top_k=1, record_logits=True)
        assert same_tokens(out.tokens, ref["tokens"]), (d, n)
        for a, b in zip(out.cfg_logits, ref["cfg_logits"]):
            assert torch.allclose(a, b, atol=1e-4)
        assert torch.allclose(out.images, ref["img"], atol=1e-4)


@pytest.mark.parametrize("d, n", SUBNETS)
def test_lean_greedy_tokens_equal_reference(d, n):
    var, vae = small_var(), small_vae()
    labels = torch.tensor([0, 1, 2, 3, 4])
    subnet = var.subnet(d, n)
    ref = generate(var, vae, labels, subnet, top_k=1, decode=False)
    lean = generate(var, vae, labels, subnet, top_k=1, decode=False, mode="lean")
    assert same_tokens(ref.tokens, lean.tokens)
    assert torch.allclose(ref.f_hat, lean.f_hat, atol=1e-5)
    concat = LeanSampler(var, vae, last_scale="concat").generate(labels, subnet, top_k=1, decode=False)
    assert same_tokens(ref.tokens, concat.tokens)


def test_one_lean_sampler_switches_configurations_without_reload():
    var, vae = small_var(shared_aln=True), small_vae()
    lean = LeanSampler(var, vae, max_plans=2)
    labels = torch.tensor([1, 2])
    subnets = [var.subnet(2, 2), var.subnet(), Subnet.on_scales(var.depth, 3, {1, 2}, var.num_scales),
               var.subnet(2, 2)]
    for s in subnets:
        ref = generate(var, vae, labels, s, top_k=1, decode=False)
        assert same_tokens(ref.tokens, lean.generate(labels, s, top_k=1, decode=False).tokens)
    assert len(lean.plans) == 2


@pytest.mark.parametrize("d, n", SUBNETS)
def test_lean_cache_bytes_from_first_principles(d, n):
    """2 tensors (k, v) x rows (2B for CFG) x width x element size, for every stored token:
    each scale a layer runs, except the last scale, which no layer stores."""
    var, vae = small_var(), small_vae()
    B, subnet = 3, var.subnet(d, n)
    out = LeanSampler(var, vae).generate(torch.tensor([0, 1, 2]), subnet, top_k=1, decode=False)
    last = var.patch_nums[-1] ** 2
    stored = [sum(p * p for k, p in enumerate(var.patch_nums) if subnet.runs(i, k)) - (last if subnet.runs(i, var.num_scales - 1) else 0)
              for i in range(var.depth)]
    assert out.kv_tokens_per_layer == stored == tokens_per_layer(shape_of(var), subnet, last_scale=False)
    elem = next(var.parameters()).element_size()
    assert out.kv_bytes == sum(stored) * 2 * (2 * B) * var.width * elem
    lean_fp32 = KVAccounting(key_bytes=elem, value_bytes=elem, last_scale="none")
    assert out.kv_bytes == kv_cache_bytes(shape_of(var), subnet, B, lean_fp32)


@pytest.mark.parametrize("d, n", [(None, None), (2, 2)])
def test_reference_cache_bytes_follow_the_reference_accounting(d, n):
    """Every layer keeps every scale it ran, the last included; the element sizes are the
    cache's own (on CUDA under fp16 autocast: float32 keys, float16 values, checked below)."""
    var, vae = small_var(), small_vae()
    caches = []
    def make():
        caches.append(ConcatKVCache())
        return caches[-1]
    subnet = var.subnet(d, n)
    out = generate(var, vae, torch.tensor([0, 1]), subnet, top_k=1, decode=False, make_cache=make)
    acc = KVAccounting(key_bytes=caches[0].k.element_size(), value_bytes=caches[0].v.element_size())
    assert out.kv_bytes == kv_cache_bytes(shape_of(var), subnet, 2, acc)
    assert out.kv_tokens_per_layer == tokens_per_layer(shape_of(var), subnet)


def test_code_prefill_equals_one_model_sampling():
    """Drafting n scales and prefilling them into a model gives the model's own greedy
    tokens when drafter and refiner are the same model, in both modes."""
    var, vae = small_var(), small_vae()
    labels = torch.tensor([0, 3])
    full = generate(var, vae, labels, top_k=1, decode=False)
    for mode in ("reference", "lean"):
        draft = generate(var, vae, labels, top_k=1, decode=False, stop=3, mode=mode)
        rest = generate(var, vae, labels, top_k=1, decode=False, prefix=draft.tokens, mode=mode)
        assert same_tokens(draft.tokens + rest.tokens, full.tokens), mode


def test_lean_top_k_top_p_sampling_keeps_the_nucleus():
    from variant.sampling import sample_tokens_sorted
    logits = torch.tensor([[[5.0, 4.0, 1.0, 0.0, -1.0]]]).expand(1, 4000, 5)
    gen = torch.Generator().manual_seed(0)
    idx = sample_tokens_sorted(logits, top_k=4, top_p=0.9, generator=gen)
    counts = torch.bincount(idx.flatten(), minlength=5).float() / idx.numel()
    p = torch.tensor([5.0, 4.0]).softmax(0)   # 0.73 + 0.27 >= 0.9 after two tokens
    assert counts[2:].sum() == 0
    assert torch.allclose(counts[:2], p, atol=0.03)


def test_profile_rows_and_parquet_schema(tmp_path):
    var, vae = small_var(), small_vae()
    rows = [profile_config(var, vae, var.subnet(2, 2), 2, "reference", repeats=2, warmup=1)]
    rows.append(profile_config(copy.deepcopy(var), vae, var.subnet(2, 2), 2, "lean", repeats=2, warmup=1))
    rows.append(profile_code(small_var(), small_var(depth=3, seed=1), vae, 3, 2, "reference", repeats=1, warmup=0))
    for r in rows:
        assert set(COLUMNS) <= set(r) and not r["oom"] and r["latency_s"] > 0
        assert {"git_commit", "torch_version", "seed"} <= set(r)
        assert r["kv_mib"] == pytest.approx(r["kv_mib_costmodel"]) if r["method"] != "code" or r["mode"] == "reference" else True
    ref, lean = rows[0], rows[1]
    assert ref["kv_mib"] * 2**20 == kv_cache_bytes(shape_of(var), var.subnet(2, 2), 2, KVAccounting(4, 4))
    assert lean["kv_mib"] * 2**20 == kv_cache_bytes(shape_of(var), var.subnet(2, 2), 2, KVAccounting(4, 4, "none"))
    out = tmp_path / "p" / "prof.parquet"
    write_rows(rows[:1], out)
    df = write_rows(rows[1:], out, append=True)
    back = pd.read_parquet(out)
    assert len(back) == 3 and list(back.columns) == list(df.columns)
    assert back["oom"].dtype == bool and back["batch"].dtype.kind == "i"
    assert not list(tmp_path.glob("p/.*tmp"))


def test_an_oom_becomes_a_row(monkeypatch):
    var, vae = small_var(), small_vae()
    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr("variant.stages.profile.generate", boom)
    row = profile_config(var, vae, None, 4, "reference", memory_cap_gib=48)
    assert row["oom"] and row["latency_s"] != row["latency_s"] and row["memory_cap_gib"] == 48
    assert "out of memory" in row["error"]


def test_other_errors_are_not_swallowed(monkeypatch):
    var, vae = small_var(), small_vae()
    monkeypatch.setattr("variant.stages.profile.generate", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        profile_config(var, vae, None, 4, "reference")


def test_bench_cli_writes_parquet(tmp_path, monkeypatch):
    import argparse
    from variant.bench import sample as bench_sample
    parser = argparse.ArgumentParser()
    bench_sample.add_parser(parser.add_subparsers(dest="command"))
    main = lambda argv: (lambda a: a.func(a))(parser.parse_args(argv))
    monkeypatch.setattr(bench_sample, "random_var", lambda depth, device, seed=0, **kw: small_var(depth=depth, seed=seed))
    monkeypatch.setattr(bench_sample, "random_vae", lambda device, seed=0, **kw: small_vae())
    out = tmp_path / "cpu.parquet"
    assert main(["bench", "sample", "--depth", "6", "--batch", "2", "--subnet-depth", "6", "2",
                     "--bridge", "2", "--config", "3:4", "--modes", "lean", "reference", "--code", "3",
                     "--code-refiner-depth", "3", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                     "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert list(df["mode"]) == ["reference"] * 4 + ["lean"] * 4              # reference first
    assert list(df["config"][:4]) == ["full", "d2_N2", "d3_N4", "code_d6x3+d3x2"]
    assert not df["oom"].any()
    assert (df["gpu"] == device_name("cpu")).all()   # the quality rows' name of the device


def test_the_stage_sweeps_what_params_ask_for(tmp_path):
    """The profile stage: params `profiling` and the sample/train sections say what is
    measured; every row records the profile and its params hash."""
    from variant.config import load_params
    from variant.models.checkpoint import save_state_dict
    from variant.stages.profile import Sweep, run_profile
    P = load_params(profile="tiny", overrides={"model.patch_nums": [1, 2, 3, 4, 5],
                                               "model.var": {"depth": 6, "width": 64, "num_heads": 2},
                                               "train.subnet_depths": [2], "train.bridge": 2,
                                               "sample.bridges": [2, 5], "profiling.batches": [2],
                                               "profiling.repeats": 1})
    plan = Sweep.from_params(P)
    assert (plan.subnet_depths, plan.bridges, plan.batches, plan.repeats) == ((6, 2), (2,), (2,), 1)
    assert (plan.cfg, plan.top_k, plan.seed) == (P["sample"]["cfg"], P["sample"]["top_k"], P["sample"]["seed"])
    save_state_dict(small_var(), tmp_path / "var.pth")
    save_state_dict(small_vae(), tmp_path / "vae.pth")
    out = tmp_path / "profiling.parquet"
    run_profile(P, tmp_path / "var.pth", tmp_path / "vae.pth", out, "cpu")
    df = pd.read_parquet(out)
    assert list(zip(df["mode"], df["config"])) == [(m, c) for m in P["profiling"]["modes"] for c in ("full", "d2_N2")]
    assert (df["profile"] == "tiny").all() and (df["config_hash"] == P["config_hash"]).all()
    assert (df["top_k"] == P["sample"]["top_k"]).all() and set(COLUMNS) <= set(df.columns)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_reference_dtypes_and_lean_graphs():
    """On CUDA: the reference accounting to the byte (fp32 keys, fp16 values under
    autocast); the graph-captured lean pass equals the eager one token for token."""
    from variant.stages.profile import reference_precision
    var, vae = small_var().cuda(), small_vae().cuda()
    labels = torch.tensor([0, 1, 2], device="cuda")
    with reference_precision(torch.device("cuda")):
        ref = generate(var, vae, labels, var.subnet(2, 2), top_k=1, decode=False)
    assert ref.kv_bytes == kv_cache_bytes(shape_of(var), var.subnet(2, 2), 3)
    eager = LeanSampler(var, vae, cuda_graphs=False).generate(labels, var.subnet(2, 2), top_k=1, decode=False)
    graph = LeanSampler(var, vae).generate(labels, var.subnet(2, 2), top_k=1, decode=False)
    assert same_tokens(eager.tokens, graph.tokens)
    assert eager.kv_bytes == kv_cache_mib(shape_of(var), 2, 2, 3, "lean") * 2**20   # bf16


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_memory_cap_gives_an_oom_row():
    var, vae = small_var().cuda(), small_vae().cuda()
    row = profile_config(var, vae, None, 4096, "reference", memory_cap_gib=0.05, repeats=1, warmup=0)
    assert row["oom"]
    assert profile_config(var, vae, None, 2, "reference", repeats=1, warmup=0)["oom"] is False


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_fused_kernels_and_split_attention():
    """The Triton kernels, the log-sum-exp merge and the matmul upsampling compute what
    the reference does: float32 lean on CUDA (graphs and all) gives its greedy tokens.
    TF32 off: with it, cuDNN's convolutions round inputs that differ in the last bits
    differently (f_hat then differs by ~2e-4)."""
    from variant.sampling import tf32
    with tf32(False):   # restores both flags (monkeypatch cannot: cuBLAS's is no attribute)
        _fused_kernels_and_split_attention()


def _fused_kernels_and_split_attention():
    from variant.sampling import attend_split
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        q, k, v = (torch.randn(4, 6, n, 64, device="cuda", dtype=dtype) for n in (37, 101, 101))
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=2.0)
        for fused in (False, True):
            out = attend_split(q, k[:, :, :64], v[:, :, :64], k[:, :, 64:], v[:, :, 64:], 2.0, fused)
            assert out.shape == ref.shape
            assert (out.float() - ref.float()).abs().max() < (2e-2 if dtype == torch.bfloat16 else 1e-5)
    labels = torch.tensor([0, 1, 2, 3], device="cuda")
    for d, n in [(None, None), (2, 2), (3, 4)]:
        var, vae = small_var().cuda(), small_vae().cuda()
        ref = generate(var, vae, labels, var.subnet(d, n), top_k=1, decode=False)
        lean = LeanSampler(var, vae, precision="fp32").generate(labels, var.subnet(d, n), top_k=1, decode=False)
        assert same_tokens(ref.tokens, lean.tokens), (d, n)
        assert torch.allclose(ref.f_hat, lean.f_hat, atol=1e-4)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("golden", GOLDEN_SETS, ids=lambda p: p.name)
def test_cuda_golden_sets_hold_for_both_samplers(golden):
    """verify-golden --device cuda: the reference loop and the float32 lean sampler (eager
    and graph-replayed) give the reference's tokens, logits, f_hat and images on CUDA."""
    from variant.golden import format_checks, verify_golden
    checks = verify_golden(golden, device="cuda")
    assert all(c.ok for c in checks), format_checks(checks)
    assert any(c.name.endswith("tokens, CUDA graph") for c in checks)
