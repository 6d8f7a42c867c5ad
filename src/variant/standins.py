"""Stand-ins for the files a profile downloads or is given, at their true shapes: random
weights in the released checkpoints' layout, an ImageNet-layout folder of JPEGs, a
reference batch in ADM's layout and torch-fidelity's Inception with random weights.

They let a user rehearse the paper profile on one GPU (workflow/scripts/rehearse.sh)
before queueing the real run: every stage meets files of the real sizes, names and
dtypes. Files are put where `fetch` expects files placed by hand, so the real fetch path
checks and records them. Nothing a stand-in produces is a result: the Inception stand-in
is marked in every metric row (variant.metrics.weights_verdict).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from variant import dag
from variant.models import VAR, VQVAE
from variant.models.checkpoint import save_state_dict
from variant.util.atomic import atomic_path

VAR_FILE = re.compile(r"var_d(\d+)\.pth")


def _log(msg: str) -> None:
    print(f"[stand-ins] {msg}", flush=True)


def released_models(P: dict, out_dir: Path, device: torch.device, seed: int = 0) -> list[Path]:
    """Every VAR and VQVAE file of fetch.files, with random weights of the profile's shapes."""
    m, written = P["model"], []
    for name in P["fetch"]["files"]:
        path = out_dir / name
        if path.exists():
            _log(f"{path}: exists, kept")
            continue
        torch.manual_seed(seed)
        t0 = time.time()
        with torch.device(device):   # initialising 2 B parameters on a CPU takes minutes
            if match := VAR_FILE.fullmatch(name):
                model = VAR(depth=int(match.group(1)), num_classes=P["data"]["num_classes"],
                            vocab_size=m["vae"]["vocab_size"], cvae=m["vae"]["z_channels"],
                            patch_nums=m["patch_nums"])
            else:
                model = VQVAE(**m["vae"], patch_nums=m["patch_nums"])
        save_state_dict(model, path)
        written.append(path)
        _log(f"{path}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
             f"{path.stat().st_size / 2**30:.2f} GiB, {time.time() - t0:.0f} s")
        del model
    return written


def _jpeg(rng: np.random.Generator, height: int, width: int, quality: int = 90) -> Image.Image:
    """Smooth colour fields with texture: JPEGs of ImageNet-like size (~100 KB), not noise."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    c = rng.uniform(0, 1, (3, 3))
    img = np.stack([np.sin(6.28 * (c[i, 0] * xx + c[i, 1] * yy) * 3 + c[i, 2] * 6.28) for i in range(3)], -1)
    img = 127.5 * (img + 1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def image_folder(root: Path, num_classes: int, per_class: int, image_size: int, seed: int = 0) -> int:
    """root/<class>/<image>.JPEG for every class, of varied sizes no side below image_size
    (tokenize resizes and crops, as for ImageNet)."""
    rng, n = np.random.default_rng(seed), 0
    for c in range(num_classes):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = d / f"n{c:08d}_{i}.JPEG"
            if not path.exists():
                h, w = (int(image_size * rng.uniform(1.0, 1.8)) for _ in range(2))
                with atomic_path(path, suffix=".tmp.JPEG") as tmp:
                    _jpeg(rng, h, w).save(tmp, quality=90)
            n += 1
    _log(f"{root}: {num_classes} class folders, {n} JPEGs")
    return n


def random_inception(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception-v3 (the FID network) with its random initial weights, as
    a weights file it loads. Metrics computed with it only exercise the code path."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):   # keep the random init
            return None

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    empty = path.with_suffix(".empty.pt")
    torch.save({}, empty)
    try:
        net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    finally:
        empty.unlink()
    with torch.no_grad():   # He init: torch's default init shrinks the activations at every layer,
        for m in net.modules():   # so that all images got the same (near-zero) features and FID 0
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    save_state_dict(net, path)
    _log(f"{path}: torch-fidelity's Inception-v3 with random weights")
    return path


def reference_batch(path: Path, count: int, image_size: int, inception: Path, device, seed: int = 0) -> Path:
    """ADM's layout: arr_0 (N x H x W x 3 uint8), and mu/sigma of its 2048-d Inception
    features (computed here with the given weights, as ADM computed them with the real ones)."""
    from variant.metrics import extract_features, feature_layer, fid_stats, image_set
    rng = np.random.default_rng(seed)
    arr = np.stack([np.asarray(_jpeg(rng, image_size, image_size)) for _ in range(count)])
    layer = feature_layer("inception-v3-compat", "fid")
    feats = extract_features(image_set(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()), [layer],
                             "inception-v3-compat", inception, device)[layer]
    stats = fid_stats(feats)
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, arr_0=arr, mu=stats["mu"], sigma=stats["sigma"])
    _log(f"{path}: {count} images, mu/sigma of the stand-in Inception")
    return path


def make_all(P: dict, data_root: Path, torch_home: Path, per_class: int, reference_count: int,
             device: torch.device) -> None:
    out = Path(dag.pretrained_dir(P))
    out.mkdir(parents=True, exist_ok=True)
    released_models(P, out, device)
    image_folder(data_root, P["data"]["num_classes"], per_class, P["data"]["image_size"])
    from variant.metrics import URL_INCEPTION_V3
    inception = torch_home / "hub" / "checkpoints" / Path(URL_INCEPTION_V3).name
    if not inception.exists():
        random_inception(inception)
    batch = Path(dag.reference_batch(P))
    if not batch.exists():
        reference_batch(batch, reference_count, P["data"]["image_size"], inception, device)


def add_parser(sub):
    p = sub.add_parser("stand-ins")
    from variant.options import params_options
    params_options(p, reads="`model`, `data` and `fetch` give the shapes and the file names", device=True)
    p.add_argument("--data-root", required=True, type=Path, help="where to write the ImageNet-layout folder")
    p.add_argument("--torch-home", required=True, type=Path,
                   help="the TORCH_HOME the run will use: its hub cache gets the Inception stand-in")
    p.add_argument("--per-class", type=int, default=1, help="JPEGs per class folder (default 1)")
    p.add_argument("--reference-images", type=int, default=1000, help="images in the reference batch")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from variant.config import load_params
    from variant.util.devices import resolve_device
    P = load_params(args.params, args.profile)
    make_all(P, args.data_root, args.torch_home, args.per_class, args.reference_images,
             resolve_device(args.device, P))
    return 0
