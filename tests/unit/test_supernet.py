"""Paper Eq. 2 (equidistant layers) and Eq. 3 (bridge and flexible zones)."""
import pytest

from variant.models.supernet import Subnet, SubnetError, subnet_layers


@pytest.mark.parametrize("D", [4, 8, 12, 16, 17, 24, 30, 36])
def test_eq2_shape_of_every_subnet(D):
    for d in range(2, D + 1):
        layers = subnet_layers(D, d)
        assert len(layers) == d and len(set(layers)) == d
        assert layers[0] == 0 and layers[-1] == D - 1           # first and last kept
        assert list(layers) == sorted(layers)
        gaps = {b - a for a, b in zip(layers, layers[1:])}       # equidistant up to the floor
        assert gaps <= {(D - 1) // (d - 1), -(-(D - 1) // (d - 1))}
    assert subnet_layers(D, D) == tuple(range(D))


def test_eq2_worked_example():
    # floor(i * 29 / 3) for i = 0..3
    assert subnet_layers(30, 4) == (0, 9, 19, 29)
    assert subnet_layers(30, 2) == (0, 29)


@pytest.mark.parametrize("D", [8, 16, 17, 30, 33])
def test_divisible_depths_are_nested(D):
    """If (a-1) divides (b-1), every index of I_a is also one of I_b (same floor)."""
    for a in range(2, D + 1):
        for b in range(a, D + 1):
            if (b - 1) % (a - 1) == 0:
                assert set(subnet_layers(D, a)) <= set(subnet_layers(D, b)), (D, a, b)
            assert set(subnet_layers(D, a)) <= set(subnet_layers(D, D))


def test_paper_depths_at_d30():
    """The paper says I_{0.25D} is inside I_{0.5D}; by its own Eq. 2 that fails at D=30,
    where 3 does not divide 7 and 7 does not divide 15. Only I_2 nests in all."""
    I = {d: set(subnet_layers(30, d)) for d in (2, 4, 8, 16)}
    assert I[2] <= I[4] and I[2] <= I[8] and I[2] <= I[16]
    assert not I[4] <= I[8] and not I[8] <= I[16]


def test_eq3_zones():
    s = Subnet(depth=30, subnet_depth=16, bridge=6, num_scales=10)
    for k in range(6):
        assert s.layers_at(k) == tuple(range(30))
    for k in range(6, 10):
        assert s.layers_at(k) == subnet_layers(30, 16)
    assert s.runs(2, 5) and not s.runs(2, 6) and s.runs(3, 9)
    assert Subnet(30, 16, 0, 10).layers_at(0) == subnet_layers(30, 16)   # skip-all ablation
    assert Subnet(30, 16, 10, 10).is_full and Subnet(30, 30, 6, 10).is_full


@pytest.mark.parametrize("d, N, needle", [
    (1, 6, "d=1 is outside 2..30"), (31, 6, "d=31 is outside 2..30"), (0, 6, "outside 2..30"),
    (16, 11, "N=11 is outside 1..10"), (16, -1, "N=-1 is outside 1..10"),
])
def test_bad_configurations_are_rejected_with_a_message(d, N, needle):
    with pytest.raises(SubnetError, match=needle):
        Subnet(depth=30, subnet_depth=d, bridge=N, num_scales=10)


def test_explicit_subnet_scales():
    s = Subnet.on_scales(30, 16, {0, 1, 2}, 10)         # Table 1 "early subnet"
    assert s.layers_at(0) == subnet_layers(30, 16) and s.layers_at(3) == tuple(range(30))
    assert s.name == "d16_S1-2-3"
    with pytest.raises(SubnetError, match=r"subnet scales \[10\] are outside 0..9"):
        Subnet.on_scales(30, 16, {9, 10}, 10)
