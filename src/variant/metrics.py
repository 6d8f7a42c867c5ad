"""Sample quality metrics (FID, IS, precision/recall) through torch-fidelity.

The `paper` profile scores with torch-fidelity's own Inception ("inception-v3-compat").
The `tiny` profile has no ImageNet, so it scores with TinyFeatureNet, a small CNN trained
on the synthetic data (variant.tiny.extractor), registered here with torch-fidelity as
"variant-tiny"; everything downstream of the features is torch-fidelity's code either way.

The protocol is that of OpenAI's ADM evaluator (what VAR and the paper report): FID against
the reference's (mu, sigma), which for ImageNet are the reference batch's stored statistics
of the whole training set (variant.stages.reference), precision/recall with k = 3 against the
reference images' features, and the Inception Score over contiguous splits of the images in
the order given (ADM does not shuffle; the sample stage packs files in a class-balanced order).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from variant.tiny.extractor import TINY, TinyFeatureNet, load_feature_net
from variant.util.files import open_npz, unreadable
from variant.util.images import ImageFiles, to_float

INCEPTION = "inception-v3-compat"
# torch.hub names a released file after the leading hex digits of its sha256
RELEASE_SHA256_PREFIX = re.search(r"-([0-9a-f]+)\.pth$", URL_INCEPTION_V3).group(1)

# -----------------------------------------------------------------------------
# extractor weights


def check_weights(extractor: str, weights_path) -> None:
    """Fail before any work when `weights_path` is not `extractor`'s weights (e.g. a VAR
    checkpoint passed as --weights): TinyFeatureNet loads in milliseconds; for Inception the
    file must be a state dict with torch-fidelity's Inception layers."""
    if weights_path is None:
        return
    if extractor == TINY:
        load_feature_net(weights_path)
        return
    fix = f"pass torch-fidelity's Inception weights, {URL_INCEPTION_V3}"
    try:
        sd = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise unreadable(weights_path, f"{extractor} weights file", type(e).__name__, fix) from e
    fc = sd.get("fc.weight") if isinstance(sd, dict) else None
    if not (isinstance(sd, dict) and "Conv2d_1a_3x3.conv.weight" in sd and fc is not None
            and tuple(fc.shape) == (1008, 2048)):
        raise unreadable(weights_path, f"{extractor} weights file", "no Inception-v3 layers in it", fix)


def weights_verdict(extractor: str, sha256: str) -> str:
    """What every metric row says of the feature extractor's weights: Inception scores are
    comparable with published ones only with torch-fidelity's released file."""
    if extractor != INCEPTION:
        return f"{extractor} sha256 {sha256[:12]}"
    if sha256.startswith(RELEASE_SHA256_PREFIX):
        return "torch-fidelity's release"
    return (f"NOT torch-fidelity's release (sha256 {sha256[:12]}, the release's begins "
            f"{RELEASE_SHA256_PREFIX}): not comparable with published scores")


# -----------------------------------------------------------------------------
# torch-fidelity feature extractor


