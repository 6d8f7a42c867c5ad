"""Reading the files the stages pass each other, so that a bad one (truncated, empty, of
another kind) stops with one line naming it: `FILE: not a readable X (why; what to do)`,
never numpy's or zipfile's own exception. atomic.py is the writing side."""
from __future__ import annotations

import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class UnreadableFile(ValueError):
    """A file that exists but cannot be used; the message names it (the CLI prints it, exit 2)."""


def _why(e: BaseException) -> str:
    """One line: messages of numpy's format errors run over several."""
    text = " ".join(str(e).split())
    if isinstance(e, zipfile.BadZipFile):
        return f"truncated or not an .npz archive: {text}"
    if isinstance(e, EOFError):
        return f"empty or truncated: {text or 'no data'}"
    if isinstance(e, ValueError) and "pickle" in text:   # numpy's guess for unknown bytes; never unpickle
        return "neither an .npz archive nor a .npy array"
    return f"{type(e).__name__}: {text}"


def no_such_file(path, what: str) -> FileNotFoundError:
    """The one wording of a missing input: `FILE: no such file (what it is for)`."""
    return FileNotFoundError(f"{path}: no such file ({what})")


def require_file(path, what: str) -> Path:
    """`path` as a Path if it is a file, else no_such_file(path, what)."""
    path = Path(path)
    if not path.is_file():
        raise no_such_file(path, what)
    return path


def unreadable(path, what: str, why: str, fix: str, lead: str = "not a readable") -> UnreadableFile:
    return UnreadableFile(f"{path}: {lead} {what} ({why}; {fix})")


class NpzArchive:
    """An open .npz whose every read names the file: a member can be corrupt even when the
    archive's directory is intact (a CRC error surfaces only when that array is read)."""

    def __init__(self, npz, path, what: str, fix: str, lead: str):
        self._npz, self.path, self.what, self.fix, self.lead = npz, Path(path), what, fix, lead
        self.files = list(npz.files)

    def __contains__(self, key) -> bool:
        return key in self.files

    def missing(self, key) -> UnreadableFile:
        return unreadable(self.path, self.what, f"no {key} array; it holds {', '.join(self.files) or 'none'}",
                          self.fix, self.lead)

    def __getitem__(self, key) -> np.ndarray:
        if key not in self.files:
            raise self.missing(key)
        try:
            return self._npz[key]
        except Exception as e:   # zipfile, zlib and numpy's format code raise many types
            raise unreadable(self.path, self.what, f"array {key!r}: {_why(e)}", self.fix, self.lead) from e


@contextmanager
def open_npz(path, what: str, fix: str, required=(), lead: str = "not a readable"):
    """np.load(path) as a context manager, each failure an UnreadableFile naming `path` as
    `what` and saying `fix`; `required` arrays must be present. `lead` words the failure
    ("FILE: not a readable sample file (why; fix)")."""
    path = require_file(path, f"{what}; {fix}")
    try:
        npz = np.load(path)   # allow_pickle=False: a pickle is refused, not run
    except Exception as e:
        raise unreadable(path, what, _why(e), fix, lead) from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise unreadable(path, what, "a single .npy array, not an .npz archive", fix, lead)
    with npz:
        f = NpzArchive(npz, path, what, fix, lead)
        for key in required:
            if key not in f:
                raise f.missing(key)
        yield f


def check_images(images: np.ndarray, path, what: str, fix: str) -> np.ndarray:
    """`images` as the ADM format has them: uint8 N x H x W x 3, at least one."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise unreadable(path, what, f"arr_0 is {images.dtype} of shape {images.shape}, "
                         "expected uint8 N x H x W x 3 images", fix)
    return images
