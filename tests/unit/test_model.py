"""Train/infer consistency of the supernet and the model's structure."""
import pytest
import torch

from conftest import PATCH_NUMS, small_vae, small_var
from variant.costmodel import VARShape, parameter_count
from variant.models import VAR
from variant.sampling import generate
from variant.models.supernet import Subnet


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def teacher_logits(var, vae, labels, tokens, subnet):
    """Cond and no-class logits of the teacher-forced forward on the sampled tokens."""
    var_input = vae.quantize.teacher_forcing_input(tokens)
    with torch.no_grad():
        cond = var(labels, var_input, subnet)
        uncond = var(torch.full_like(labels, var.num_classes), var_input, subnet)
    return torch.cat((cond, uncond))


SUBNETS = {
    "full": lambda var: var.subnet(),
    "d2_N2": lambda var: var.subnet(2, 2),
    "d3_N4": lambda var: var.subnet(3, 4),
    "d4_N1": lambda var: var.subnet(4, 1),
    "skip_all": lambda var: var.subnet(2, 0),
    "early_scales": lambda var: Subnet.on_scales(var.depth, 3, {0, 1}, var.num_scales),
    "middle_scales": lambda var: Subnet.on_scales(var.depth, 2, {2, 3}, var.num_scales),
}


@pytest.mark.parametrize("attention", ["masked", "per_scale", "flex"])
@pytest.mark.parametrize("shared_aln", [False, True])
@pytest.mark.parametrize("which", SUBNETS)
def test_teacher_forcing_equals_sampler(which, shared_aln, attention):
    """The logits the sampler computes scale by scale with its KV cache equal those of the
    one-pass teacher-forced forward on the same tokens, for full depth and subnets
    (including Table 1's subnet on early or middle scales), with either attention."""
    var, vae = small_var(shared_aln=shared_aln, attention=attention), small_vae()
    subnet = SUBNETS[which](var)
    labels = torch.tensor([0, 3, 4])
    gen = torch.Generator().manual_seed(1)
    out = generate(var, vae, labels, subnet, cfg=2.0, top_k=8, top_p=0.9, generator=gen,
                   decode=False, record_logits=True)
    tf = teacher_logits(var, vae, labels, out.tokens, subnet)
    for k, (a, b) in enumerate(var.scale_bounds):
        assert torch.allclose(out.raw_logits[k], tf[:, a:b], atol=1e-5), f"scale {k}"


@pytest.mark.parametrize("which", ["full", "d3_N4"])
def test_attention_implementations_agree_in_training(which):
    """One call per scale, FlexAttention (CUDA: it has no CPU backward) and one masked
    call give the same gradients."""
    vae, ref = small_vae(), small_var()
    subnet = SUBNETS[which](ref)
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, vae.quantize.vocab_size, (2, p * p), generator=g) for p in ref.patch_nums]
    with torch.no_grad():
        x = vae.quantize.teacher_forcing_input(tokens)
    labels, target = torch.tensor([1, 2]), torch.cat(tokens, 1)
    grads = {}
    attentions = ("masked", "per_scale", "flex") if torch.cuda.is_available() else ("masked", "per_scale")
    x, labels, target = x.to(DEVICE), labels.to(DEVICE), target.to(DEVICE)
    for attention in attentions:
        var = small_var(attention=attention).to(DEVICE)   # seeded: the same weights each time
        logits = var(labels, x, subnet)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
        grads[attention] = [p.grad for p in var.parameters() if p.grad is not None]
    assert len(grads["per_scale"]) == len(grads["masked"]) > 0
    for other in attentions[1:]:
        for a, b in zip(grads[other], grads["masked"]):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), other


