"""napari-cellclf: tile fields of view, train a CNN, classify and explain.

The engine (io, tiling, data, model, modelfile, training, inference, attribution) imports no Qt
or napari and can be used from scripts; `_widget`, `_reader` and `_sample_data` are the napari face.
"""

__version__ = "0.1.0"
