"""The arrow-pointing probe: labels and pixels against an independent float64 recomputation
of the geometry in ``extra``, the margin around the decision boundary, larger images."""

import numpy as np
import pytest
import torch

from seqlab.tasks.probes.arrow import BACKGROUND, CIRCLE, HEAD, SHAFT, Arrow
from tests.tasks.probes.common import (check_config_error, check_determinism, check_metric,
                                       check_valid)


def geometry(batch):
    """The geometry of ``extra`` as float64 numpy arrays."""
    return {k: v.double().numpy() for k, v in batch.extra.items()}


def ray_hits_disc(geo, size: int) -> np.ndarray:
    """Walk each ray from its tip in steps of 0.01 pixel across the whole image and report
    whether any point lands in the disc (a hit's chord is >= 1.2 radius long, so a step
    of 0.01 cannot jump over it)."""
    t = np.arange(0.0, 2.0 * size, 0.01)                                  # (N,)
    points = geo["tip"][:, None, :] + t[None, :, None] * geo["direction"][:, None, :]
    dist = np.linalg.norm(points - geo["center"][:, None, :], axis=-1)    # (B, N)
    return (dist <= geo["radius"][:, None]).any(axis=1)


def pixel_centres(size: int) -> np.ndarray:
    c = np.arange(size) + 0.5
    return np.stack(np.meshgrid(c, c, indexing="ij"), -1)               # (S, S, 2) as (row, col)


@pytest.fixture(scope="module")
def batch16():
    return Arrow().batch("test", 0, 256)


def test_valid_deterministic_and_balanced(batch16):
    probe = Arrow()
    check_valid(probe, batch16, 256)
    check_determinism(probe)
    assert 0.35 < batch16.targets.double().mean().item() < 0.65


def test_labels_equal_a_walk_along_the_ray(batch16):
    geo = geometry(batch16)
    assert np.allclose(np.linalg.norm(geo["direction"], axis=-1), 1.0, atol=1e-6)
    hits = ray_hits_disc(geo, 16)
    assert hits.any() and not hits.all()
    assert np.array_equal(hits, batch16.targets.numpy() == 1)


def test_no_example_lies_in_the_margin_band(batch16):
    """A ray ahead of the tip passes within radius / margin of the centre or beyond
    radius * margin, never in between; the arrow keeps ``clearance`` from the circle."""
    cfg, geo = Arrow().cfg, geometry(batch16)
    rel = geo["center"] - geo["tip"]
    ahead = (rel * geo["direction"]).sum(-1)
    off_axis = np.abs(rel[:, 0] * geo["direction"][:, 1] - rel[:, 1] * geo["direction"][:, 0])
    r, slack = geo["radius"], 1e-4   # extra is float32
    in_band = (ahead > 0) & (off_axis > r / cfg.margin + slack) & (off_axis < r * cfg.margin - slack)
    assert not in_band.any()
    hit = batch16.targets.numpy() == 1
    assert (off_axis[hit] <= r[hit] / cfg.margin + slack).all() and (ahead[hit] > 0).all()
    tail = geo["tip"] - geo["length"][:, None] * geo["direction"]
    for point in (geo["tip"], tail, (geo["tip"] + tail) / 2):
        assert (np.linalg.norm(geo["center"] - point, axis=-1) >= r + cfg.clearance - slack).all()


@pytest.mark.parametrize("side", [16, 24])
def test_pixels_show_the_circle_and_the_arrow_head(side):
    probe = Arrow() if side == 16 else Arrow().with_length(side ** 2)
    batch = probe.batch("val", 1, 64)
    img = batch.inputs.view(-1, side, side).numpy()
    geo = geometry(batch)
    centres = pixel_centres(side)
    for b in range(img.shape[0]):
        # Every pixel whose centre is in the disc is circle and no other is: the arrow keeps
        # clearance 2 > its widest half-width (1.9 at the head's base), so it never covers it.
        dist = np.linalg.norm(centres - geo["center"][b], axis=-1)
        clear = np.abs(dist - geo["radius"][b]) > 1e-4        # float32 rounding at the edge
        assert np.array_equal((img[b] == CIRCLE)[clear], (dist <= geo["radius"][b])[clear])
        # The pixel one pixel behind the tip is head (the tip's own pixel may have its centre
        # ahead of the tip, past the head).
        i, j = np.floor(geo["tip"][b] - geo["direction"][b]).astype(int)
        assert img[b, i, j] == HEAD
        # Head pixels sit within the head's length (plus half a pixel's diagonal) of the tip;
        # every arrow pixel lies near the arrow's segment.
        to_tip = np.linalg.norm(centres - geo["tip"][b], axis=-1)
        assert (to_tip[img[b] == HEAD] <= 2.0 + 0.71).all()
        assert (img[b] == SHAFT).any()
        tail = geo["tip"][b] - geo["length"][b] * geo["direction"][b]
        arrow = (img[b] == SHAFT) | (img[b] == HEAD)
        near = [np.linalg.norm(tail + s * (geo["tip"][b] - tail) - centres, axis=-1)
                for s in np.linspace(0, 1, 101)]
        assert (np.min(near, axis=0)[arrow] <= 1.9 + 0.1).all()
    assert set(np.unique(img)) == {BACKGROUND, CIRCLE, SHAFT, HEAD}


def test_larger_images_keep_object_sizes_and_use_the_whole_image():
    small = Arrow()
    large = small.with_length(24 ** 2)
    assert large.size == 24 and large.seq_len == 576
    same = ("min_radius", "max_radius", "min_length", "max_length", "margin", "clearance")
    assert all(getattr(large.cfg, f) == getattr(small.cfg, f) for f in same)
    batch = large.batch("test", 0, 256)
    check_valid(large, batch, 256)
    geo = geometry(batch)
    cfg = large.cfg
    assert ((geo["radius"] >= cfg.min_radius) & (geo["radius"] <= cfg.max_radius)).all()
    assert ((geo["length"] >= cfg.min_length) & (geo["length"] <= cfg.max_length)).all()
    circle_pixels = (batch.inputs == CIRCLE).sum(1).double()
    assert circle_pixels.max() <= np.pi * (cfg.max_radius + 0.71) ** 2
    # Objects are placed over the whole 24 x 24 image, not only the 16 x 16 corner.
    assert geo["tip"].max() > 20 and geo["center"].max() > 20
    assert np.array_equal(ray_hits_disc(geo, 24), batch.targets.numpy() == 1)
    assert 0.35 < batch.targets.double().mean().item() < 0.65


def test_metric(batch16):
    check_metric(Arrow(), batch16, chance_below=0.65)


def test_config_errors_name_the_field():
    check_config_error(Arrow, "seq_len", seq_len=250)            # not a square
    check_config_error(Arrow, "seq_len", seq_len=14 ** 2)        # default objects need 16 x 16
    check_config_error(Arrow, "seq_len", seq_len=10 ** 2, max_radius=1.5, max_length=4.0)
    check_config_error(Arrow, "min_radius", min_radius=3.0)      # above max_radius
    check_config_error(Arrow, "min_length", min_length=2.0)      # no room for a shaft
    check_config_error(Arrow, "margin", margin=0.9)
    with pytest.raises(ValueError, match="split"):
        Arrow().batch("dev", 0, 4)
