"""Which files are images: supported suffixes, ignored names, listing a folder."""

from __future__ import annotations

from pathlib import Path

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
# Files that are never images/classes when walking folders (macOS, Windows, editors).
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def is_supported(path: str | Path) -> bool:
    """True when the suffix is one we read (case-insensitive, .ome.tif included)."""
    return _suffix(Path(path)) in SUPPORTED_SUFFIXES


def is_ignored(path: str | Path) -> bool:
    """Hidden files (., ._*), IGNORED_NAMES: never images, never classes."""
    name = Path(path).name
    ignored = {n.lower() for n in IGNORED_NAMES}
    return name.startswith(".") or name.lower() in ignored


def list_images(folder: str | Path) -> list[Path]:
    """Supported, non-ignored image files directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and is_supported(p) and not is_ignored(p)),
        key=lambda p: p.name,
    )
