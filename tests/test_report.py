"""The evaluation report: one self-contained HTML page that parses and holds its figures,
metrics.json with the agreed keys, confusion.png and gallery.png."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import numpy as np

from evaluation_support import kind_tiles, trained
from napari_cellclf.evaluation import classification_metrics
from napari_cellclf.report import gallery_indices, make_report, write_report

PNG = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.scripts, self.text = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "script":
            self.scripts += 1
        if tag == "link" or (tag == "a" and attrs.get("href")):
            self.links.append(attrs)

    def handle_data(self, data):
        self.text.append(data)


def parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_report_opens_holds_its_figures_and_writes_the_metrics(tmp_path):
    out = tmp_path / "report"
    document = make_report(
        trained("cells"),
        kind_tiles("cells", 96, seed=9),
        out,
        details={"model": "cells.safetensors", "data": "synthetic"},
    )
    for name in ("report.html", "metrics.json", "confusion.png", "gallery.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    page = parse(out / "report.html")
    assert page.scripts == 0 and not page.links  # nothing fetched from anywhere
    assert len(page.images) == 2
    embedded = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG)
        embedded.append(data)
    files = {(out / name).read_bytes() for name in ("confusion.png", "gallery.png")}
    assert set(embedded) == files
    text = " ".join(page.text)
    assert "balanced accuracy" in text and "chance" in text

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(document))
    for key in (
        "accuracy",
        "balanced_accuracy",
        "chance",
        "better_than_chance",
        "confusion",
        "per_class",
        "dihedral_agreement",
        "attribution",
    ):
        assert key in metrics, key
    assert isinstance(metrics["better_than_chance"], bool)
    for key in (
        "randomisation_similarity",
        "gradient_randomisation_similarity",
        "foreground_share",
        "border_share",
        "warnings",
    ):
        assert key in metrics["attribution"], key
    assert metrics["better_than_chance"] and metrics["verdict"] is None
    assert 0 <= metrics["dihedral_agreement"] <= 1
    assert np.asarray(metrics["confusion"]).sum() == 96
    assert metrics["model"] == "cells.safetensors"
    assert metrics["gallery"] and all(
        set(g) >= {"true", "predicted", "confidence", "correct", "source", "origin"}
        for g in metrics["gallery"]
    )


def test_report_of_a_chance_model_shows_the_verdict(tmp_path):
    document = make_report(trained("noise"), kind_tiles("noise", 64, seed=10), tmp_path)
    assert document["better_than_chance"] is False and document["verdict"]
    assert document["verdict"] in " ".join(parse(tmp_path / "report.html").text)


def test_write_report_without_tiles_still_writes_the_confusion(tmp_path):
    metrics = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"])
    document = write_report(tmp_path, metrics)
    assert (tmp_path / "confusion.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "gallery.png").exists()
    assert document["figures"] == ["confusion.png"]
    assert document["attribution"]["warnings"] == []


def test_gallery_takes_the_most_confident_of_each_class():
    truth = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([[0.99, 0.01], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.95, 0.05]])
    right, wrong = gallery_indices(truth, probabilities, each=2)
    assert list(right) == [0, 4]
    assert list(wrong) == [5, 2]
