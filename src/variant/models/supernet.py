"""VARiant's supernet: which layers run at which scale (paper Eq. 2 and 3).

Everything here is plain integers, so the model, the sampler, the trainer and the
cost model all agree on one definition of a subnet.
"""
from __future__ import annotations

from dataclasses import dataclass


class SubnetError(ValueError):
    """A (d, N) that the supernet cannot run."""


def subnet_layers(depth: int, subnet_depth: int) -> tuple[int, ...]:
    """I_d of paper Eq. 2: d equidistant layers of D, first and last always kept.

    I_d = { floor(i * (D - 1) / (d - 1)) : i = 0..d-1 }, computed in integers so there
    is no floating-point rounding at the floor.
    """
    if not isinstance(depth, int) or depth < 2:
        raise SubnetError(f"model depth D must be an integer >= 2, got {depth!r}")
    if not isinstance(subnet_depth, int) or not 2 <= subnet_depth <= depth:
        raise SubnetError(
            f"subnet depth d={subnet_depth!r} is outside 2..{depth} for a depth-{depth} model "
            "(Eq. 2 keeps the first and last layer, so d >= 2)")
    return tuple(i * (depth - 1) // (subnet_depth - 1) for i in range(subnet_depth))


@dataclass(frozen=True)
class Subnet:
    """One runtime configuration of the supernet.

    depth: full depth D.  subnet_depth: d (d == D is plain VAR).  bridge: N, the number of
    leading scales (1-based r_1..r_N) that always run all D layers (paper Eq. 3).
    N == num_scales is plain VAR as well; N == 0 is the "skip all scales" ablation of
    Table 5, where every scale runs the subnet.

    subnet_scales, if given, replaces the zones of Eq. 3 by an explicit set of 0-based
    scales that run the subnet (Table 1 puts the subnet on early or middle scales).
    """

    depth: int
    subnet_depth: int
    bridge: int
    num_scales: int
    subnet_scales: frozenset[int] | None = None

    def __post_init__(self):
        subnet_layers(self.depth, self.subnet_depth)  # validates D and d
        if not isinstance(self.bridge, int) or not 0 <= self.bridge <= self.num_scales:
            raise SubnetError(
                f"bridge size N={self.bridge!r} is outside 1..{self.num_scales} "
                f"(the model has K={self.num_scales} scales; N=0 is the skip-all-scales ablation)")
        if self.subnet_scales is not None:
            bad = [k for k in self.subnet_scales if not 0 <= k < self.num_scales]
            if bad:
                raise SubnetError(f"subnet scales {sorted(bad)} are outside 0..{self.num_scales - 1}")
            object.__setattr__(self, "subnet_scales", frozenset(self.subnet_scales))

    @classmethod
    def on_scales(cls, depth: int, subnet_depth: int, scales, num_scales: int) -> "Subnet":
        """The subnet on an explicit set of 0-based scales, full depth elsewhere."""
        return cls(depth, subnet_depth, 0, num_scales, frozenset(scales))

    @classmethod
    def full(cls, depth: int, num_scales: int) -> "Subnet":
        return cls(depth, depth, num_scales, num_scales)

    @property
    def layers(self) -> tuple[int, ...]:
        return subnet_layers(self.depth, self.subnet_depth)

    def in_subnet(self, scale: int) -> bool:
        """Does 0-based scale `scale` run the subnet (flexible zone) rather than all layers?"""
        if self.subnet_scales is not None:
            return scale in self.subnet_scales
        return scale >= self.bridge

    @property
    def is_full(self) -> bool:
        return self.subnet_depth == self.depth or not any(map(self.in_subnet, range(self.num_scales)))

    def layers_at(self, scale: int) -> tuple[int, ...]:
        """Active layers at 0-based scale index `scale` (Eq. 3)."""
        return self.layers if self.in_subnet(scale) else tuple(range(self.depth))

    def runs(self, layer: int, scale: int) -> bool:
        return not self.in_subnet(scale) or layer in self.layers

    @property
    def name(self) -> str:
        if self.subnet_scales is not None:
            return f"d{self.subnet_depth}_S" + "-".join(str(k + 1) for k in sorted(self.subnet_scales))
        return f"d{self.subnet_depth}_N{self.bridge}"
