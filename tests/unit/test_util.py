"""The one helper of each kind in variant.util: hashing, devices, missing files."""
import hashlib

import pytest
import torch

from variant.util.devices import deterministic_kernels, resolve_device
from variant.util.files import require_file
from variant.util.hashing import sha256_file, sha256_files


def test_sha256_file_equals_hashlib_across_chunks(tmp_path):
    body = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(body)
    assert sha256_file(tmp_path / "f", chunk=1000) == sha256_file(tmp_path / "f") == hashlib.sha256(body).hexdigest()


def test_a_directory_hash_changes_with_a_rename_or_an_edit(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(name.encode())
    files = lambda: sorted(tmp_path.glob("*.png"))   # noqa: E731
    before = sha256_files(tmp_path, files())
    (tmp_path / "b.png").rename(tmp_path / "c.png")
    renamed = sha256_files(tmp_path, files())
    (tmp_path / "c.png").write_bytes(b"other")
    assert len({before, renamed, sha256_files(tmp_path, files())}) == 3


def test_resolve_device_prefers_the_option_then_the_profile():
    assert resolve_device("cpu", {"device": "cuda", "profile": "small"}) == torch.device("cpu")
    assert resolve_device(None, {"device": "cpu", "profile": "tiny"}) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"params profiles.small.device: 'cuda', but no CUDA device"):
            resolve_device(None, {"device": "cuda", "profile": "small"})
        with pytest.raises(ValueError, match="--device: 'cuda:0'"):
            resolve_device("cuda:0", {"device": "cpu"})
        assert resolve_device(None) == torch.device("cpu")


def test_deterministic_kernels_hold_inside_the_block_and_the_old_settings_come_back():
    cudnn = torch.backends.cudnn
    before = torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark
    with pytest.raises(KeyError):   # restored on the way out of an error too
        with deterministic_kernels():
            assert torch.are_deterministic_algorithms_enabled() and cudnn.deterministic and not cudnn.benchmark
            raise KeyError("boom")
    assert (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark) == before


def test_require_file_names_the_file_and_what_it_is_for(tmp_path):
    (tmp_path / "here").write_text("x")
    assert require_file(tmp_path / "here", "anything") == tmp_path / "here"
    with pytest.raises(FileNotFoundError, match=r"none.pth: no such file \(--var: the VAR\)$"):
        require_file(tmp_path / "none.pth", "--var: the VAR")
    with pytest.raises(FileNotFoundError, match="no such file"):
        require_file(tmp_path, "a directory is not a file")


def test_sha256_cached_reads_a_file_once_and_again_after_it_changes(tmp_path, monkeypatch):
    from variant.util import hashing
    monkeypatch.setenv("VARIANT_CACHE", str(tmp_path / "cache"))
    reads = []
    monkeypatch.setattr(hashing, "sha256_file", lambda p, real=hashing.sha256_file: reads.append(p) or real(p))
    f = tmp_path / "ckpt.pth"
    f.write_bytes(b"weights " * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert hashing.sha256_cached(f) == want and hashing.sha256_cached(f) == want and len(reads) == 1
    link = tmp_path / "published.pth"           # a hard link is the same file: no second read
    link.hardlink_to(f)
    assert hashing.sha256_cached(link) == want and len(reads) == 1
    new = tmp_path / "new.pth"                  # replaced by a rename: a new inode, hashed afresh
    new.write_bytes(b"other weights")
    new.replace(f)
    assert hashing.sha256_cached(f) == hashlib.sha256(b"other weights").hexdigest() and len(reads) == 2
    with open(f, "ab") as fh:                   # edited in place: size and mtime change
        fh.write(b"!")
    assert hashing.sha256_cached(f) == hashlib.sha256(b"other weights!").hexdigest() and len(reads) == 3


def test_sha256_cached_works_without_a_writable_cache(tmp_path, monkeypatch):
    from variant.util.hashing import sha256_cached
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("VARIANT_CACHE", str(blocker))
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert sha256_cached(f) == sha256_cached(f) == hashlib.sha256(b"abc").hexdigest()
