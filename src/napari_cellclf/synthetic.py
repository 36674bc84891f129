"""Realistic synthetic fluorescence fields (numpy + scikit-image). No Qt.

Two channels: 0 = nuclear stain, 1 = cytoplasmic protein. Cells of varying shape, size and
brightness; Poisson plus read noise; uneven background. phenotype="puncta": the protein forms
bright aggregates in most cells; "diffuse": it stays spread through the cytoplasm. Deterministic
for a given seed. Used by sample_data/make_sample_data.py and by tests (small sizes, fast).

How a field is made (all in photons until the camera step):
1. Cell centres by dart throwing with a size-dependent minimum distance (cells may touch, never
   pile up). Each cell is an ellipse whose radius is perturbed by a few random Fourier harmonics;
   where two outlines overlap the pixel goes to the cell it is deeper inside. The nucleus is a
   smaller perturbed ellipse inside the cell.
2. Nuclear channel: per-cell brightness (log-normal) with fine chromatin texture.
3. Protein channel: every cell gets a total amount of protein drawn from the SAME distribution in
   both phenotypes, so mean brightness does not give the class away. "diffuse" spreads it over the
   cytoplasm (mottled, dimmer at the thin cell edge, mostly excluded from the nucleus); an
   aggregating cell moves 35-70 % of it into a few diffraction-limited spots. In a puncta field
   PUNCTA_FRACTION of the cells aggregate; the rest look like controls and are labelled Control.
4. Optics and camera: smooth uneven illumination and background, Gaussian PSF, Poisson shot noise,
   camera offset and Gaussian read noise, rounded to uint16.

The same seed gives the same cell layout and nuclei for both phenotypes; the protein pattern and
the noise come from a stream that also depends on the phenotype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.filters import gaussian

CHANNEL_NAMES = ("nuclei", "protein")
CLASS_NAMES = ("Control", "Aggregates")  # label values 1 and 2; diffuse = Control
PHENOTYPES = ("puncta", "diffuse")

PUNCTA_FRACTION = 0.85  # share of cells with aggregates in a "puncta" field
CAMERA_OFFSET = 100.0  # ADU added by the camera to every pixel
READ_NOISE = 2.5  # ADU, Gaussian
PSF_SIGMA = 1.0  # px, Gaussian approximation of the microscope's blur
_NUCLEUS_PHOTONS = 700.0  # median nuclear-stain level per pixel
_PROTEIN_PHOTONS = 180.0  # median protein level per cell pixel (total / area)
_BACKGROUND_PHOTONS = (25.0, 20.0)  # (nuclei, protein) autofluorescence / stray light


@dataclass
class SyntheticField:
    image: np.ndarray  # (2, H, W) uint16
    labels: (
        np.ndarray
    )  # (H, W) uint8 class label image: 0 background, 1 Control (diffuse) cell, 2 Aggregates cell
    cells: np.ndarray  # (H, W) int32 instance labels (0 background)
    pixel_size: float  # µm per pixel
    phenotype: str


@dataclass
class _Cell:
    box: tuple[slice, slice]  # bounding box in the field
    depth: np.ndarray  # normalised radius in the box: < 1 inside the outline
    nucleus: np.ndarray  # bool mask of the nucleus in the box (before overlap resolution)


def make_field(
    phenotype: str = "puncta",
    shape: tuple[int, int] = (1024, 1024),
    seed: int = 0,
    cell_radius: float = 18.0,
    density: float = 1.0,
    pixel_size: float = 0.325,
) -> SyntheticField:
    """A two-channel (nuclei, protein) uint16 field of view with ground truth.

    `cell_radius` is the median cell radius in pixels; `density` scales the number of cells
    (1.0 covers roughly half of the field); `pixel_size` is in µm. ValueError names the parameter
    that is out of range.
    """
    _check_arguments(phenotype, shape, cell_radius, density, pixel_size)
    height, width = int(shape[0]), int(shape[1])
    layout_rng = np.random.default_rng([int(seed), 0])
    pattern_rng = np.random.default_rng([int(seed), 1 + PHENOTYPES.index(phenotype)])

    centres, radii = _place_cells(layout_rng, height, width, cell_radius, density)
    geometry = [
        _cell_geometry(layout_rng, centre, radius, height, width) for centre, radius in zip(centres, radii)
    ]
    cells, nuclei = _resolve_overlaps(geometry, height, width)

    n_cells = len(geometry)
    # Per-cell brightness, drawn in the layout stream so both phenotypes share it.
    nucleus_level = _NUCLEUS_PHOTONS * layout_rng.lognormal(0.0, 0.3, n_cells)
    protein_level = _PROTEIN_PHOTONS * layout_rng.lognormal(0.0, 0.35, n_cells)
    aggregating = (
        pattern_rng.random(n_cells) < PUNCTA_FRACTION if phenotype == "puncta" else np.zeros(n_cells, bool)
    )

    nuclear = _nuclear_channel(layout_rng, cells, nuclei, nucleus_level)
    protein = _protein_channel(pattern_rng, geometry, cells, nuclei, protein_level, aggregating)

    signal = np.stack([nuclear, protein])
    signal = gaussian(signal, sigma=PSF_SIGMA, channel_axis=0, preserve_range=True)
    image = _camera(pattern_rng, signal, height, width)

    labels = np.zeros((height, width), np.uint8)
    cell_class = np.concatenate([[0], np.where(aggregating, 2, 1)]).astype(np.uint8)
    labels[:] = cell_class[cells]
    return SyntheticField(
        image=image, labels=labels, cells=cells, pixel_size=float(pixel_size), phenotype=phenotype
    )


def _check_arguments(phenotype, shape, cell_radius, density, pixel_size) -> None:
    if phenotype not in PHENOTYPES:
        raise ValueError(f"phenotype must be one of {PHENOTYPES}, got {phenotype!r}")
    if len(shape) != 2 or min(int(s) for s in shape) < 16:
        raise ValueError(f"shape must be (height, width) with both at least 16 px, got {shape!r}")
    if not 2.0 <= cell_radius <= min(shape) / 2:
        raise ValueError(f"cell_radius must lie between 2 px and half the field size, got {cell_radius!r}")
    if not density > 0:
        raise ValueError(f"density must be positive, got {density!r}")
    if not pixel_size > 0:
        raise ValueError(f"pixel_size must be positive (µm per pixel), got {pixel_size!r}")


def _place_cells(rng, height, width, cell_radius, density):
    """Centres and radii by dart throwing; neighbours keep 0.8 x (r_i + r_j) apart."""
    target = int(round(density * 0.5 * height * width / (np.pi * cell_radius**2)))
    candidates = max(30 * target, 50)
    ys = rng.uniform(-0.3 * cell_radius, height + 0.3 * cell_radius, candidates)
    xs = rng.uniform(-0.3 * cell_radius, width + 0.3 * cell_radius, candidates)
    rs = cell_radius * rng.lognormal(0.0, 0.15, candidates)
    # A coarse grid of accepted cells keeps each test local (fields hold hundreds of cells).
    bin_size = 2.0 * cell_radius * 1.6
    grid: dict[tuple[int, int], list[int]] = {}
    accepted: list[int] = []
    for i in range(candidates):
        if len(accepted) >= target:
            break
        by, bx = int(ys[i] // bin_size), int(xs[i] // bin_size)
        near = [j for dy in (-1, 0, 1) for dx in (-1, 0, 1) for j in grid.get((by + dy, bx + dx), ())]
        if near:
            near = np.asarray(near)
            distance = np.hypot(ys[near] - ys[i], xs[near] - xs[i])
            if np.any(distance < 0.8 * (rs[near] + rs[i])):
                continue
        grid.setdefault((by, bx), []).append(i)
        accepted.append(i)
    accepted = np.asarray(accepted, int)
    return np.stack([ys[accepted], xs[accepted]], axis=1), rs[accepted]


def _wobble(rng, n_harmonics: int, strength: float):
    """A random smooth periodic function of the angle: a bumpy, non-circular outline."""
    orders = np.arange(2, 2 + n_harmonics)
    amplitudes = rng.normal(0.0, strength, n_harmonics) / orders
    phases = rng.uniform(0, 2 * np.pi, n_harmonics)

    def radius_factor(theta):
        return 1.0 + np.tensordot(
            amplitudes, np.cos(np.multiply.outer(orders, theta) + phases[:, None, None]), axes=1
        )

    return radius_factor


def _cell_geometry(rng, centre, radius, height, width) -> _Cell:
    cy, cx = centre
    reach = int(np.ceil(radius * 1.6)) + 2
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, height)
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, width)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx

    # Cell: elongated ellipse with a bumpy outline.
    angle = rng.uniform(0, np.pi)
    elongation = np.sqrt(rng.uniform(1.0, 1.6))
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / elongation
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * elongation
    theta = np.arctan2(v, u)
    depth = np.hypot(u, v) / (radius * _wobble(rng, 5, 0.35)(theta))

    # Nucleus: a rounder, smaller ellipse, a little off-centre, also slightly bumpy.
    n_scale = radius * rng.uniform(0.42, 0.55)
    n_angle = rng.uniform(0, np.pi)
    n_elong = np.sqrt(rng.uniform(1.0, 1.3))
    shift = rng.normal(0.0, 0.08 * radius, 2)
    ndy, ndx = dy - shift[0], dx - shift[1]
    nu = (ndx * np.cos(n_angle) + ndy * np.sin(n_angle)) / n_elong
    nv = (-ndx * np.sin(n_angle) + ndy * np.cos(n_angle)) * n_elong
    n_depth = np.hypot(nu, nv) / (n_scale * _wobble(rng, 3, 0.15)(np.arctan2(nv, nu)))
    nucleus = (n_depth < 1.0) & (depth < 0.85)
    return _Cell(box=(slice(y0, y1), slice(x0, x1)), depth=depth, nucleus=nucleus)


def _resolve_overlaps(geometry, height, width):
    """Instance labels (each pixel to the cell it lies deepest in) and the nucleus mask."""
    cells = np.zeros((height, width), np.int32)
    best = np.full((height, width), np.inf, np.float32)
    for label, cell in enumerate(geometry, start=1):
        inside = (cell.depth < 1.0) & (cell.depth < best[cell.box])
        best[cell.box][inside] = cell.depth[inside]
        cells[cell.box][inside] = label
    nuclei = np.zeros((height, width), bool)
    for label, cell in enumerate(geometry, start=1):
        nuclei[cell.box] |= cell.nucleus & (cells[cell.box] == label)
    return cells, nuclei


def _smooth_noise(rng, shape, sigma):
    """Zero-mean, unit-variance Gaussian random field with correlation length ~sigma px."""
    field = gaussian(rng.standard_normal(shape, np.float32), sigma=sigma, preserve_range=True)
    return field / max(float(field.std()), 1e-6)


def _nuclear_channel(rng, cells, nuclei, nucleus_level):
    level = np.concatenate([[0.0], nucleus_level]).astype(np.float32)
    chromatin = 1.0 + 0.18 * _smooth_noise(rng, cells.shape, 1.5)
    nuclear = np.where(nuclei, level[cells] * chromatin, 0.0)
    # A faint cytoplasmic haze: real nuclear stains are never perfectly specific.
    nuclear += np.where((cells > 0) & ~nuclei, 0.04 * level[cells], 0.0)
    return nuclear.astype(np.float32)


def _protein_channel(rng, geometry, cells, nuclei, protein_level, aggregating):
    height, width = cells.shape
    mottling = np.clip(1.0 + 0.25 * _smooth_noise(rng, cells.shape, 2.0), 0.2, None)
    diffuse = np.zeros((height, width), np.float32)
    small_spots = np.zeros((height, width), np.float32)
    large_spots = np.zeros((height, width), np.float32)
    for index, cell in enumerate(geometry):
        region = cells[cell.box] == index + 1
        area = int(region.sum())
        if area == 0:
            continue
        total = protein_level[index] * area
        nucleus = nuclei[cell.box] & region
        # Thicker cytoplasm near the nucleus holds more protein; the nucleus excludes most of it.
        weight = np.where(region, np.clip(1.0 - 0.5 * cell.depth**2, 0.3, None), 0.0)
        weight = weight * mottling[cell.box] * np.where(nucleus, 0.3, 1.0)
        if aggregating[index]:
            in_spots = rng.uniform(0.35, 0.7)
            _add_spots(rng, region & ~nucleus, cell.box, in_spots * total, small_spots, large_spots)
        else:
            in_spots = 0.0
        diffuse[cell.box] += ((1.0 - in_spots) * total / weight.sum()) * weight
    # Spot impulses become spots by blurring; the PSF blur later widens them to ~0.45-0.7 µm.
    small = gaussian(small_spots, sigma=0.7, preserve_range=True)
    large = gaussian(large_spots, sigma=1.6, preserve_range=True)
    return diffuse + small + large


def _add_spots(rng, cytoplasm, box, amount, small_spots, large_spots):
    """Put `amount` of protein into 3-14 point sources inside the cytoplasm of one cell."""
    ys, xs = np.nonzero(cytoplasm)
    if ys.size == 0:
        return
    n_spots = int(rng.integers(3, 15))
    picks = rng.integers(0, ys.size, n_spots)
    shares = rng.gamma(2.0, 1.0, n_spots)
    shares *= amount / shares.sum()
    large = rng.random(n_spots) < 0.3
    rows, cols = ys[picks] + box[0].start, xs[picks] + box[1].start
    np.add.at(small_spots, (rows[~large], cols[~large]), shares[~large])
    np.add.at(large_spots, (rows[large], cols[large]), shares[large])


def _camera(rng, signal, height, width):
    """Uneven illumination and background, shot noise, offset and read noise -> uint16."""
    yy = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    centre = rng.uniform(-0.4, 0.4, 2)
    # Vignetting: 100 % at an off-centre hot spot falling to ~70 % in the far corner.
    illumination = 1.0 - 0.3 * ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 4.0
    tilt = rng.uniform(-0.25, 0.25, 2)
    photons = np.empty_like(signal)
    for channel, background in enumerate(_BACKGROUND_PHOTONS):
        stray = background * (1.0 + tilt[0] * yy + tilt[1] * xx)
        photons[channel] = illumination * signal[channel] + stray
    counts = rng.poisson(np.clip(photons, 0.0, None)).astype(np.float32)
    adu = counts + CAMERA_OFFSET + rng.normal(0.0, READ_NOISE, counts.shape).astype(np.float32)
    return np.clip(np.rint(adu), 0, np.iinfo(np.uint16).max).astype(np.uint16)
