"""sha256 of files and of directories of files: what provenance records and checks."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from variant.util.atomic import write_text


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of one file, read in chunks (checkpoints run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where remembered hashes live: $VARIANT_CACHE, else $XDG_CACHE_HOME/variant (default
    ~/.cache/variant); outside every output the pipeline or DVC tracks."""
    if os.environ.get("VARIANT_CACHE"):
        return Path(os.environ["VARIANT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "variant"


def sha256_cached(path: str | os.PathLike) -> str:
    """sha256_file, remembered under the file's device, inode, size and mtime (as DVC
    remembers its hashes): every sample and evaluate job names its multi-GB checkpoint's
    sha256, and reading it each time costs seconds. A replaced (renamed-over) or edited file
    has another key. A cache that cannot be written is skipped."""
    st = os.stat(path)
    entry = cache_dir() / "sha256" / f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
    try:
        digest = entry.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = sha256_file(path)
    try:
        write_text(entry, digest + "\n")
    except OSError:
        pass
    return digest


def sha256_files(root: str | os.PathLike, files) -> str:
    """One sha256 over `files` under `root`, each its relative path and content in the
    given order, so a renamed or edited file changes it."""
    root, h = Path(root), hashlib.sha256()
    for f in files:
        h.update(Path(f).relative_to(root).as_posix().encode() + b"\0" + bytes.fromhex(sha256_file(f)))
    return h.hexdigest()
