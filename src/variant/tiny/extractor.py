"""The tiny profiles' FID feature network: TinyFeatureNet, a small CNN classifier trained
on the synthetic data, which variant.metrics registers with torch-fidelity as "variant-tiny"
(the synthetic profiles have no ImageNet, hence no Inception features to score with)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from variant.util.atomic import torch_save, write_text
from variant.util.files import unreadable
from variant.util.images import load_images, to_float

TINY = "variant-tiny"


def _conv_block(c_in, c_out, stride):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TinyFeatureNet(nn.Module):
    """A 4-block CNN classifier for 32px images in [-1, 1]; its pooled 4*width vector is the
    feature for FID and precision/recall, its logits the class posterior for IS."""

    input_size = 32

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        # strided convolutions rather than pooling: ~4x cheaper to train on a CPU, and the
        # last block still sees the whole 32px image
        self.body = nn.Sequential(
            _conv_block(3, width, 2),
            _conv_block(width, 2 * width, 2),
            _conv_block(2 * width, 4 * width, 2),
            _conv_block(4 * width, 4 * width, 1),
        )
        self.head = nn.Linear(4 * width, num_classes)

    @classmethod
    def from_state_dict(cls, state_dict) -> "TinyFeatureNet":
        num_classes, dim = state_dict["head.weight"].shape  # the sizes are in the weights
        net = cls(num_classes, dim // 4)
        net.load_state_dict(state_dict)
        return net

    def features(self, x):
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def load_feature_net(weights_path) -> TinyFeatureNet:
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"feature extractor weights not found: {weights_path} "
                                f"(make them with `variant train-extractor`)")
    fix = "pass the file `variant train-extractor` writes, e.g. artifacts/tiny/feature_extractor.pth"
    try:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises many types for a file that is no checkpoint
        raise unreadable(weights_path, "feature-extractor weights file", f"{type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}", fix) from e
    want = set(TinyFeatureNet().state_dict())
    got = set(state_dict) if isinstance(state_dict, dict) else set()
    if not isinstance(state_dict, dict) or got != want:
        why = (f"a {type(state_dict).__name__}, not a state dict" if not isinstance(state_dict, dict) else
               f"not TinyFeatureNet weights: {len(want - got)} of its {len(want)} keys missing, "
               f"{len(got - want)} others (e.g. {sorted(got - want or want - got)[0]!r})")
        raise unreadable(weights_path, "feature-extractor weights file", why, fix)
    try:   # right keys, wrong sizes: sizes are read off head.weight
        return TinyFeatureNet.from_state_dict(state_dict).eval()
    except (RuntimeError, ValueError) as e:
        raise unreadable(weights_path, "feature-extractor weights file",
                         " ".join(str(e).split())[:200], fix) from e


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of `net` on uint8 images."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        correct += (net(to_float(x.to(device))).argmax(1).cpu() == y).sum().item()
    return correct / len(images)


def fit_feature_net(images: torch.Tensor, labels: torch.Tensor, epochs: int = 8, seed: int = 0,
                    width: int = 32, batch_size: int = 64, lr: float = 1e-2, val_fraction: float = 0.1,
                    device=None) -> tuple[TinyFeatureNet, dict]:
    """Train TinyFeatureNet on uint8 32px images; (the net on the CPU, its record)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    num_classes = int(labels.max()) + 1
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(images)))
    n_val = max(1, round(val_fraction * len(images)))
    val, train = perm[:n_val], perm[n_val:]
    x_train, y_train = images[train].to(device), labels[train].to(device)

    t0 = time.time()
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        net = TinyFeatureNet(num_classes, width).to(device)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(train) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=gen).split(batch_size):
            x = to_float(x_train[idx])
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(net(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    info = {
        "extractor": TINY,
        "num_classes": num_classes,
        "width": width,
        "epochs": epochs,
        "seed": seed,
        "train_images": len(train),
        "val_images": n_val,
        "val_accuracy": accuracy(net, images[val], labels[val]),
        "train_seconds": round(time.time() - t0, 2),
    }
    return net.cpu(), info


def resize_to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images at TinyFeatureNet's 32px, resized as its torch-fidelity wrapper resizes
    larger ones when scoring (bilinear, antialiased); as they are when already 32px."""
    size = TinyFeatureNet.input_size
    if images.shape[-2:] == (size, size):
        return images
    with torch.no_grad():
        x = F.interpolate(to_float(images), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def train_feature_extractor(data_dir, out_path, epochs: int = 8, seed: int = 0, device=None,
                            log=None, **fit_kw) -> dict:
    """TinyFeatureNet on an ImageFolder directory (resized to 32px if need be); saves its
    state dict to `out_path` and a json record beside it (suffix .json), also returned."""
    data_dir, out_path = Path(data_dir), Path(out_path)
    images, labels = load_images(data_dir)
    if log is not None:
        log(f"train-extractor: {len(images)} {images.shape[-2]}x{images.shape[-1]} images"
            f"{'' if images.shape[-1] == TinyFeatureNet.input_size else ' resized to 32px'}, {epochs} epochs")
    net, info = fit_feature_net(resize_to_input(images), labels, epochs, seed, device=device, **fit_kw)
    manifest = data_dir / "manifest.json"
    if manifest.is_file():  # ties the weights to the exact data they saw
        info["data_sha256"] = json.loads(manifest.read_text()).get("sha256")
    info["data_dir"] = str(data_dir)
    torch_save(net.state_dict(), out_path)   # the weights first: the record describes them
    write_text(out_path.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return info
