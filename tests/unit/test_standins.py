"""variant stand-ins: the rehearsal's random Inception must tell images apart."""
import numpy as np
import torch

from variant import standins
from variant.metrics import extract_features, feature_layer, fid_stats, image_set


def test_the_random_inception_gives_each_image_its_own_features(tmp_path):
    """With torch's default init the activations shrank to ~1e-8 and every image got the
    same features (the rehearsal's FIDs were 1e-12); the stand-in's must vary between
    images, so that FID, precision and recall compute on real spreads."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = np.stack([np.asarray(standins._jpeg(rng, 128, 128)) for _ in range(4)])
    weights = standins.random_inception(tmp_path / "inception.pth")
    layer = feature_layer("inception-v3-compat", "fid")
    feats = torch.as_tensor(extract_features(image_set(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()),
                                             [layer], "inception-v3-compat", weights, "cpu")[layer]).double()
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()
    spread, size = feats.std(0).mean().item(), feats.abs().mean().item()
    assert size > 1e-2 and spread > 1e-2 * size, (size, spread)
    assert np.trace(fid_stats(feats)["sigma"]) > 0
