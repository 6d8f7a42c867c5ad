"""sha256 of files and of directories of files: what provenance records and checks."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of one file, read in chunks (checkpoints run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(root: str | os.PathLike, files) -> str:
    """One sha256 over `files` under `root`, each its relative path and content in the
    given order, so a renamed or edited file changes it."""
    root, h = Path(root), hashlib.sha256()
    for f in files:
        h.update(Path(f).relative_to(root).as_posix().encode() + b"\0" + bytes.fromhex(sha256_file(f)))
    return h.hexdigest()