def test_subnets_compute_different_things():
    """Guards the test above: a subnet's logits differ from the full model's."""
    var, vae = small_var(), small_vae()
    labels = torch.tensor([1, 2])
    tokens = generate(var, vae, labels, top_k=4, generator=torch.Generator().manual_seed(0), decode=False).tokens
    full = teacher_logits(var, vae, labels, tokens, var.subnet())
    sub = teacher_logits(var, vae, labels, tokens, var.subnet(2, 2))
    n_bridge = var.scale_bounds[1][1]
    assert torch.allclose(full[:, :n_bridge], sub[:, :n_bridge], atol=1e-6)   # bridge: all layers
    assert (full[:, n_bridge:] - sub[:, n_bridge:]).abs().max() > 1e-2         # flexible: subnet


def test_skipped_layers_cache_only_bridge_tokens():
    var, vae = small_var(depth=6), small_vae()
    out = generate(var, vae, torch.tensor([0]), var.subnet(2, 3), top_k=1, decode=False)
    bridge, total = 1 + 4 + 9, var.L
    assert out.kv_tokens_per_layer == [total, bridge, bridge, bridge, bridge, total]


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    var, vae = small_var(), small_vae()
    labels = torch.tensor([0, 1, 2, 3])
    run = lambda s: generate(var, vae, labels, top_k=16, top_p=0.95,
                             generator=torch.Generator().manual_seed(s)).images
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_depth_switch_needs_no_reload():
    """One model object samples every (d, N); its weights are untouched by switching."""
    var, vae = small_var(), small_vae()
    before = {k: v.clone() for k, v in var.state_dict().items()}
    for d, N in [(2, 2), (4, 3), (None, None), (2, 2)]:
        generate(var, vae, torch.tensor([0]), var.subnet(d, N), top_k=1, decode=False)
    assert all(torch.equal(before[k], v) for k, v in var.state_dict().items())


def test_class_dropout_uses_the_no_class_row():
    var, vae = small_var(), small_vae()
    tokens = generate(var, vae, torch.tensor([1, 2]), top_k=1, decode=False).tokens
    x = vae.quantize.teacher_forcing_input(tokens)
    var.cond_drop_rate = 1.0
    var.train()
    dropped = var(torch.tensor([1, 2]), x)
    var.eval()
    assert torch.allclose(dropped, var(torch.tensor([5, 5]), x))
    assert not torch.allclose(dropped, var(torch.tensor([1, 2]), x))


@pytest.mark.parametrize("kw", [dict(depth=6), dict(depth=3, shared_aln=True), dict(depth=4, mlp_ratio=2.0)])
def test_parameter_count_matches_cost_model(kw):
    var = small_var(**kw)
    shape = VARShape(depth=var.depth, width=var.width, num_heads=var.num_heads, patch_nums=var.patch_nums,
                     vocab=var.vocab_size, cvae=var.cvae, num_classes=var.num_classes,
                     mlp_ratio=kw.get("mlp_ratio", 4.0), shared_aln=var.shared_aln)
    assert parameter_count(shape) == sum(p.numel() for p in var.parameters())


def test_vqvae_roundtrip_shapes():
    vae = small_vae()
    img = torch.rand(2, 3, vae.image_size, vae.image_size) * 2 - 1
    with torch.no_grad():
        tokens = vae.img_to_tokens(img)
        assert [t.shape for t in tokens] == [(2, p * p) for p in vae.patch_nums]
        x = vae.quantize.teacher_forcing_input(tokens)
        assert x.shape == (2, sum(p * p for p in vae.patch_nums[1:]), vae.Cvae)
        rec = vae.tokens_to_img(tokens)
    assert rec.shape == img.shape and rec.min() >= -1 and rec.max() <= 1



def test_teacher_forcing_bicubic_as_a_matmul():
    """Training builds its input with the bicubic step as a matmul: the reference's values."""
    vae = small_vae()
    H = vae.patch_nums[-1]
    g = torch.Generator().manual_seed(0)
    for k, pn in enumerate(vae.patch_nums):
        idx = torch.randint(0, vae.vocab_size, (3, pn * pn), generator=g)
        fast, ref = vae.quantize.upsampled_by_matmul(idx, k, H), vae.quantize.upsampled(idx, k, H)
        assert fast.shape == ref.shape == (3, vae.quantize.channels, H, H)
        assert torch.allclose(fast, ref, atol=1e-6), k


