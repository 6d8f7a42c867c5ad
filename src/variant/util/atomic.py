"""Writing files so that a crash never leaves half of one: write beside the target,
fsync, rename over it (a rename within a directory is atomic), then fsync the directory
so the rename itself survives a power cut. A write killed before its rename leaves its
temporary behind (`.NAME.<random><suffix>`); the next write of the same target sweeps it,
since one job owns each output."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def temporaries(path) -> list[Path]:
    """Temporaries that earlier writes of `path` left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*")) if path.parent.is_dir() else []


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:          # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path beside `path`; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in temporaries(path):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; results are for everyone to read
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)   # read-only: the temporary may be a link to a read-only file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if disk_full(e):   # torch wraps it in a RuntimeError that names no file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise


def disk_full(e: BaseException | None) -> bool:
    """e, or an exception it was raised from or during, is ENOSPC."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        e = e.__cause__ or e.__context__
    return False


def link_or_copy(src, dst) -> str:
    """Publish dst as a hard link to src (no second copy of a multi-GB file on disk), a copy
    where links are impossible (another file system); atomically either way."""
    if Path(dst).exists() and os.path.samefile(src, dst):
        return "hard link"   # already published: a rename onto its own link would keep the temporary
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
            return "hard link"
        except OSError:
            shutil.copyfile(src, tmp)
            return "copy"


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def torch_save(obj, path, crc32: bool = True) -> None:
    """torch.save through a file object: given a path, torch names the zip's inner folder
    after the (random) temporary name, and equal checkpoints would hash differently.
    crc32=False leaves out the zip's per-record checksums, which torch computes at a few
    hundred MB/s; torch.load reads such a file, zip tools may complain."""
    import torch
    from torch.utils.serialization import config
    with atomic_path(path) as tmp, open(tmp, "wb") as f, config.patch({"save.compute_crc32": crc32}):
        torch.save(obj, f)


def write_parquet(df, path) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_csv(df, path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def save_figure(fig, path, **kw) -> Path:
    """fig.savefig, atomically; the temporary keeps the extension, which names the format."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        fig.savefig(tmp, **kw)
    return path
