"""Shared fixtures: small random models with the reference's structure."""
from pathlib import Path

import pytest
import torch

from variant.models import VAR, VQVAE

GOLDEN_ROOT = Path(__file__).parent / "data" / "golden"
GOLDEN = GOLDEN_ROOT / "var_small"             # 4 scales
GOLDEN_SCALES10 = GOLDEN_ROOT / "var_scales10"  # the released checkpoints' 10 scales
GOLDEN_SETS = [GOLDEN, GOLDEN_SCALES10]
PATCH_NUMS = (1, 2, 3, 4, 5)


def small_var(depth=6, shared_aln=False, seed=0, **kw) -> VAR:
    torch.manual_seed(seed)
    kw = dict(width=64, num_heads=2, num_classes=5, vocab_size=32, cvae=8, patch_nums=PATCH_NUMS) | kw
    var = VAR(depth=depth, shared_aln=shared_aln, **kw)
    with torch.no_grad():  # AdaLN gates start near zero in real training; make every layer matter
        for p in var.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return var.eval()


def small_vae(seed=0, patch_nums=PATCH_NUMS) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                 patch_nums=patch_nums).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is fastest, and two threads on a busy 2-core box crawl."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def golden_dir() -> Path:
    return GOLDEN


def pytest_collection_modifyitems(config, items):
    """tests/e2e runs Snakemake, DVC or SLURM end to end: minutes, so all of it is `slow`."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if e2e in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