# ---- stochastic depth (drop-path) ---------------------------------------------------

def test_drop_path_is_the_identity_outside_training():
    """Eval mode (the sampler's) gives exactly the outputs of the same weights without
    drop-path, teacher-forced and sampled; in training the rate does change the output."""
    var, dropping = small_var(), small_var(drop_path_rate=0.5)
    assert all(torch.equal(a, b) for a, b in zip(var.state_dict().values(), dropping.state_dict().values()))
    labels = torch.tensor([0, 3, 4])
    gen = lambda m: generate(m, small_vae(), labels, var.subnet(3, 2), top_k=8,  # noqa: E731
                             generator=torch.Generator().manual_seed(1), decode=False, record_logits=True)
    a, b = gen(var), gen(dropping)
    assert all(torch.equal(s, t) for s, t in zip(a.tokens, b.tokens))
    assert all(torch.equal(x, y) for x, y in zip(a.raw_logits, b.raw_logits))
    x = small_vae().quantize.teacher_forcing_input(a.tokens)
    for subnet in (None, var.subnet(3, 2)):
        with torch.no_grad():
            assert torch.equal(var(labels, x, subnet), dropping(labels, x, subnet))
    for m in (var, dropping):
        m.train().cond_drop_rate = 0.0
    with torch.no_grad():
        torch.manual_seed(0)
        plain = var(labels, x)
        torch.manual_seed(0)
        assert torch.equal(var(labels, x), plain)           # rate 0: nothing random in training
        torch.manual_seed(0)
        assert not torch.allclose(dropping(labels, x), plain)


def test_drop_path_rate_rises_linearly_over_the_blocks():
    """Block i drops with linspace(0, rate, depth)[i], as the reference: VAR-d30 at its
    0.1 x 30 / 24 = 0.125 (a narrow stand-in: the rates depend on depth only)."""
    rate = 0.1 * 30 / 24
    var = VAR(depth=30, width=32, num_heads=2, vocab_size=16, cvae=4, patch_nums=(1, 2), drop_path_rate=rate)
    got = [b.drop_path for b in var.blocks]
    assert got[0] == 0.0 and got[-1] == rate == 0.125
    assert all(b > a for a, b in zip(got, got[1:]))
    assert got == pytest.approx([rate * i / 29 for i in range(30)], abs=1e-15)
    assert got == pytest.approx(torch.linspace(0, rate, 30).tolist(), abs=1e-8)   # the reference's float32
    var.set_drop_path(0.0)
    assert all(b.drop_path == 0.0 for b in var.blocks)
    with pytest.raises(ValueError, match="outside"):
        var.set_drop_path(1.0)


def block_candidates(block, x, cond, p):
    """The block's output for each (attention kept, FFN kept) pair, computed by hand from
    its parts: a kept branch is scaled by 1 / (1 - p), a dropped one is zero."""
    g1, g2, s1, s2, b1, b2 = block.modulation(cond)
    ln = block.ln_wo_grad
    attn = block.attn(ln(x) * (1 + s1) + b1) * g1
    out = {}
    for keep_attn in (0, 1):
        x1 = x + keep_attn * attn / (1 - p)
        ffn = block.ffn(ln(x1) * (1 + s2) + b2) * g2
        for keep_ffn in (0, 1):
            out[keep_attn, keep_ffn] = x1 + keep_ffn * ffn / (1 - p)
    return out


def matched_masks(out, candidates):
    """Per sample, the one (attention kept, FFN kept) pair whose hand-computed output it is."""
    hits = torch.stack([(out - c).abs().amax(dim=(1, 2)) < 1e-9 for c in candidates.values()], 1)
    assert (hits.sum(1) == 1).all(), "a sample matches no (or several) drop patterns"
    return torch.tensor(list(candidates), dtype=torch.float64)[hits.float().argmax(1)]


