"""The synthetic dataset is deterministic and well-formed; the loaders fail loudly."""
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from variant.tiny.data import (CLASS_NAMES, ImageFolderDataset, find_images, load_images,
                          make_synthetic_dataset)

# pixels of make_synthetic_dataset(per_class=2, seed=0): pins cross-machine determinism
GOLDEN_SHA256 = "6243998fe82b87900db8d7eae2b916909b2f1814e5202a73479d141d3e411062"
PER_CLASS = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "seed0"
    return root, make_synthetic_dataset(root, per_class=PER_CLASS, seed=0)


def test_layout_and_manifest(dataset):
    root, manifest = dataset
    assert manifest == json.loads((root / "manifest.json").read_text())
    assert manifest["count"] == 10 * PER_CLASS and manifest["classes"] == list(CLASS_NAMES)
    assert manifest["size"] == 32 and manifest["seed"] == 0
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"{c:03d}" for c in range(10)]
    assert [p.name for p in sorted((root / "003").iterdir())] == [f"{i:05d}.png" for i in range(PER_CLASS)]
    with Image.open(root / "007" / "00005.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32))


def test_manifest_hash_is_the_pixels(dataset):
    root, manifest = dataset
    images, labels = load_images(root)
    assert images.shape == (10 * PER_CLASS, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [c for c in range(10) for _ in range(PER_CLASS)]
    nhwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    assert hashlib.sha256(nhwc.tobytes()).hexdigest() == manifest["sha256"]


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    root, manifest = dataset
    again = make_synthetic_dataset(tmp_path / "again", per_class=PER_CLASS, seed=0)
    assert again["sha256"] == manifest["sha256"]
    for a, b in zip(find_images(root), find_images(tmp_path / "again"), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    other = make_synthetic_dataset(tmp_path / "other", per_class=PER_CLASS, seed=1)
    assert other["sha256"] != manifest["sha256"]


def test_pinned_pixels(tmp_path):
    assert make_synthetic_dataset(tmp_path, per_class=2, seed=0)["sha256"] == GOLDEN_SHA256


def test_images_vary_and_classes_differ(dataset):
    images, labels = load_images(dataset[0])
    flat = images.flatten(1)
    assert len(torch.unique(flat, dim=0)) == len(images)  # no two samples alike
    # per-class mean images are far apart: the classes have different structure
    means = torch.stack([flat[labels == c].float().mean(0) for c in range(10)])
    dists = torch.cdist(means, means) + torch.eye(10) * 1e9
    assert dists.min() > 100


def test_other_sizes_and_class_counts(tmp_path):
    manifest = make_synthetic_dataset(tmp_path, num_classes=3, per_class=2, image_size=16, seed=5)
    images, labels = load_images(tmp_path)
    assert manifest["count"] == 6 and images.shape == (6, 3, 16, 16) and labels.max() == 2
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_dataset(tmp_path / "x", num_classes=11, per_class=1)
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        make_synthetic_dataset(tmp_path, per_class=1)


def test_dataset_range_and_flip(dataset):
    data = ImageFolderDataset(dataset[0], flip=True)
    assert len(data) == 10 * PER_CLASS and data.num_classes == 10
    plain = ImageFolderDataset(dataset[0])
    x0, y0 = plain[13]
    assert x0.dtype == torch.float32 and x0.shape == (3, 32, 32) and y0 == 1
    assert -1 <= x0.min() and x0.max() <= 1 and x0.min() < -0.5 and x0.max() > 0.5
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        x, y = data[13]
        assert y == y0
        seen.add("plain" if torch.equal(x, x0) else "flipped" if torch.equal(x, x0.flip(-1)) else "other")
    assert seen == {"plain", "flipped"}


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_images(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no class sub-directories"):
        load_images(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match=r"no \.png images found under .*a"):
        load_images(tmp_path)

    pixels = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a" / "0.png")
    Image.fromarray(pixels[:16]).save(tmp_path / "a" / "1.png")
    with pytest.raises(ValueError, match=r"1\.png is 16x32, expected 32x32"):
        load_images(tmp_path)
    with pytest.raises(ValueError, match=r"0\.png is 32x32, expected 16x16"):
        load_images(tmp_path, image_size=16)

    (tmp_path / "a" / "1.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read image .*1\.png"):
        load_images(tmp_path)
    whole = (tmp_path / "a" / "0.png").read_bytes()
    (tmp_path / "a" / "1.png").write_bytes(whole[: len(whole) // 2])  # truncated
    with pytest.raises(ValueError, match=r"cannot read image .*1\.png"):
        load_images(tmp_path)


def test_one_process_a_class_writes_what_one_process_writes(tmp_path, monkeypatch):
    """Large sets render a class per process; files and digest equal a serial run's."""
    parallel = make_synthetic_dataset(tmp_path / "parallel", per_class=200, image_size=8, seed=3)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)   # one CPU: serial
    serial = make_synthetic_dataset(tmp_path / "serial", per_class=200, image_size=8, seed=3)
    assert parallel == serial
    for a, b in zip(find_images(tmp_path / "parallel"), find_images(tmp_path / "serial"), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
