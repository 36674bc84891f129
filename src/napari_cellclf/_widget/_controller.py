"""The dock's actions: what Train, Classify, Explain, Import, Load and Save do.

Panels are views: they read the session, ask their question (a dialog, a combo) and call one
method here. The controller copies what a job needs out of the layers on the main thread, starts
the engine generator through the session's `JobRunner`, and applies the result on the main thread
(session state, result layers, notifications). It makes no engine decision: tile counts, the
trainability rules and the model's channel policy come from `datasets` and the engine.

It also owns the one list of fields (`fields()`): every panel and job asks here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning

from .. import datasets
from ..attribution import explain_field
from ..datasets import split_positions
from ..objects import image_channel_names
from ..training import MemorisationWarning, train
from ._fields import Field, fields_from_layers, model_channels
from ._jobs import JobStage, tagged
from ._labelling import build_dataset, gather_training_inputs, import_class_folders
from ._layers import labels_layer, show_attribution
from ._objects import build_cell_results, field_masks, hide_other_results, prediction_steps
from ._preflight import (
    Check,
    classify_check,
    explain_check,
    field_pixel_size,
    model_differences,
    train_check,
)
from ._result_layers import DisplayStep, apply_step, build_results, display_steps, finish
from ._session import Session
from ._trust import model_verdict, training_extras

if TYPE_CHECKING:  # pragma: no cover
    from ..inference import Classifier


class Controller:
    """The actions of one dock over its viewer's session (state lives in the session)."""

    def __init__(self, viewer, session: Session):
        self.viewer, self.session = viewer, session
        # A memorisation warning is news the moment the worker sees it, not at the end.
        session.jobs.progress.connect(self._on_progress)

    def shut_down(self) -> None:
        """The dock is closing: jobs already started still end in the session."""
        self.session.jobs.progress.disconnect(self._on_progress)

    # -- the one field registry -----------------------------------------------------------------
    def fields(self) -> list[Field]:
        """Every field of view among the viewer's layers, in layer order."""
        return fields_from_layers(self.viewer.layers)

    def field(self, field_id: str | None) -> Field | None:
        return next((f for f in self.fields() if f.id == field_id), None)

    def current_field(self) -> Field | None:
        """The selected field (the Fields table's row), else the first one."""
        fields = self.fields()
        chosen = next((f for f in fields if f.id == self.session.current_field), None)
        return chosen or (fields[0] if fields else None)

    # -- would a job be refused? (the panels enable their buttons with these) -----------------
    def train_check(self) -> Check:
        return train_check(self.session, self.fields(), self.viewer)

    def classify_check(self, all_fields: bool = False) -> Check:
        current = self.current_field()
        return classify_check(
            self.session,
            self.fields() if all_fields else [current] if current else [],
            all_fields,
            self.viewer,
        )

    def explain_check(self) -> Check:
        return explain_check(self.session, self.current_field())

    def model_differences(self) -> list[str]:
        return model_differences(self.session)

    # -- training ---------------------------------------------------------------------------------
    def train(self) -> bool:
        """Cut the labelled tiles and train in the background; False when nothing started."""
        session = self.session
        if session.jobs.busy:
            return False
        check = self.train_check()
        if not check.ok:
            show_error("Cannot train: " + " ".join(check.blocking))
            return False
        try:
            inputs = gather_training_inputs(session, self.fields(), self.viewer)
        except ValueError as exc:
            show_error(f"Cannot train: {exc}")
            return False
        config = session.train.config()
        pixel_size = self._training_pixel_size()

        def work(stop):
            # Worker thread: tiles are cut here, from the copies made above.
            dataset = build_dataset(inputs)
            result = yield from train(dataset, config, stop=stop)
            # After Cancel too: training stopped within a batch; the bar says what runs now.
            yield JobStage(
                "Training stopped: evaluating the kept model…"
                if stop.is_set()
                else "Evaluating the kept model…"
            )
            # Still in the worker: the kept model's validation metrics and the classical
            # features on the same split, stored in the model as `cellclf train` stores them.
            split = split_positions(dataset, config.val_fraction, config.seed)
            return result, {**training_extras(result, dataset), **inputs.extra}, split

        def adopt(outcome, cancelled):
            result, extra, split = outcome
            session.training_split = split  # before adopting: the overlay redraws on model_changed
            news = session.unseen_warnings(result.history)
            if session.adopt_training(result, inputs.channel_indices, extra, pixel_size) and news:
                show_warning("Training: " + " ".join(news))

        session.reset_log()
        session.jobs.start("train", work, adopt, title="Training")
        return True

    def _training_pixel_size(self) -> dict | None:
        """The labelled fields' pixel size, stored in the model as `cellclf train` stores the
        files': Classify then warns about fields imaged at another one (_preflight)."""
        from types import SimpleNamespace

        from ..pixelsize import training_pixel_size

        per_field = self.session.counts.per_field if self.session.counts else {}
        images = []
        for fld in self.fields():
            if sum(per_field.get(fld.id) or ()):
                size, unit = field_pixel_size(fld)
                images.append(SimpleNamespace(pixel_size=size, unit=unit))
        return training_pixel_size(images)

    def _on_progress(self, kind: str, event) -> None:
        if kind == "train" and isinstance(event, MemorisationWarning):
            show_warning(event.message)
        elif isinstance(event, DisplayStep):  # one result layer, made in the worker
            apply_step(self.viewer, self.fields(), event)

    # -- classify and explain -------------------------------------------------------------------
    def _class_colors(self) -> list[str]:
        assert self.session.trained is not None
        meta = self.session.trained.meta
        return [self.session.color_of(n, c) for n, c in zip(meta.class_names, meta.class_colors)]

    def _stride(self) -> int | None:
        assert self.session.trained is not None
        stride = self.session.data.stride
        tile = self.session.trained.meta.tile_size
        return stride if 0 < stride <= tile else None

    def _prepare(self, fields: Sequence[Field]) -> "tuple[Classifier, list]":
        """Main thread: the classifier and a (C, Y, X) copy of each field in the model's channels."""
        assert self.session.trained is not None
        meta = self.session.trained.meta
        classifier = self.session.classifier(self.session.train.device)
        images = [
            (
                fld.id,
                fld.name,
                fld.stack(model_channels(fld, image_channel_names(meta), meta.channel_indices)),
            )
            for fld in fields
        ]
        return classifier, images

    def classify(self, all_fields: bool = False) -> bool:
        """Classify the selected field (or every field) in the background."""
        session = self.session
        if session.trained is None or session.jobs.busy:
            return False
        check = self.classify_check(all_fields)
        if not check.ok:
            show_error("Cannot classify: " + " ".join(check.blocking))
            return False
        skipped = check.skipped  # classify all: what the model can, and say what it left out
        try:
            fields = check.usable
            classifier, images = self._prepare(fields)
            masks = {fld.id: field_masks(session, self.viewer, fld) for fld in fields}  # object mode
        except ValueError as exc:
            show_error(f"Cannot classify: {exc}")
            return False
        stride, foreground_only = self._stride(), session.data.skip_background
        colors = self._class_colors()
        meta = session.trained.meta
        verdict = model_verdict(meta)
        placement = {f.id: f.layer_kwargs() for f in fields}

        def work(stop):
            done, unanswered = [], []
            for i, (fid, name, image) in enumerate(images):
                generator = prediction_steps(
                    classifier, image, masks[fid], meta, stop, stride=stride, foreground_only=foreground_only
                )
                prediction = yield from tagged(generator, name, i, len(images))
                if stop.is_set():
                    break
                # the result layers are made here and shown one per event-loop turn
                results = (
                    build_results(fid, name, prediction, colors, placement[fid], classifier, image)
                    if masks[fid] is None
                    else build_cell_results(fid, name, prediction, colors, placement[fid], masks[fid])
                )
                yield from display_steps(results, stop, unanswered)
                done.append((fid, name, results))
            return done

        def show(done, cancelled):
            by_id = {f.id: f for f in self.fields()}
            for fid, name, results in done:
                session.set_prediction(fid, name, results.prediction)
                finish(self.viewer, by_id.get(fid), results)
                hide_other_results(self.viewer, fid, results)
                if verdict:
                    show_warning(f"{name} classified by a model that cannot be trusted: {verdict}")
            if skipped:
                show_warning(
                    f"Classified {len(done)} field(s); skipped {len(skipped)}: " + "; ".join(skipped)
                )

        session.jobs.start("classify", work, show, title="Classification")
        return True

    def explain(self, target: int | None = None) -> bool:
        """Attribution map of the selected field for class `target` (None: each tile's predicted
        class), in the background."""
        session = self.session
        fld = self.current_field()
        if session.trained is None or session.jobs.busy or fld is None:
            return False
        check = self.explain_check()
        if not check.ok:
            show_error("Cannot explain: " + " ".join(check.blocking))
            return False
        try:
            classifier, [(fid, name, image)] = self._prepare([fld])
        except ValueError as exc:
            show_error(f"Cannot explain: {exc}")
            return False
        target_name = "predicted" if target is None else session.trained.meta.class_names[int(target)]
        stride = self._stride()

        def work(stop):
            generator = explain_field(classifier, image, target=target, stride=stride, stop=stop)
            return (yield from tagged(generator, name, 0, 1))

        def show(attribution, cancelled):
            by_id = {f.id: f for f in self.fields()}
            if cancelled or fid not in by_id:
                return
            show_attribution(self.viewer, by_id[fid], attribution, target_name)

        session.jobs.start("explain", work, show, title="Explanation")
        return True

    # -- class folders ----------------------------------------------------------------------------
    def class_folder_names(self, root: str) -> list[str]:
        """The classes root offers (its subfolders with images), for the user to pick from."""
        return datasets.class_folder_names(root)

    def import_folders(self, root: str, mode: str = "resize", classes: Sequence[str] = ()) -> bool:
        """Read root/<class>/<image> (only the `classes` picked; () = all) in the background;
        its classes join the session's."""
        session = self.session
        if session.jobs.busy:
            return False
        tile_size, channels = session.data.tile_size, tuple(session.data.channels)
        picked = tuple(classes)

        def work(stop):
            return import_class_folders(root, tile_size, channels, mode, picked)

        def adopt(imported, cancelled):
            if cancelled:
                return
            added = [n for n in imported.dataset.class_names if n not in session.class_names]
            for name in added:
                session.add_class(name)
            session.set_imported(imported, added)
            counts = imported.dataset.class_counts()
            show_info(
                f"Imported {len(imported.dataset)} tiles from {root}: "
                + ", ".join(f"{k} {v}" for k, v in counts.items())
            )

        session.jobs.start("import", work, adopt, title="Importing class folders")
        return True

    def forget_import(self) -> None:
        """Drop the imported tiles, and the classes the import added that nothing else labels
        now (no tiles from another source, no painted pixel of theirs or above them: removing
        them renumbers nothing). Says which classes went and which stayed."""
        session = self.session
        counts, added = session.counts, list(session.import_added)
        from_import = (counts.per_field.get("imported") if counts else None) or []
        session.set_imported(None)
        painted_top = max((int(np.max(f.data)) for f in self._labels_layers() if np.size(f.data)), default=0)
        removed, kept = [], []
        for name in reversed(added):
            if name not in session.class_names:
                continue
            k = session.class_names.index(name)
            others = (counts.per_class[k] if counts and k < len(counts.per_class) else 0) - (
                from_import[k] if k < len(from_import) else 0
            )
            if others > 0 or painted_top >= k + 1 or len(session.classes) <= 2:
                kept.append(name)
                continue
            session.remove_class(k)
            removed.append(name)
        if removed:
            show_info(f"Forgot the import; removed its now empty classes {', '.join(reversed(removed))}.")
        if kept:
            show_info(f"Kept classes {', '.join(reversed(kept))}: other labels use them.")

    def _labels_layers(self) -> list:
        return [
            layer
            for layer in (
                labels_layer(self.viewer, f, self.session.class_colors, create=False) for f in self.fields()
            )
            if layer is not None
        ]

    # -- model files ------------------------------------------------------------------------------
    def save_model(self, path: str) -> str | None:
        """Save the session's model (with the classes' current colours); the path written."""
        from ..modelfile import save_model

        trained = self.session.trained
        if trained is None:
            return None
        meta = dataclasses.replace(trained.meta, class_colors=self._class_colors())
        try:
            final = save_model(path, trained.model, meta)
        except (OSError, ValueError) as exc:
            show_error(f"Could not save the model to {path}: {exc}")
            return None
        show_info(f"Saved the model to {final}")
        return str(final)

    def load_model(self, path: str) -> bool:
        from ..modelfile import ModelFileError, load_model

        try:
            model, meta = load_model(path, device="cpu")
        except (ModelFileError, OSError, ValueError) as exc:
            show_error(f"Could not load a model: {exc}")
            return False
        changes = self.session.adopt_model_file(model, meta, path)
        show_info(
            f"Loaded {Path(path).name}: classes {', '.join(meta.class_names)}"
            + ("; " + "; ".join(changes) if changes else "")
        )
        return True
