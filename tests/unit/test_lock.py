"""The CPU lock file (requirements/cpu-lock.txt, used by `make setup`) must satisfy the ranges
pyproject.toml declares: a range tightened without re-locking fails here, not in set-up."""
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "cpu-lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_declared_dependency_is_locked_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in ("pipeline", "test")
                                          for r in project["optional-dependencies"][extra]]
    pins = locked()
    for spec in map(Requirement, declared):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is declared but not in requirements/cpu-lock.txt"
        assert spec.specifier.contains(pins[name], prereleases=True), \
            f"{spec.name}=={pins[name]} in the lock is outside pyproject's {spec.specifier}"


def test_the_lock_pins_the_torch_pair_the_set_up_installs():
    makefile = (ROOT / "Makefile").read_text()
    pins = locked()
    assert f"torch=={pins['torch']}" in makefile and f"torchvision=={pins['torchvision']}" in makefile
