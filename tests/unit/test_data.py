"""The synthetic dataset is deterministic and well-formed; the one image reader
(variant.util.images) fails loudly and decodes every caller's pixels alike."""
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from variant.tiny.data import CLASS_NAMES, make_split, make_synthetic_dataset, split_seed
from variant.util.images import (ImageFiles, find_images, list_image_folder, load_images, read_image,
                                 read_image_square, to_float)

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


def test_every_reader_decodes_the_same_pixels(dataset):
    """The in-memory loader, the on-demand dataset (metrics) and the tokenizer's reader
    (an image already S x S is not resized) give the same bytes for the same file."""
    root = dataset[0]
    images, labels = load_images(root)
    items, classes = list_image_folder(root)
    assert classes == [f"{c:03d}" for c in range(10)] and [y for _, y in items] == labels.tolist()
    files = ImageFiles.of_directory(root)
    assert files.size == (32, 32) and len(files) == len(images)
    for i in (0, 13, len(images) - 1):
        path = items[i][0]
        assert torch.equal(files[i], images[i])
        assert np.array_equal(read_image_square(path, 32), images[i].permute(1, 2, 0).numpy())
        assert np.array_equal(read_image(path), images[i].permute(1, 2, 0).numpy())
    x = to_float(images[:2])
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1


def test_square_reader_resizes_and_centre_crops(tmp_path):
    """Not S x S: shorter side to round(1.125 S), then the centre S x S (VAR's eval transform)."""
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 28:32] = 255                      # a bright column at the centre
    Image.fromarray(wide).save(tmp_path / "wide.png")
    out = read_image_square(tmp_path / "wide.png", 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[:, 7:9].mean() > 200 and out[:, :4].max() < 40 and out[:, -4:].max() < 40


def test_make_split_seeds_and_replaces(tmp_path):
    data = {"num_classes": 2, "image_size": 8, "train_per_class": 2, "eval_per_class": 1, "seed": 4}
    assert split_seed(data, "train") == 4 and split_seed(data, "eval") != 4
    out = tmp_path / "train"
    first = make_split(data, "train", out)
    assert make_split(data, "train", out) == first and first["count"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]   # no temporaries left
    with pytest.raises(ValueError, match="--split must be train or eval"):
        make_split(data, "test", out)
    with pytest.raises(ValueError, match=r"data\.eval_per_class is not set"):
        make_split(dict(data, eval_per_class=None), "eval", tmp_path / "eval")


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_images(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no class sub-directories"):
        load_images(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match=r"no images \(.*\.png.*\) found under .*a"):
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


# pixels of the layered family, 25 classes x 1 image of 32 px, seed 0
LAYERED_SHA256 = "c36cbe6ad22500bdb4721d22640fa45abf53b3f188a3f2d2fd7f7a59d3ae2213"


def test_the_layered_family_is_shape_times_fill_and_pinned(tmp_path):
    """Each class a (shape, fill) pair: the same shape with another fill differs only in
    fine texture, which a solid fill lacks; pixels pinned across machines."""
    from variant.tiny.data import FAMILIES, LAYERED_FILLS, LAYERED_SHAPES, _fill_mask, _grid
    manifest = make_synthetic_dataset(tmp_path / "l", num_classes=25, per_class=1, image_size=32, family="layered")
    assert manifest["sha256"] == LAYERED_SHA256 and manifest["family"] == "layered"
    assert manifest["classes"] == list(FAMILIES["layered"]) and len(FAMILIES["layered"]) == 25
    assert "family" not in make_synthetic_dataset(tmp_path / "s", num_classes=2, per_class=1, image_size=16)
    x, y = _grid(64)
    for fill in LAYERED_FILLS:   # a solid fill has no second colour; a texture covers a part
        g = np.random.default_rng(1)
        covered = _fill_mask(fill, x, y, lambda lo, hi: lo + (hi - lo) * g.random()).mean()
        assert covered == 0 if fill == "solid" else 0.15 < covered < 0.6, (fill, covered)
    assert len(LAYERED_SHAPES) * len(LAYERED_FILLS) == 25
    with pytest.raises(ValueError, match="1..25 for the layered family"):
        make_synthetic_dataset(tmp_path / "x", num_classes=26, per_class=1, family="layered")
    with pytest.raises(ValueError, match="family must be one of shapes, layered"):
        make_synthetic_dataset(tmp_path / "y", per_class=1, family="stripes")
