"""The multi-scale residual VQVAE tokenizer of VAR, in the reference key layout.

Encoder/decoder are latent-diffusion's "vq-f16" convnets; the quantizer turns a
feature map into K token maps of growing size (patch_nums), each one quantising what
the coarser ones left over. Module and parameter names match the released
`vae_ch160v4096z32.pth`, so it loads with strict=True.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with one fused 1x1 qkv conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):  # asymmetric padding, as in the checkpoints' training code
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: res-blocks, optional attention, resampling."""

    def __init__(self, cin, cout, num_blocks, attn: bool, resample: type | None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout) for i in range(num_blocks))
        self.attn = nn.ModuleList(AttnBlock(cout) for _ in range(num_blocks)) if attn else nn.ModuleList()
        if resample is not None:
            setattr(self, "downsample" if resample is Downsample else "upsample", resample(cout))

    def forward(self, h):
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        if hasattr(self, "downsample"):
            h = self.downsample(h)
        if hasattr(self, "upsample"):
            h = self.upsample(h)
        return h


class Mid(nn.Module):
    def __init__(self, channels: int, attn: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels) if attn else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, using_sa=True, using_mid_sa=True):
        super().__init__()
        n = len(ch_mult)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        chans = [ch] + [ch * m for m in ch_mult]
        self.down = nn.ModuleList(
            Level(chans[i], chans[i + 1], num_res_blocks, attn=using_sa and i == n - 1,
                  resample=Downsample if i < n - 1 else None)
            for i in range(n))
        self.mid = Mid(chans[-1], using_mid_sa)
        self.norm_out = group_norm(chans[-1])
        self.conv_out = nn.Conv2d(chans[-1], z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, using_sa=True, using_mid_sa=True):
        super().__init__()
        n = len(ch_mult)
        top = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = Mid(top, using_mid_sa)
        # up[i] works at the resolution of down[i]; it is run from i = n-1 down to 0.
        cin = [ch * ch_mult[min(i + 1, n - 1)] for i in range(n)]
        self.up = nn.ModuleList(
            Level(cin[i], ch * ch_mult[i], num_res_blocks + 1, attn=using_sa and i == n - 1,
                  resample=Upsample if i > 0 else None)
            for i in range(n))
        self.norm_out = group_norm(ch * ch_mult[0])
        self.conv_out = nn.Conv2d(ch * ch_mult[0], 3, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) * h + r * conv3x3(h), r = 0.5: the residual refiner of each scale."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__(channels, channels, 3, padding=1)
        self.ratio = ratio

    def forward(self, h):
        return h.mul(1 - self.ratio) + super().forward(h).mul(self.ratio)


class SharedPhi(nn.Module):
    """`share` phi convs serve all K scales: scale ratio k/(K-1) picks the conv whose tick
    is nearest, exactly as the released checkpoints were trained. The ticks are float64
    (numpy's linspace) and the first of two equally near ticks wins (numpy's argmin): with
    10 scales the ratios 2/9 and 7/9 sit on midpoints, and float32 ticks pick other convs."""

    def __init__(self, channels: int, share: int):
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(channels) for _ in range(share))
        margin = 1 / (3 * share) if share == 4 else 1 / (2 * share)
        self.ticks = np.linspace(margin, 1 - margin, share)

    def index(self, ratio: float) -> int:
        return int(np.argmin(np.abs(self.ticks - ratio)))

    def forward(self, h, ratio: float):
        return self.qresi_ls[self.index(ratio)](h)


def bicubic_matrix(pn: int, size: int, device=None) -> torch.Tensor:
    """Bicubic upsampling of a pn x pn map to size x size as a (pn^2, size^2) matrix.
    Upsampling is linear, and one small matmul is much faster on a GPU than torch's
    bicubic kernel, which runs one thread per output pixel."""
    eye = torch.eye(pn * pn, device=device).view(-1, 1, pn, pn)
    return F.interpolate(eye, size=(size, size), mode="bicubic").view(pn * pn, size * size)