@pytest.mark.parametrize("compiled", [False, True])
def test_drop_path_drops_whole_samples_at_rate_p(compiled):
    """Training mode, p = 0.4 (so 1/(1-p) and 1/p differ): every sample's output is exactly
    one of the four hand-computed keep/drop combinations of its two branches, across all
    its tokens; each branch is dropped for a fraction p of the samples (binomial bound)
    and the two branches independently. compiled: traced by torch.compile in one graph."""
    from variant.models.var import AdaLNBlock
    torch.manual_seed(0)
    N, L, C, p = 4000, 3, 16, 0.4
    block = AdaLNBlock(C, 2, drop_path=p).double()
    with torch.no_grad():   # gates and shifts of a trained model's size, so every branch matters
        for q in block.parameters():
            q.add_(torch.randn_like(q) * 0.2)
    x, cond = torch.randn(N, L, C, dtype=torch.float64), torch.randn(N, C, dtype=torch.float64)
    run = torch.compile(block, backend="aot_eager", fullgraph=True) if compiled else block
    with torch.no_grad():
        cands = block_candidates(block.eval(), x, cond, p)
        torch.testing.assert_close(run(x, cond), block(x, cond), rtol=0, atol=1e-12)   # eval: the identity
        out = run.train()(x, cond)
    kept = matched_masks(out, cands)
    bound = 5 * (N * p * (1 - p)) ** 0.5                                     # 5 binomial sigmas
    for branch in (0, 1):
        assert abs((kept[:, branch] == 0).sum().item() - N * p) < bound, branch
    both = ((kept[:, 0] == 0) & (kept[:, 1] == 0)).sum().item()
    assert abs(both - N * p * p) < 5 * (N * p * p * (1 - p * p)) ** 0.5


def test_drop_path_leaves_the_checkpoint_keys_alone():
    """Drop-path has no parameters: the same keys, and released files load strictly."""
    from variant.models.checkpoint import build_var
    plain, dropping = small_var(), small_var(drop_path_rate=0.125)
    assert list(plain.state_dict()) == list(dropping.state_dict())
    dropping.load_state_dict(plain.state_dict(), strict=True)
    rebuilt = build_var(plain.state_dict(), "test", drop_path_rate=0.125)
    assert rebuilt.blocks[-1].drop_path == 0.125 and rebuilt.blocks[0].drop_path == 0.0
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), rebuilt.state_dict().values()))


@pytest.mark.parametrize("shared_aln", [False, True])
def test_lean_block_is_the_models_block(shared_aln):
    """The lean path runs the model's own blocks: on the same input, in float32, two lean
    layers (fused residual carried between them) give the AdaLNBlocks' output."""
    from variant.sampling.cache import LeanKVCache
    from variant.sampling.lean import LeanPass, LeanSampler
    var, vae = small_var(depth=4, shared_aln=shared_aln), small_vae()
    lean = LeanSampler(var, vae, precision="fp32", cuda_graphs=False)
    labels = torch.tensor([0, 3, var.num_classes, var.num_classes])
    cond, cond_blocks = var.condition(labels)
    x = torch.randn(4, 9, var.width)
    with torch.no_grad():
        want = var.blocks[1](var.blocks[0](x, cond_blocks), cond_blocks)
        lean_pass = LeanPass(lean, LeanKVCache([9, 9, 0, 0], 4, var.num_heads, var.width // var.num_heads,
                                               torch.float32, "cpu"))
        lean_pass.condition(*lean.var.condition(labels), [0, 1])
        got = lean_pass.layers([0, 1], [x.clone()], store=True)
        # the last scale (store=False) attends to the same keys without keeping them
        lean_pass.cache.reset()
        last = lean_pass.layers([0, 1], [x.clone()], store=False)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(last, want, atol=1e-5) and lean_pass.cache.tokens == [0, 0, 0, 0]