class TinyFeatureExtractor(torch_fidelity.FeatureExtractorBase):
    """TinyFeatureNet behind torch-fidelity's contract: uint8 Bx3xHxW in, a tuple of the
    requested features out, in `features_list` order."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"feature extractor {name!r} needs feature_extractor_weights_path")
        self.net = load_feature_net(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 Bx3xHxW images, got {getattr(x, 'dtype', type(x))} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        x = to_float(x)
        size = self.net.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        pool = self.net.features(x)
        logits_unbiased = F.linear(pool, self.net.head.weight)  # IS on bias-free logits, as for Inception
        features = {"pool": pool, "logits_unbiased": logits_unbiased,
                    "logits": logits_unbiased + self.net.head.bias}
        return tuple(features[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "pool", "logits_unbiased", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled():
        return True

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, TinyFeatureNet.input_size, TinyFeatureNet.input_size, dtype=torch.uint8)


if TINY not in FEATURE_EXTRACTORS_REGISTRY:  # a module reload must not register twice
    torch_fidelity.register_feature_extractor(TINY, TinyFeatureExtractor)

# -----------------------------------------------------------------------------
# image sets and metrics


class _TensorImages(Dataset):
    def __init__(self, images):
        self.images, self.size = images, tuple(images.shape[-2:])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def image_set(source, role: str = "images") -> Dataset:
    """A Dataset of uint8 3xHxW tensors (each with attribute `size` = (H, W)) from an image
    directory (recursive), an .npz whose arr_0 is uint8 NHWC (the ADM evaluation format),
    a uint8 NHWC numpy array, or a uint8 NCHW tensor. `role` names the set in errors."""
    if isinstance(source, (_TensorImages, ImageFiles)):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return ImageFiles.of_directory(path)
        if not path.exists():
            raise FileNotFoundError(f"{role} not found: {path}")
        if path.suffix != ".npz":
            raise ValueError(f"{role} must be a directory of images or an .npz file, got {path}")
        with open_npz(path, f"{role} .npz", "pass images in the ADM format: arr_0, uint8 N x H x W x 3",
                      required=["arr_0"]) as npz:
            source = npz["arr_0"]
        role = f"{role} {path}"
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[-1] != 3:
            raise ValueError(f"{role}: expected uint8 NxHxWx3 array, got shape {source.shape}")
        source = torch.from_numpy(source).permute(0, 3, 1, 2)
    if not torch.is_tensor(source) or source.dtype != torch.uint8 or source.dim() != 4 or source.shape[1] != 3:
        raise ValueError(f"{role}: expected uint8 Nx3xHxW tensor, got {getattr(source, 'dtype', type(source))} "
                         f"{tuple(getattr(source, 'shape', ()))}")
    if len(source) == 0:
        raise ValueError(f"{role} is empty")
    return _TensorImages(source.cpu())


def inception_weights_location() -> Path:
    """Where torch-fidelity looks for (and downloads) the Inception weights by default."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def _weights_for(extractor, weights_path, verbose):
    if weights_path is not None:
        if not Path(weights_path).is_file():
            hint = "" if extractor != INCEPTION else f" (the standard file is {URL_INCEPTION_V3})"
            raise FileNotFoundError(f"weights for {extractor} not found: {weights_path}{hint}")
        return str(weights_path)
    if extractor == TINY:
        raise ValueError(f"{TINY} needs weights_path (make them with `variant train-extractor`)")
    if extractor == INCEPTION and not inception_weights_location().is_file():
        target = inception_weights_location()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(target), progress=verbose)
        except OSError as e:
            raise FileNotFoundError(
                f"Inception weights are missing and could not be downloaded ({e}). Offline, fetch "
                f"{URL_INCEPTION_V3} elsewhere and place it at {target} (torch-fidelity's default, "
                f"under $TORCH_HOME), or pass weights_path=") from e
    return None  # torch-fidelity finds the file in the torch hub cache


def _device(device) -> torch.device:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"torch-fidelity runs on cpu or cuda, not {device}")
    return device


def feature_layer(extractor: str, metric: str) -> str:
    """The extractor's layer torch-fidelity uses for `metric` (fid, prc, isc)."""
    return FEATURE_EXTRACTORS_REGISTRY[extractor].get_default_feature_layer_for_metric(metric)


def extract_features(images: Dataset, layers: list[str], extractor: str = TINY, weights_path=None,
                     device=None, batch_size: int = 200, verbose: bool = False) -> dict[str, torch.Tensor]:
    """{layer: N x F features} of an image set, through torch-fidelity's own extractor and
    data loop (its documented preprocessing: uint8 in, resizing inside the extractor)."""
    device = _device(device)
    weights = _weights_for(extractor, weights_path, verbose)
    cuda = device.type == "cuda"
    # torch-fidelity moves its extractor with .cuda(), i.e. to the current CUDA device
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        fe = create_feature_extractor(extractor, list(dict.fromkeys(layers)), cuda=cuda, verbose=verbose,
                                      feature_extractor_weights_path=weights)
        # no worker processes, as calculate_metrics(save_cpu_ram=True)
        return get_featuresdict_from_dataset(images, fe, batch_size, cuda, True, verbose)


