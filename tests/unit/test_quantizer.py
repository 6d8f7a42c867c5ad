"""Which shared phi conv each scale uses: the choice the released checkpoints were trained with."""
import pytest

from variant.models.vqvae import SharedPhi


def convs(share: int, scales: int) -> list[int]:
    phi = SharedPhi(channels=4, share=share)
    return [phi.index(k / (scales - 1)) for k in range(scales)]


def test_the_released_ten_scales_use_the_references_convs():
    # 2/9 and 7/9 lie exactly halfway between two ticks; float64 rounding decides, and
    # the reference (numpy float64 ticks, argmin) picks these.
    assert convs(4, 10) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_four_scales_use_each_conv_once():
    assert convs(4, 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("share, expected", [
    (2, [0] * 5 + [1] * 5),     # ticks 1/4 and 3/4: the boundary 1/2 falls between 4/9 and 5/9
    (1, [0] * 10),
])
def test_other_counts_use_ticks_at_one_over_2s(share, expected):
    assert convs(share, 10) == expected
