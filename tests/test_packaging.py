"""Both install modes register the npe2 manifest: a built wheel, a built sdist, an editable install.

Each install goes into a fresh virtual environment that sees the project venv's dependencies
(napari, torch, ...) through a folder of links, but not the project's own editable install, so
what npe2 finds there comes from the artefact under test alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

PROBE = r"""
import json, sys
from pathlib import Path
import napari_cellclf
from napari_cellclf import _sample_data
from npe2 import PluginManager
pm = PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-cellclf")
package = Path(napari_cellclf.__file__).parent
c = manifest.contributions
print(json.dumps({
    "package": str(package),
    "manifest_file": str(package / "napari.yaml"),
    "manifest_is_link": (package / "napari.yaml").is_symlink(),
    "readers": [r.command for r in c.readers or []],
    "samples": [s.key for s in c.sample_data or []],
    "widgets": [w.display_name for w in c.widgets or []],
    "sample_files": sorted(p.name for p in (package / "sample_data").glob("*.tif")),
    "sample_dir_is_link": (package / "sample_data").is_symlink(),
    "sample_dir": str(_sample_data.SAMPLE_DIR),
    "sample_layers": [(kwargs["name"], kind) for _, kwargs, kind in _sample_data.puncta_field()],
}))
"""


def _env_without_project(tmp_path: Path) -> Path:
    """A venv whose site-packages links every dependency of the project venv, not the project."""
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    # No bundled pip/setuptools: the (newer) ones of the project venv come through the links.
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    deps = tmp_path / "deps"
    deps.mkdir()
    ours = ("napari_cellclf", "__editable__", "_napari_cellclf")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().replace("-", "_").startswith(ours) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    (site / "_project_deps.pth").write_text(str(deps) + "\n")
    return python


def _probe(python: Path, cwd: Path) -> dict:
    # --imports: every python_name of the manifest (reader, samples, widget) imports from the install
    validate = subprocess.run(
        [str(python), "-m", "npe2", "validate", "--imports", "napari-cellclf"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    out = subprocess.run(
        [str(python), "-c", PROBE], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    return out


def _assert_registered(info: dict, tmp_path: Path, editable: bool) -> None:
    assert info["readers"] == ["napari-cellclf.get_reader"]
    assert set(info["samples"]) == {"puncta", "diffuse"}
    assert info["widgets"] == ["Cell classifier"]
    assert {"puncta_field.ome.tif", "puncta_field_objects.tif", "diffuse_field.ome.tif"} <= set(
        info["sample_files"]
    )
    manifest = Path(info["manifest_file"])
    assert manifest.read_text().startswith("name: napari-cellclf")
    assert info["sample_layers"] == [
        ["puncta [nuclei]", "image"],
        ["puncta [protein]", "image"],
        ["puncta ground truth", "labels"],
        ["puncta cell masks", "labels"],
    ]  # JSON: lists
    if editable:  # reads the repo through the link
        assert Path(info["package"]).resolve() == (REPO / "src" / "napari_cellclf").resolve()
        assert Path(info["sample_dir"]).resolve() == (REPO / "sample_data").resolve()
    else:  # real copies inside the environment, not links back to the repo
        assert str(tmp_path) in info["package"] and str(tmp_path) in info["sample_dir"]
        assert not info["manifest_is_link"] and not info["sample_dir_is_link"]


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_built_distribution_registers_the_plugin(kind, dist, tmp_path):
    artefact = next(dist.glob("*.whl" if kind == "wheel" else "*.tar.gz"))
    python = _env_without_project(tmp_path)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            str(artefact),
        ],
        check=True,
        capture_output=True,
    )
    _assert_registered(_probe(python, tmp_path), tmp_path, editable=False)


def test_editable_install_registers_the_plugin(tmp_path):
    python = _env_without_project(tmp_path)
    env = dict(os.environ, PIP_NO_INDEX="1")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO)],
        check=True,
        capture_output=True,
        env=env,
    )
    _assert_registered(_probe(python, tmp_path), tmp_path, editable=True)
