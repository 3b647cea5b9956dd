"""Explorer in edge states (issue 20): one-channel stacks, the starting pixel."""
from __future__ import annotations

import numpy as np

from xrdwidgets import data
from xrdwidgets.widgets.explorer import Explorer


def test_single_channel_volume_has_a_visible_pattern_and_clean_labels():
    v = np.random.default_rng(0).random((20, 20, 1)).astype("f4")
    ex = Explorer(data.volume(v, spectral=[0.0], spectral_dim="channel"))
    assert ex.pattern_fig.data[0].mode == "lines+markers"      # one point drawn, not an empty box
    assert len(ex.pattern_fig.data[0].y) == 1
    label = ex.w_window_label.value
    assert "channel 0" in label and " 1 " not in label and "= 0" not in label
    ex2 = Explorer(data.volume(v, spectral=[5.0]))
    assert "2θ = 5 deg (channel 0)" in ex2.w_window_label.value


def test_start_pixel_is_inside_the_sample():
    v = np.zeros((21, 21, 4), np.float32)
    v[3:7, 12:16] = 1.0                      # the sample is off-centre; the middle is air
    ex = Explorer(data.volume(v, spectral=np.linspace(2, 3, 4)))
    r, c = ex.pixel
    assert 3 <= r < 7 and 12 <= c < 16
