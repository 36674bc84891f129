"""One shareable model file: safetensors weights + JSON metadata, atomic, never unpickled.

- The file is a single `.safetensors` file; the JSON metadata lives in the safetensors header
  (`__metadata__["cellclf"]`). Loading validates the header, the metadata schema and every tensor
  name, shape and dtype against the architecture rebuilt from the metadata; anything else (a
  pickle, a truncated or tampered file) raises ModelFileError naming the file. Nothing is ever
  unpickled: safetensors only reads a JSON header and raw little-endian numbers.
- An ensemble (model.Ensemble, `n_members` > 1) is one file too: member i's tensors are named
  `members.<i>.<name>`. A DihedralTTA wrapper is not stored as weights: `extra["tta"]` says to
  wrap the loaded model again. BatchNorm's integer batch counters are not stored (unused in
  inference); every other tensor is, and is checked.
- Saving writes a temporary file in the same folder, fsyncs, then os.replace()s it: a full disk or
  a crash never leaves a half-written model under the real name (and never deletes the old one).

The package, one module a seam: `meta` (ModelMeta and its schema checks), `colors` (default
class colours), `storage` (save_model, read_meta, load_model and the checks on the file).
"""

from .colors import default_class_colors, hex_to_lab
from .meta import FORMAT_VERSION, MAX_MEMBERS, ModelFileError, ModelMeta
from .storage import (
    CHECKSUM_KEY,
    METADATA_KEY,
    SUFFIX,
    load_model,
    model_file_path,
    read_meta,
    save_model,
    weights_checksum,
)

__all__ = [
    "CHECKSUM_KEY",
    "FORMAT_VERSION",
    "MAX_MEMBERS",
    "METADATA_KEY",
    "SUFFIX",
    "ModelFileError",
    "ModelMeta",
    "default_class_colors",
    "hex_to_lab",
    "load_model",
    "model_file_path",
    "read_meta",
    "save_model",
    "weights_checksum",
]
