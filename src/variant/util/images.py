"""Listing and decoding images: the one reader every stage uses.

Directories are listed recursively in a machine-independent order (sorted by the path
relative to the root); an ImageFolder tree, root/<class>/<image>, numbers its classes in
sorted order (ImageNet's synset order, as VAR's class labels). Pixels are decoded by Pillow
to RGB uint8, so the same file gives the same bytes through every caller.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")


def find_images(root) -> list[Path]:
    """All image files under `root`, recursively, in a machine-independent order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image directory not found: {root}")
    paths = sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return paths


def class_dirs(root) -> list[Path]:
    """The class sub-directories of an ImageFolder tree, in label order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image directory not found: {root}")
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if not dirs:
        raise ValueError(f"{root} has no class sub-directories (expected the layout {root}/<class>/<image>)")
    return dirs


def list_image_folder(root) -> tuple[list[tuple[Path, int]], list[str]]:
    """[(path, label)] of an ImageFolder tree, and its class names; every class has images."""
    dirs = class_dirs(root)
    items = [(path, label) for label, d in enumerate(dirs) for path in find_images(d)]
    return items, [d.name for d in dirs]


def _decode(path, transform=None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")   # convert() decodes: a truncated file fails here
            if transform is not None:
                im = transform(im)
            return np.array(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def read_image(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """HxWx3 uint8 array of an image file; `size` = (H, W) it must have."""
    pixels = _decode(path)
    if size is not None and pixels.shape[:2] != tuple(size):
        raise ValueError(f"image {path} is {pixels.shape[0]}x{pixels.shape[1]}, "
                         f"expected {size[0]}x{size[1]}")
    return pixels


def _resize_center_crop(im: Image.Image, image_size: int) -> Image.Image:
    """VAR's evaluation transform: shorter side to round(1.125 S) (Lanczos), centre S x S crop."""
    if im.size == (image_size, image_size):
        return im
    w, h = im.size
    mid = round(image_size * 1.125)
    scale = mid / min(w, h)
    im = im.resize((max(mid, round(w * scale)), max(mid, round(h * scale))), Image.LANCZOS)
    w, h = im.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    return im.crop((left, top, left + image_size, top + image_size))


def read_image_square(path, image_size: int) -> np.ndarray:
    """S x S x 3 uint8: the image as is if already S x S, else resized and centre-cropped."""
    return _decode(path, lambda im: _resize_center_crop(im, image_size))


def load_images(root, image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N,3,H,W images, int64 labels) of an ImageFolder directory, held in memory
    (small sets only). All images must share one size: `image_size` if given, else the
    first image's."""
    size = None if image_size is None else (image_size, image_size)
    images, labels = [], []
    for label, d in enumerate(class_dirs(root)):
        for path in find_images(d):
            pixels = read_image(path, size)
            size = pixels.shape[:2]
            images.append(pixels)
            labels.append(label)
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.long)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1], the models' input range."""
    return images.float() / 127.5 - 1.0


class ImageFiles(Dataset):
    """uint8 3xHxW tensors of image files, read on demand (50k 256px samples never sit in
    memory at once); `size` = (H, W) every file must have."""

    def __init__(self, paths, size):
        self.paths, self.size = list(paths), tuple(size)

    @classmethod
    def of_directory(cls, root) -> "ImageFiles":
        paths = find_images(root)
        return cls(paths, read_image(paths[0]).shape[:2])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(read_image(self.paths[i], self.size)).permute(2, 0, 1)
