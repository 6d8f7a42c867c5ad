"""plan_steps: a global batch becomes processes x micro-batch x accumulation, the micro-batch
capped by params train.micro_batch and set exactly by --micro-batch (TrainOptions)."""
from dataclasses import dataclass
from pathlib import Path

import pytest

from variant.config import load_params
from variant.stages.train import TrainOptions, plan_steps
from variant.training.distributed import DistInfo
from variant.training.params import TrainParams

REPO = Path(__file__).resolve().parents[2]
PHASES = (1, 2, 1)


@dataclass
class Tokens:
    """What plan_steps reads of a TokenDataset."""
    num_images: int = 80
    n_flips: int = 2


def plan(G=8, world=1, micro_batch=None, options=TrainOptions(), ds=Tokens()):
    return plan_steps(ds, G, DistInfo(world=world), options, PHASES, "tokens/train", micro_batch=micro_batch)


@pytest.mark.parametrize("world, params_micro, options, micro, accum", [
    (1, 2, TrainOptions(), 2, 4),
    (1, 16, TrainOptions(), 8, 1),                       # more than the process's share: the share
    (1, None, TrainOptions(), 8, 1),                     # unset: the whole share at once
    (1, 2, TrainOptions(micro_batch=4), 4, 2),           # --micro-batch wins over params
    (2, 2, TrainOptions(), 2, 2),
    (2, None, TrainOptions(), 4, 1),
])
def test_micro_batch_and_accumulation(world, params_micro, options, micro, accum):
    p = plan(world=world, micro_batch=params_micro, options=options)
    assert (p.micro, p.accum) == (micro, accum)
    assert world * p.micro * p.accum == 8
    assert p.steps_per_epoch == 80 // 8 and p.epochs == sum(PHASES) and p.total == 10 * 4


def test_flips_both_doubles_the_epoch():
    assert plan(options=TrainOptions(flips="both")).steps_per_epoch == 2 * 80 // 8


@pytest.mark.parametrize("params_micro, options", [(3, TrainOptions()), (None, TrainOptions(micro_batch=3))])
def test_a_micro_batch_that_does_not_divide_the_global_batch_is_refused(params_micro, options):
    with pytest.raises(ValueError, match="global batch 8 is not 1 process"):
        plan(micro_batch=params_micro, options=options)


def test_fewer_samples_than_one_global_batch_is_refused():
    with pytest.raises(ValueError, match="tokens/train: 4 samples per epoch"):
        plan(ds=Tokens(num_images=4))


def test_train_params_read_micro_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("VARIANT_DATA_ROOT", str(tmp_path))
    cfg = load_params(REPO / "params.yaml", "paper")
    assert cfg["data"]["root"] == str(tmp_path)
    assert TrainParams.from_config(cfg).micro_batch == 16
    assert TrainParams.from_config(load_params(REPO / "params.yaml", "tiny")).micro_batch is None
