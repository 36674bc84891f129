import numpy as np


def test_viewer_renders_an_image(make_napari_viewer):
    viewer = make_napari_viewer(show=True)  # a hidden canvas screenshots black
    viewer.add_image(np.eye(32, dtype=np.float32))
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape[-1] == 4 and shot[..., :3].max() > 0