COMPUTED = "computed from the reference images"
STORED = "reference batch mu/sigma (ADM)"


def fid_stats(features: torch.Tensor) -> dict:
    """mu and sigma of N x F features, in float64 (the dtype of ADM's stored statistics)."""
    return fid_features_to_statistics(features.double())


def fid_to(features: torch.Tensor, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FID of a feature set against reference statistics (torch-fidelity's formula)."""
    ref = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64)}
    return fid_statistics_to_metric(fid_stats(features), ref, False)[torch_fidelity.KEY_METRIC_FID]


def paired_fid_difference(a: torch.Tensor, b: torch.Tensor, mu: np.ndarray, sigma: np.ndarray,
                          resamples: int, seed: int = 0) -> tuple[float, float]:
    """FID(a) - FID(b) and its paired-bootstrap standard error, for feature sets whose rows
    pair up (a[i] and b[i] drawn with the same label and seed): each resample takes the
    same indices from both, so what the two sets share cancels out of the spread."""
    if len(a) != len(b) or resamples < 2:
        raise ValueError(f"paired sets of equal size and at least 2 resamples, got {len(a)}, {len(b)}, {resamples}")
    rng, n = np.random.default_rng(seed), len(a)
    diffs = []
    for _ in range(resamples):
        idx = torch.from_numpy(rng.integers(0, n, n))
        diffs.append(fid_to(a[idx], mu, sigma) - fid_to(b[idx], mu, sigma))
    return fid_to(a, mu, sigma) - fid_to(b, mu, sigma), float(np.std(diffs, ddof=1))


@dataclass
class ReferenceStats:
    """What every evaluation needs of the reference set: its features for precision/recall
    and the mean and covariance FID compares with (variant.stages.reference caches them on disk):
    by default those of the features, for ImageNet the reference batch's stored ones."""

    features: torch.Tensor     # N x F, the extractor's FID/PRC layer
    mu: np.ndarray             # float64
    sigma: np.ndarray          # float64
    size: tuple[int, int]      # image H, W
    extractor: str
    fid_statistics: str = COMPUTED   # where mu/sigma come from: COMPUTED or STORED
    weights: str = ""                # weights_verdict() of the extractor's weights

    @classmethod
    def compute(cls, reference, extractor: str = TINY, weights_path=None, device=None,
                batch_size: int = 200, verbose: bool = False) -> "ReferenceStats":
        ref = image_set(reference, "reference")
        layer = feature_layer(extractor, "fid")
        if layer != feature_layer(extractor, "prc"):
            raise ValueError(f"{extractor}: FID and precision/recall read different layers; cache both")
        feats = extract_features(ref, [layer], extractor, weights_path, device, batch_size, verbose)[layer]
        stats = fid_stats(feats)
        return cls(feats, stats["mu"], stats["sigma"], ref.size, extractor)


def fid_interval(features: torch.Tensor, mu: np.ndarray, sigma: np.ndarray, resamples: int,
                 seed: int = 0, z: float = 1.96) -> tuple[float, float]:
    """95% interval of FID, FID +- z bootstrap standard errors: the generated features
    resampled with replacement, the reference statistics held fixed (they are the target).
    Not the resamples' percentiles: repeated samples inflate FID, so those sit above FID
    (far above for few samples in many dimensions), while their spread is still the
    estimate's spread."""
    if resamples < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 resamples, got {resamples}")
    rng = np.random.default_rng(seed)
    n = len(features)
    se = float(np.std([fid_to(features[rng.integers(0, n, n)], mu, sigma) for _ in range(resamples)], ddof=1))
    fid = fid_to(features, mu, sigma)
    return fid - z * se, fid + z * se


