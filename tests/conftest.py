"""Shared fixtures: small random models with the reference's structure, and `variant`
run in this process (cli_main)."""
import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
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


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_process():
    """Every test's models are tiny: one thread is fastest, and two threads per pytest-xdist
    worker (two workers on two cores) crawl, five to twenty times slower. Threads do not
    enter any assertion; a test that wants more sets them itself."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def hash_cache(tmp_path_factory):
    """Remembered sha256s (variant.util.hashing) go to this session's temporary folder, not
    the user's ~/.cache; subprocesses inherit it."""
    old = os.environ.get("VARIANT_CACHE")
    os.environ["VARIANT_CACHE"] = str(tmp_path_factory.mktemp("variant-cache"))
    yield
    if old is None:
        os.environ.pop("VARIANT_CACHE")
    else:
        os.environ["VARIANT_CACHE"] = old


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


# ---- `variant ...` in this process ----------------------------------------------------------

_HANDLED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)   # `variant train` installs its own


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def cli_main(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`variant ARGS` as its process would run it, without starting one (Python and torch
    imports cost seconds a process): variant.cli.main in this process, with its stdout and
    stderr captured. What the process would show is kept: argparse's exit status (2) and
    usage line, a crash as a traceback on stderr with status 1, warnings on stderr under
    the interpreter's default filters. cwd and env (variables to set) hold for the call
    only; so do the signal handlers and the torch thread count a stage may change.
    For tests of the message and exit status; a test of the process itself (signals, a
    kill, the interpreter's exit) starts one."""
    from variant.cli import main
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_env, threads = os.getcwd(), dict(os.environ), torch.get_num_threads()
    handlers = ({s: signal.getsignal(s) for s in _HANDLED}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        if cwd is not None:
            os.chdir(cwd)
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()    # python's defaults: pytest's own filters are not the process's
            warnings.simplefilter("default")
            for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=quiet)
            warnings.showwarning = _warn_to_stderr
            try:
                rc = main([str(a) for a in args])
            except SystemExit as e:     # argparse: --help, --version, a bad flag
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if e.code is not None and not isinstance(e.code, int):
                    print(e.code, file=sys.stderr)
            except Exception:           # what the interpreter prints for an uncaught exception
                traceback.print_exc(file=sys.stderr)
                rc = 1
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        torch.set_num_threads(threads)
        for s, h in handlers.items():
            signal.signal(s, h)
    assert rc is None or isinstance(rc, int), f"variant.cli.main returned {rc!r}, not an exit status"
    return subprocess.CompletedProcess(["variant", *map(str, args)], rc or 0, out.getvalue(), err.getvalue())