def test_the_model_owns_the_terms_the_lean_path_reuses():
    """Modulation (+1 included), the qkv bias and the capped temperature come from one place."""
    var = small_var(depth=2)
    block, cond = var.blocks[0], torch.randn(3, var.width)
    g1, g2, s1, s2, b1, b2 = block.modulation(cond)
    m = block.ada_terms(cond)
    assert torch.equal(m.scale1, s1 + 1) and torch.equal(m.shift2, b2) and torch.equal(m.gamma2, g2)
    assert torch.equal(block.attn.qkv_bias()[var.width:2 * var.width], torch.zeros(var.width))
    with torch.no_grad():
        block.attn.scale_mul_1H11.fill_(10.0)   # e^10 > 100: capped
    assert torch.allclose(block.attn.temperature(), torch.full((1, var.num_heads, 1, 1), 100.0))


@pytest.mark.parametrize("mode", ["reference", "lean"])
def test_requests_that_cannot_be_sampled_are_refused(mode):
    var, vae = small_var(depth=4), small_vae()
    labels = torch.tensor([0])
    tokens = generate(var, vae, labels, top_k=1, decode=False).tokens
    with pytest.raises(ValueError, match="another model"):
        generate(var, vae, labels, Subnet.full(6, var.num_scales), mode=mode)
    with pytest.raises(ValueError, match="cannot sample scales"):
        generate(var, vae, labels, stop=var.num_scales + 1, mode=mode)
    with pytest.raises(ValueError, match="cannot sample scales"):
        generate(var, vae, labels, prefix=tokens, mode=mode)              # nothing left to sample
    with pytest.raises(ValueError, match="one layer set"):                # scale 1 runs 2 layers
        generate(var, vae, labels, var.subnet(2, 1), prefix=tokens[:2], mode=mode)


def test_compiled_blocks_do_not_recompile_per_drop_path_rate():
    """Each block has its own rate (linear over depth); torch.compile must not specialise on
    it: one graph for the first block (rate 0, no mask) and one for all the others. Once
    past torch's recompile limit (8) the remaining blocks would silently run uncompiled."""
    import torch._dynamo.testing
    torch._dynamo.reset()
    var = VAR(depth=10, width=32, num_heads=2, num_classes=4, vocab_size=16, cvae=4, patch_nums=(1, 2, 3),
              drop_path_rate=0.1).train()
    counter = torch._dynamo.testing.CompileCounter()
    for block in var.blocks:
        block.compile(backend=counter)
    var(torch.tensor([0, 1]), torch.randn(2, var.L - var.first_l, 4)).sum().backward()
    assert len({b.drop_path for b in var.blocks}) == 10
    assert counter.frame_count == 2


def test_images_are_decoded_in_parts_as_one_batch_would_be():
    """decode_images bounds the decoder's memory by DECODE_BATCH images at a time; each
    image's pixels do not depend on the others in its batch."""
    from variant.sampling import loop
    vae = small_vae()
    n = 2 * loop.DECODE_BATCH + 3                       # two full parts and a short one
    f_hat = torch.randn(n, vae.Cvae, PATCH_NUMS[-1], PATCH_NUMS[-1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.fhat_to_img(f_hat).add(1).mul(0.5)
        parts = loop.decode_images(vae, f_hat)
    assert parts.shape == whole.shape
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)


def test_an_unknown_attention_is_refused_when_the_model_is_built():
    with pytest.raises(ValueError, match="attention must be one of masked, per_scale, flex, got 'dense'"):
        small_var(attention="dense")


def test_decode_under_autocast_as_the_reference_and_leave_the_callers_autocast_alone():
    """A dtype decodes under autocast (on a CPU bf16 stands in for CUDA's fp16): float32 out,
    near the float32 decode; no dtype keeps the caller's context, also an autocast one."""
    from variant.sampling import PRECISIONS, loop
    vae = small_vae()
    f_hat = torch.randn(3, vae.Cvae, PATCH_NUMS[-1], PATCH_NUMS[-1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = loop.decode_images(vae, f_hat)
        half = loop.decode_images(vae, f_hat, torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outer = loop.decode_images(vae, f_hat)
    assert half.dtype == outer.dtype == torch.float32
    assert 0 < (half - exact).abs().max() < 0.05
    torch.testing.assert_close(outer, half, rtol=0, atol=0)
    assert PRECISIONS["fp32"].decode is None and PRECISIONS["fp16"].decode == torch.float16
