import numpy as np
from PIL import Image

from training.plot import plot_latent


def test_plot_latent_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(100, 2))
    y = np.arange(100) % 10
    path = tmp_path / "latent.png"
    plot_latent(Z, y, path, "test")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (700, 600)
