"""bioimage.io model packages (format 0.5) from napari-cellclf model files, and back. No Qt.

Export (`export_bioimageio`, needs the `[bioimageio]` extra: bioimageio.spec and .core are
imported inside the functions that use them):
- weights as `pytorch_state_dict`: `weights.pt` holds only tensors (torch.save of a state dict,
  loadable with `torch.load(weights_only=True)`, which is how bioimageio.core reads it); the
  architecture is `cellclf_architecture.py` = our model.py verbatim (it imports only torch) plus
  a small `CellclfProbabilities` wrapper that rebuilds the net from the kwargs in rdf.yaml and
  applies softmax, so the package outputs per-class probabilities, not logits.
- preprocessing from the stored normalisation: dataset mode (x - low) / (high - low) per channel
  -> `scale_linear` along the channel axis; per_tile mode -> `scale_range` over (y, x) with the
  stored percentiles (per tile and channel, as we do).
- output `probabilities` with axes [batch, channel]; the channel names are the class names made
  valid lower-case identifiers (`channel_ids`); the original names are in config.cellclf.
- test input = raw tiles (from a field given by the caller, else reproducible noise in the
  training intensity range); test output = what our `inference.Classifier` says for them.
- the original cellclf model file travels along as an attachment (`cellclf_model.safetensors`,
  sha256 in rdf.yaml), so that import is exact and never unpickles anything.

Import (`import_bioimageio`, needs only PyYAML + safetensors): reads rdf.yaml from a folder or a
.zip, checks the attachment's sha256 and loads it with modelfile (same checks as any model file).
We chose the safetensors attachment over reading weights.pt back: torch.load, even with
weights_only=True, runs a (restricted) unpickler on a file someone else may have edited, while a
safetensors file is a JSON header and raw numbers, and it carries our full ModelMeta.

The package, one module a seam: `common` (names, the error, ids, sha256), `weights` (the
shipped network, test tiles, our reference probabilities), `rdf` (the description, README,
cover), `export` (export_bioimageio), `load` (import_bioimageio), `check` (bioimageio.core's
test and prediction on a package).
"""

from .check import predict_with_bioimageio, run_bioimageio_test
from .common import (
    ARCHITECTURE_FILE,
    CELLCLF_FILE,
    DEFAULT_LICENSE,
    INPUT_ID,
    N_TEST_TILES,
    OUTPUT_ID,
    RDF_NAME,
    WEIGHTS_FILE,
    BioimageioError,
    ExportResult,
    channel_ids,
)
from .export import export_bioimageio, export_refusal
from .load import import_bioimageio
from .weights import architecture_kwargs, architecture_source, classifier_probabilities, sample_tiles

__all__ = [
    "ARCHITECTURE_FILE",
    "CELLCLF_FILE",
    "DEFAULT_LICENSE",
    "INPUT_ID",
    "N_TEST_TILES",
    "OUTPUT_ID",
    "RDF_NAME",
    "WEIGHTS_FILE",
    "BioimageioError",
    "ExportResult",
    "export_refusal",
    "architecture_kwargs",
    "architecture_source",
    "channel_ids",
    "classifier_probabilities",
    "export_bioimageio",
    "import_bioimageio",
    "predict_with_bioimageio",
    "run_bioimageio_test",
    "sample_tiles",
]
