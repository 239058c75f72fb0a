"""Typed configs: wrong types, ranges and unknown keys are named."""

from dataclasses import dataclass
from typing import Literal

import pytest

from seqlab.config import Config, ConfigError, require


@dataclass(frozen=True)
class Inner(Config):
    size: int = 2


@dataclass(frozen=True)
class Opts(Config):
    lr: float = 1e-3
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None
    inner: Inner = Inner()

    def validate(self):
        require(self.lr > 0, self, "lr", "a positive number")


def test_ok_and_coercion():
    o = Opts.from_dict({"lr": 1, "sizes": [3, 4], "inner": {"size": 5}})
    assert o.lr == 1.0 and isinstance(o.lr, float)
    assert o.sizes == (3, 4) and o.inner == Inner(5)
    assert Opts.from_dict(o.to_dict()) == o


@pytest.mark.parametrize("data, pattern", [
    ({"lr": -1.0}, r"Opts.lr = -1.0 is not allowed: expected a positive number"),
    ({"mode": "c"}, r"Opts.mode = 'c' is not allowed: expected one of 'a', 'b'"),
    ({"sizes": [1, "x"]}, r"Opts.sizes = \[1, 'x'\] is not allowed: expected a tuple of int"),
    ({"limit": 2.5}, r"Opts.limit = 2.5 is not allowed: expected int or None"),
    ({"lr": True}, r"Opts.lr = True is not allowed: expected a finite number"),
    ({"lrr": 1.0}, r"Opts has no option 'lrr'; known options: lr, mode, sizes, limit, inner"),
    ({"inner": {"size": "big"}}, r"Inner.size = 'big' is not allowed: expected int"),
], ids=["range", "literal", "tuple", "optional", "bool-not-float", "unknown", "nested"])
def test_errors_name_field_value_and_allowed(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Opts.from_dict(data)
