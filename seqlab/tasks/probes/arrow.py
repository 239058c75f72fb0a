"""Arrow pointing: does the arrow point at the circle? Binary classification of small images.

Source: the arrow-pointing extrapolation task of Pöppel et al. 2025, "pLSTM: parallelizable
Linear Source Transition Mark networks" (arXiv:2506.11997): an image holds an arrow and a
circle, and the label says whether the arrow, extended as a ray from its tip, hits the
circle. Objects keep their size in pixels while the image grows, so a model trained on small
images and tested on larger ones meets longer distances between arrow and target: it
extrapolates only if it has learned the direction, not a distance.

Here the image is a grid of ``size x size`` pixels with ``size = sqrt(seq_len)``, given as
``seq_len`` tokens in raster order (row after row), so that a sequence model reads it as it
is and a 2-D model (``seqlab.models.grid``) reshapes it. Pixel tokens: 0 background,
1 circle, 2 arrow shaft, 3 arrow head. The paper draws RGB arrows on 192-pixel images; at
16 pixels an arrowhead is a couple of pixels, so here it carries a token of its own: the
direction is readable where the arrow is, and what remains hard is the long-range part,
whether the ray meets the circle somewhere else in the image.

A batch is sampled, not loaded: per example a label (half of each), a circle (centre,
radius) and an arrow tip; the arrow's angle is then drawn so that the ray passes within
``radius / margin`` of the centre (label 1) or farther than ``radius * margin`` from it, or
points away (label 0), so no example sits on the decision boundary. Candidates whose arrow
leaves the image or comes within ``clearance`` of the circle are redrawn (all rows at
once, ``_CANDIDATES`` candidates per row and round). The label is then recomputed from the
geometry by :func:`points_at`. ``extra`` holds the geometry (tip, direction, length, centre,
radius) so that tests can check labels and pixels. ``with_length(24 ** 2)`` is the same task
on 24 x 24 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import Probe, ProbeBatch, ProbeConfig

BACKGROUND, CIRCLE, SHAFT, HEAD = 0, 1, 2, 3
_HEAD_LENGTH = 2.0               # pixels from the head's base to the tip
_HEAD_TAN = math.tan(math.radians(35))   # half-opening of the head
_BORDER = 0.5                    # every object keeps this far from the image edge
_CANDIDATES = 32                 # draws per row and round of rejection sampling
_ROUNDS = 64


@dataclass(frozen=True)
class ArrowConfig(ProbeConfig):
    """Arrow-pointing parameters; lengths in pixels.

    Attributes:
        seq_len: pixels per image, ``size ** 2`` (a perfect square, size >= 12).
        min_radius, max_radius: the circle's radius.
        min_length, max_length: the arrow's length, tail to tip (head included).
        margin: hits pass within radius / margin of the centre, misses beyond
            radius * margin (>= 1; larger keeps examples away from the boundary).
        clearance: least gap between the arrow's axis and the circle's edge.
    """

    seq_len: int = 256
    min_radius: float = 1.5
    max_radius: float = 2.5
    min_length: float = 4.0
    max_length: float = 6.0
    margin: float = 1.25
    clearance: float = 2.0

    def validate(self) -> None:
        super().validate()
        side = math.isqrt(self.seq_len)
        require(side * side == self.seq_len and side >= 12, self, "seq_len",
                "size ** 2 for an image side size >= 12 (e.g. 256 = 16 x 16, 576 = 24 x 24)")
        require(0 < self.min_radius <= self.max_radius, self, "min_radius",
                f"a positive number <= max_radius = {self.max_radius}")
        require(_HEAD_LENGTH < self.min_length <= self.max_length, self, "min_length",
                f"a number > the head length {_HEAD_LENGTH} and <= max_length = {self.max_length}")
        require(self.margin >= 1, self, "margin", "a number >= 1")
        require(self.clearance >= 0, self, "clearance", "a number >= 0")
        room = 2 * (self.max_radius + self.clearance + _BORDER) + self.max_length
        require(side >= room, self, "seq_len",
                f"an image side >= {room:g} pixels for these object sizes (got {side})")


def points_at(tip: Tensor, direction: Tensor, center: Tensor, radius: Tensor) -> Tensor:
    """Whether the ray from ``tip`` along unit ``direction`` meets the disc (bool (B,)).

    Args:
        tip, direction, center: (B, 2) as (row, col); radius: (B,).
    """
    rel = center - tip
    ahead = (rel * direction).sum(-1)
    off_axis = (rel[:, 0] * direction[:, 1] - rel[:, 1] * direction[:, 0]).abs()
    inside = rel.norm(dim=-1) <= radius
    return inside | ((ahead > 0) & (off_axis <= radius))


def render(size: int, tip: Tensor, direction: Tensor, length: Tensor, center: Tensor,
           radius: Tensor) -> Tensor:
    """Images (B, size, size) int64 of one circle and one arrow each (tokens as above).

    A pixel (i, j) is the point (i + 0.5, j + 0.5). The circle is the disc of ``radius``;
    the head is the triangle of the last ``_HEAD_LENGTH`` pixels before the tip (apex at the
    tip), widened by half a pixel; the shaft is every pixel within 0.6 of the rest of the
    axis. The arrow is drawn over the circle.
    """
    coords = torch.arange(size, dtype=torch.float64) + 0.5
    pix = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), -1)   # (S, S, 2)
    pix = pix[None]                                                         # (1, S, S, 2)
    to_center = pix - center[:, None, None, :]
    disc = to_center.norm(dim=-1) <= radius[:, None, None]
    rel = pix - tip[:, None, None, :]
    u = direction[:, None, None, :]
    along = (rel * u).sum(-1)                              # <= 0 behind the tip
    across = (rel[..., 0] * u[..., 1] - rel[..., 1] * u[..., 0]).abs()
    head = (along >= -_HEAD_LENGTH) & (along <= 0.5) & (across <= 0.5 + (-along).clamp(min=0) * _HEAD_TAN)
    shaft = (along >= -length[:, None, None]) & (along < -_HEAD_LENGTH) & (across <= 0.6)
    img = torch.full(disc.shape, BACKGROUND, dtype=torch.int64)
    img[disc] = CIRCLE
    img[shaft] = SHAFT
    img[head] = HEAD
    return img


def _segment_distance(point: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance from ``point`` to the segment [a, b] (all (..., 2))."""
    ab = b - a
    t = (((point - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    return (point - (a + t[..., None] * ab)).norm(dim=-1)


@register("arrow")
class Arrow(Probe):
    """Arrow pointing; see the module docstring."""

    kind = "classify"
    Config = ArrowConfig

    @property
    def vocab_size(self) -> int:
        return 4

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def size(self) -> int:
        """The image side in pixels."""
        return math.isqrt(self.cfg.seq_len)

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        g = self.generator(split, step, seed)
        want = torch.rand(batch_size, generator=g) < 0.5       # the label each row aims for
        geo = self._sample(g, want)
        img = render(self.size, geo["tip"], geo["direction"], geo["length"], geo["center"],
                     geo["radius"])
        label = points_at(geo["tip"], geo["direction"], geo["center"], geo["radius"]).long()
        return ProbeBatch(img.flatten(1), label, {k: v.float() for k, v in geo.items()})

    def _sample(self, g: torch.Generator, want: Tensor) -> dict[str, Tensor]:
        """Geometry per row: every tensor op is over (rows, candidates); the loop runs over
        rounds of rejection sampling, and a round is rarely needed twice."""
        cfg, S, B = self.cfg, float(self.size), want.shape[0]
        geo = {"tip": torch.zeros(B, 2, dtype=torch.float64),
               "direction": torch.zeros(B, 2, dtype=torch.float64),
               "length": torch.zeros(B, dtype=torch.float64),
               "center": torch.zeros(B, 2, dtype=torch.float64),
               "radius": torch.zeros(B, dtype=torch.float64)}
        todo = torch.ones(B, dtype=torch.bool)
        for _ in range(_ROUNDS):
            rows = todo.nonzero().squeeze(1)
            if rows.numel() == 0:
                return geo
            shape = (rows.numel(), _CANDIDATES)

            def uniform(low, high, extra=()):
                u = torch.rand(*shape, *extra, generator=g, dtype=torch.float64)
                return low + (high - low) * u

            radius = uniform(cfg.min_radius, cfg.max_radius)
            lo = _BORDER + radius[..., None]
            center = lo + (S - 2 * lo) * torch.rand(*shape, 2, generator=g, dtype=torch.float64)
            tip = uniform(_BORDER, S - _BORDER, (2,))
            length = uniform(cfg.min_length, cfg.max_length)
            rel = center - tip
            dist = rel.norm(dim=-1).clamp(min=1e-9)
            toward = torch.atan2(rel[..., 1], rel[..., 0])
            hit_cone = torch.asin((radius / (cfg.margin * dist)).clamp(max=1.0))
            miss_cone = torch.asin((radius * cfg.margin / dist).clamp(max=1.0))
            u = torch.rand(*shape, generator=g, dtype=torch.float64)
            sign = torch.where(torch.rand(*shape, generator=g) < 0.5, -1.0, 1.0).double()
            offset = torch.where(want[rows, None], (2 * u - 1) * hit_cone,
                                 sign * (miss_cone + u * (math.pi - miss_cone)))
            angle = toward + offset
            direction = torch.stack([angle.cos(), angle.sin()], -1)
            tail = tip - length[..., None] * direction
            inside = ((tail >= _BORDER) & (tail <= S - _BORDER)).all(-1)
            apart = _segment_distance(center, tail, tip) >= radius + cfg.clearance
            ok = inside & apart
            first = ok.long().argmax(1)                        # the first valid candidate
            found = ok.any(1)
            pick = rows[found]
            at = first[found]
            for name, value in (("tip", tip), ("direction", direction), ("length", length),
                                ("center", center), ("radius", radius)):
                geo[name][pick] = value[found, at]
            todo[pick] = False
        raise RuntimeError(f"arrow: no valid layout found for {int(todo.sum())} rows in "
                           f"{_ROUNDS} rounds; the objects do not fit {self.size} x {self.size}")
