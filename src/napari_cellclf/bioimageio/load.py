"""`import_bioimageio`: the cellclf model file carried by a package this export made, checked
against its sha256 in rdf.yaml and then like any model file."""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from pathlib import Path

from .common import CELLCLF_FILE, RDF_NAME, BioimageioError


def import_bioimageio(package: str | Path, out: str | Path) -> Path:
    """Write the cellclf model file carried by a package made by `export_bioimageio` (a folder,
    its rdf.yaml, or a .zip) to `out`; returns the saved path. The attachment's sha256 is checked
    against rdf.yaml and the file is then validated like any model file. BioimageioError when the
    package was not made by napari-cellclf or was altered."""
    from .._files import atomic_write, check_output_path
    from ..modelfile import ModelFileError, load_model, model_file_path

    package = Path(package).expanduser()
    target = check_output_path(model_file_path(out), inputs=[package])
    rdf, read = _open_package(package)
    cellclf = (rdf.get("config") or {}).get("cellclf") or {}
    file_name = cellclf.get("model_file")
    if not file_name:
        raise BioimageioError(
            f"{package} was not exported by napari-cellclf (rdf.yaml has no "
            "config.cellclf.model_file); only such packages can be imported"
        )
    listed = {
        str(a.get("source")): a.get("sha256") for a in rdf.get("attachments") or [] if isinstance(a, dict)
    }
    if file_name not in listed or "/" in file_name or "\\" in file_name:
        raise BioimageioError(f"{package}: {file_name!r} is not a listed attachment")
    payload = read(file_name)
    digest = hashlib.sha256(payload).hexdigest()
    if listed[file_name] and listed[file_name] != digest:
        raise BioimageioError(
            f"{package}: {file_name} does not match its sha256 in rdf.yaml (the package was altered)"
        )
    with tempfile.TemporaryDirectory(prefix="cellclf-import-") as tmp:
        staged = Path(tmp) / CELLCLF_FILE
        staged.write_bytes(payload)
        try:
            load_model(staged, device="cpu")  # every check a model file gets, before writing
        except ModelFileError as exc:
            raise BioimageioError(f"{package}: the attached model file is invalid: {exc}") from None

    # The very bytes exported: weights exactly as trained (a loaded model may be folded for speed).
    def write(handle) -> None:
        handle.write(payload)

    return atomic_write(target, write)


def _open_package(package: Path):
    """(rdf dict, read(name) -> bytes) for a folder, an rdf.yaml or a .zip."""
    import yaml

    if not package.exists():
        raise BioimageioError(f"{package}: no such file or folder")
    if package.is_dir():
        root = package

        def read(name: str) -> bytes:
            path = root / name
            if not path.is_file():
                raise BioimageioError(f"{package}: {name} is missing")
            return path.read_bytes()
    elif package.suffix.lower() in (".yaml", ".yml"):
        root = package.parent
        rdf_text = package.read_bytes()

        def read(name: str) -> bytes:
            if name == RDF_NAME:
                return rdf_text
            path = root / name
            if not path.is_file():
                raise BioimageioError(f"{package}: {name} is missing")
            return path.read_bytes()
    elif zipfile.is_zipfile(package):
        with zipfile.ZipFile(package) as archive:
            contents = {info.filename: info for info in archive.infolist()}
            rdf_names = [n for n in contents if n.endswith(RDF_NAME) or n.endswith("bioimageio.yaml")]
            if not rdf_names:
                raise BioimageioError(f"{package}: the archive holds no rdf.yaml")

        def read(name: str) -> bytes:
            with zipfile.ZipFile(package) as archive:
                try:
                    return archive.read(name)
                except KeyError:
                    raise BioimageioError(f"{package}: {name} is missing from the archive") from None

        rdf_bytes = read(sorted(rdf_names, key=len)[0])
        return _parse_rdf(rdf_bytes, package, yaml), read
    else:
        raise BioimageioError(f"{package}: not a folder, rdf.yaml or .zip bioimage.io package")
    return _parse_rdf(read(RDF_NAME), package, yaml), read


def _parse_rdf(raw: bytes, package: Path, yaml) -> dict:
    try:
        rdf = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BioimageioError(f"{package}: rdf.yaml is not valid YAML ({exc})") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise BioimageioError(f"{package}: rdf.yaml does not describe a bioimage.io model")
    return rdf
