"""The one helper of each kind in variant.util: hashing, devices, missing files."""
import hashlib

import pytest
import torch

from variant.util.devices import resolve_device
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


def test_require_file_names_the_file_and_what_it_is_for(tmp_path):
    (tmp_path / "here").write_text("x")
    assert require_file(tmp_path / "here", "anything") == tmp_path / "here"
    with pytest.raises(FileNotFoundError, match=r"none.pth: no such file \(--var: the VAR\)$"):
        require_file(tmp_path / "none.pth", "--var: the VAR")
    with pytest.raises(FileNotFoundError, match="no such file"):
        require_file(tmp_path, "a directory is not a file")