def compute_metrics(generated, reference, extractor: str = TINY, weights_path=None, device=None,
                    prc_neighborhood: int = 3, batch_size: int = 200, isc_splits: int = 10,
                    bootstrap: int = 0, seed: int = 0, verbose: bool = False, isc_order=None) -> dict:
    """FID, Inception Score and precision/recall of `generated` against `reference`.

    `generated` is an image set as accepted by image_set(); `reference` is one too, or its
    ReferenceStats (computed once by `variant reference-stats`). FID compares with the
    reference's mu/sigma. Precision asks how many generated samples fall in the reference
    manifold, recall the converse (k = prc_neighborhood). The Inception Score averages
    `isc_splits` contiguous splits, as ADM's evaluator: in the images' order, or in
    `isc_order` (indices into them) when given, so a class-sorted set needs an order that
    mixes the classes. The metrics are torch-fidelity's functions on torch-fidelity's
    features (as calculate_metrics(isc, fid, prc, samples_shuffle=False, save_cpu_ram=True),
    but with float64 statistics). With `bootstrap` resamples, fid_ci_low/high bound FID (95%,
    fid_interval); else NaN.
    """
    gen = image_set(generated, "generated")
    ref = reference if isinstance(reference, ReferenceStats) else image_set(reference, "reference")
    if gen.size != tuple(ref.size):
        raise ValueError(f"generated images are {gen.size[0]}x{gen.size[1]} but reference images "
                         f"are {ref.size[0]}x{ref.size[1]}")
    n_ref = len(ref.features) if isinstance(ref, ReferenceStats) else len(ref)
    smallest = min(len(gen), n_ref)
    if smallest <= max(prc_neighborhood, 1) or len(gen) < isc_splits:
        raise ValueError(f"too few images ({len(gen)} generated, {n_ref} reference): need more "
                         f"than prc_neighborhood={prc_neighborhood} and at least isc_splits={isc_splits}")
    if isc_order is not None and not np.array_equal(np.sort(isc_order), np.arange(len(gen))):
        raise ValueError(f"isc_order is not a permutation of the {len(gen)} generated images")
    _weights_for(extractor, weights_path, verbose)   # a missing file fails before any work
    if not isinstance(ref, ReferenceStats):
        ref = ReferenceStats.compute(ref, extractor, weights_path, device, batch_size, verbose)
    elif ref.extractor != extractor:
        raise ValueError(f"reference statistics were computed with {ref.extractor}, not {extractor}")
    fid_layer, isc_layer = feature_layer(extractor, "fid"), feature_layer(extractor, "isc")
    feats = extract_features(gen, [fid_layer, isc_layer], extractor, weights_path, device, batch_size, verbose)
    fid = fid_to(feats[fid_layer], ref.mu, ref.sigma)
    logits = feats[isc_layer] if isc_order is None else feats[isc_layer][torch.as_tensor(np.asarray(isc_order))]
    isc = isc_features_to_metric(logits, isc_splits, shuffle=False)
    prc = prc_features_to_metric(feats[fid_layer], ref.features, prc_neighborhood=prc_neighborhood,
                                 save_cpu_ram=True, verbose=verbose)
    lo, hi = fid_interval(feats[fid_layer], ref.mu, ref.sigma, bootstrap, seed) if bootstrap else (math.nan, math.nan)
    return {
        "fid": fid,
        "fid_ci_low": lo, "fid_ci_high": hi, "bootstrap": bootstrap,
        "isc_mean": isc[torch_fidelity.KEY_METRIC_ISC_MEAN],
        "isc_std": isc[torch_fidelity.KEY_METRIC_ISC_STD],
        "precision": prc[torch_fidelity.KEY_METRIC_PRECISION],
        "recall": prc[torch_fidelity.KEY_METRIC_RECALL],
        "num_generated": len(gen),
        "num_reference": len(ref.features),
        "extractor": extractor,
        "fid_statistics": ref.fid_statistics,
    }
