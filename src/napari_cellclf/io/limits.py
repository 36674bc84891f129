"""The limits on what a file may declare and what the engine reads at once (README, "Bad
input"). Readers look them up here at call time (`limits.LAZY_BYTES`), so a test or a caller can
lower one in a single place."""

from __future__ import annotations

# TIFFs whose pixels (as declared, decoded) or file exceed this open lazily: memmap or zarr.
LAZY_BYTES = 256 * 2**20
# Limits on what a file may declare (README, "Bad input"). A few hundred bytes can declare a
# 20 GB image (a decompression bomb); these refuse such files before anything is allocated.
# PNG and JPEG are always decoded whole: at most this many pixels (16,384 x 16,384).
MAX_PHOTO_PIXELS = 2**28
# No codec we read packs more than ~1,000 decoded bytes into one stored byte (deflate's limit is
# 1,032; JPEG's a few hundred) except for blank images; beyond this ratio, above
# RATIO_CHECK_BYTES decoded, a file declares pixels it cannot hold.
MAX_COMPRESSION_RATIO = 4000
RATIO_CHECK_BYTES = 64 * 2**20
# The engine (training, classification, attribution) works on one whole plane in float32:
# at most this many values (channels x height x width), i.e. 4 GiB.
MAX_FIELD_VALUES = 2**30
# Side length a subsample is strided down to (contrast limits, bit depth of lazy data).
SUBSAMPLE_SIDE = 1024