class MultiScaleQuantizer(nn.Module):
    def __init__(self, vocab_size: int, channels: int, patch_nums, share_quant_resi: int = 4):
        super().__init__()
        self.vocab_size, self.channels = vocab_size, channels
        self.patch_nums = tuple(patch_nums)
        self.embedding = nn.Embedding(vocab_size, channels)
        self.quant_resi = SharedPhi(channels, share_quant_resi)
        # Codebook-usage statistics of VQVAE training; kept so released files load strictly.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self._bicubic = {}   # (pn, size, device, dtype) -> bicubic_matrix, for upsampled_by_matmul

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def ratio(self, k: int) -> float:
        return k / (self.num_scales - 1)

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector (L2) for each row."""
        e = self.embedding.weight
        dist = (z_NC.square().sum(1, keepdim=True) + e.square().sum(1)).addmm_(z_NC, e.T, alpha=-2)
        return dist.argmin(dim=1)

    def upsampled(self, idx_Bl: torch.Tensor, k: int, size: int) -> torch.Tensor:
        """phi_k(upsample(codebook[idx])): what scale k adds to f_hat."""
        pn = self.patch_nums[k]
        h = self.embedding(idx_Bl).transpose(1, 2).reshape(idx_Bl.shape[0], self.channels, pn, pn)
        if pn != size:
            h = F.interpolate(h, size=(size, size), mode="bicubic")
        return self.quant_resi(h, self.ratio(k))

    def f_to_tokens(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Residual quantisation of f (B, C, h, w), coarse to fine: one (B, pn*pn) per scale."""
        B, C, H, W = f.shape
        if self.patch_nums[-1] != H or H != W:
            raise ValueError(f"feature map is {H}x{W} but the last scale is {self.patch_nums[-1]}")
        f_rest, tokens = f.detach().clone(), []
        for k, pn in enumerate(self.patch_nums):
            z = f_rest if pn == H else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
            f_rest -= self.upsampled(idx, k, H)
            tokens.append(idx)
        return tokens

    def tokens_to_fhat(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        H = self.patch_nums[-1]
        f_hat = 0
        for k, idx in enumerate(tokens):
            f_hat = f_hat + self.upsampled(idx, k, H)
        return f_hat

    def upsampled_by_matmul(self, idx_Bl: torch.Tensor, k: int, size: int) -> torch.Tensor:
        """upsampled(), with the bicubic step as a matmul: equal to float rounding, much
        faster on a GPU (training's input, VQVAE pre-training and the lean sampler use it; tokenisation keeps
        the reference's kernel)."""
        pn = self.patch_nums[k]
        h = self.embedding(idx_Bl).transpose(1, 2)                    # (B, C, pn^2)
        if pn != size:
            key = (pn, size, h.device, h.dtype)
            if key not in self._bicubic:
                self._bicubic[key] = bicubic_matrix(pn, size, h.device).to(h.dtype)
            h = h @ self._bicubic[key]
        return self.quant_resi(h.reshape(idx_Bl.shape[0], self.channels, size, size), self.ratio(k))

    def teacher_forcing_input(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """VAR's input for scales 1..K-1: the running f_hat after scales 0..k, area-downsampled
        to the next scale's size; (B, L - pn_0^2, C). Training builds it for every
        micro-batch, so the bicubic step is a matmul (1.6% of an H100 training step before)."""
        H, f_hat, inputs = self.patch_nums[-1], 0, []
        for k in range(self.num_scales - 1):
            f_hat = f_hat + self.upsampled_by_matmul(tokens[k], k, H)
            inputs.append(self.next_input(f_hat, k + 1))
        return torch.cat(inputs, dim=1)

    def next_input(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        """Scale k's input tokens (B, pn_k^2, C) from the running f_hat."""
        pn = self.patch_nums[k]
        z = f_hat if pn == f_hat.shape[-1] else F.interpolate(f_hat, size=(pn, pn), mode="area")
        return z.flatten(2).transpose(1, 2)

    # ---- training (used by `variant fetch` to pre-train the tiny profile's VQVAE) ---------
    def quantize_train(self, f: torch.Tensor, beta: float = 0.25,
                       hit_momentum: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward of the residual quantiser: (f_hat_st, vq_loss).

        The residual loop of f_to_tokens, with losses: after each scale k the running f_hat
        gets the codebook loss ||f_hat - sg(f)||^2 (trains the codebook and the phi convs)
        plus beta * ||sg(f_hat) - f||^2 (commitment; trains the encoder), averaged over the
        K scales. f_hat_st = f + sg(f_hat - f) is the straight-through estimate: the value
        of f_hat, the decoder's gradient passed to f unchanged. Also records codebook usage
        per scale in ema_vocab_hit_SV (an EMA of hit counts)."""
        B, C, H, W = f.shape
        if self.patch_nums[-1] != H or H != W:
            raise ValueError(f"feature map is {H}x{W} but the last scale is {self.patch_nums[-1]}")
        f_sg = f.detach()
        f_rest, f_hat = f_sg.clone(), torch.zeros_like(f_sg)
        vq_loss = f.new_zeros(())
        for k, pn in enumerate(self.patch_nums):
            z = f_rest if pn == H else F.interpolate(f_rest, size=(pn, pn), mode="area")
            with torch.no_grad():
                idx = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
                hits = idx.flatten().bincount(minlength=self.vocab_size).float()
                self.ema_vocab_hit_SV[k].mul_(hit_momentum).add_(hits, alpha=1 - hit_momentum)
            # the matmul upsampling: torch's bicubic backward adds with atomics from one thread
            # per output pixel, so it is slow on a GPU and its gradients vary run to run
            h = self.upsampled_by_matmul(idx, k, H)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            vq_loss = vq_loss + F.mse_loss(f_hat, f_sg) + beta * F.mse_loss(f_hat.detach(), f)
        return f + (f_hat - f).detach(), vq_loss / self.num_scales


class VQVAE(nn.Module):
    def __init__(self, vocab_size=4096, z_channels=32, ch=160, ch_mult=(1, 1, 2, 2, 4),
                 num_res_blocks=2, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                 share_quant_resi=4, using_sa=True, using_mid_sa=True):
        super().__init__()
        self.vocab_size, self.Cvae = vocab_size, z_channels
        self.downsample = 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, z_channels, using_sa, using_mid_sa)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, z_channels, using_sa, using_mid_sa)
        self.quantize = MultiScaleQuantizer(vocab_size, z_channels, patch_nums, share_quant_resi)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 3, padding=1)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.quantize.patch_nums

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample

    def img_to_tokens(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] (B, 3, H, W) -> token maps, one (B, pn*pn) per scale."""
        return self.quantize.f_to_tokens(self.quant_conv(self.encoder(img)))

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Decoded image in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def tokens_to_img(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        return self.fhat_to_img(self.quantize.tokens_to_fhat(tokens))

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (reconstruction, vq_loss) of images in [-1, 1]. The
        reconstruction is not clamped, so that the reconstruction loss keeps its gradient."""
        f = self.quant_conv(self.encoder(img))
        f_hat, vq_loss = self.quantize.quantize_train(f)
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss
