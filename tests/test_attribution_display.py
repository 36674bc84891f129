"""Attribution maps for display (attribution_display.py): raw, smoothed, one value per tile."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellclf.attribution_display import display_map, symmetric_limit
from napari_cellclf.tiling import make_grid


def test_tile_mean_smoothing_and_limits():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 48)).astype(np.float32)
    a[3, 5] = np.nan
    grid = make_grid(a.shape, 16, None, border="pad")  # 3 x 3 tiles, the last row padded
    np.testing.assert_array_equal(display_map(a, "pixels")[0], np.nan_to_num(a)[0])
    per_tile = display_map(a, "tile mean", grid)
    clean = np.nan_to_num(a)
    assert per_tile[0, 0] == pytest.approx(clean[:16, :16].mean(), abs=1e-6)
    assert np.ptp(per_tile[16:32, 32:48]) == 0
    smooth = display_map(a, "smoothed", grid)
    assert smooth.std() < 0.5 * clean.std()
    assert symmetric_limit(np.zeros(4)) == 1.0
    assert symmetric_limit(np.r_[-np.ones(1000), 50.0]) == pytest.approx(1.0)  # nor one outlier
    with pytest.raises(ValueError, match="tile grid"):
        display_map(a, "smoothed")
    with pytest.raises(ValueError, match="display mode"):
        display_map(a, "blur", grid)
