"""What the classifier remembers for one viewer, independent of any Qt widget.

The dock widget is a view of a `Session`: closing and re-opening it (or opening a second one) picks
up the same classes, settings, trained model, training curves and predictions, because the session
lives in a per-viewer store (`session_for(viewer)`) and not in the widget. Background jobs run from
the session too (`Session.jobs`), so a training started in a widget that is then closed still ends
up in the session.

Everything here is observable through psygnal signals; panels subscribe and redraw. State only:
no notifications, no layers (the controller, `_controller.py`, acts and tells the user).
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from psygnal import Signal, evented

from ..datasets import ClassFolders
from ..options import TILE_SIZE, train_config_from, train_default
from ._jobs import JobRunner
from ._training_log import epochs_from_history, run_text, summary_text

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from torch import nn

    from ..inference import Classifier, FieldPrediction
    from ..modelfile import ModelMeta
    from ..training import EpochEnd, History, TrainConfig

DEFAULT_CLASS_NAMES = ("Control", "Treated")

# How the pixels of a field are labelled for training (per-field choice in the Fields panel).
LABELS_PAINTED = "painted"  # tiles take the majority class painted on "<field> labels"
LABELS_UNUSED = "unused"  # the field is not used for training
# a whole-image choice is stored as the 1-based class value (int)


@dataclass
class ClassSpec:
    name: str
    color: str  # "#rrggbb"


@evented
@dataclass
class DataSettings:
    tile_size: int = TILE_SIZE.default
    stride: int = 0  # 0: same as the tile size (no overlap)
    channels: tuple[int, ...] = ()  # chosen channel indices; () = all channels of the field
    skip_background: bool = False
    show_grid: bool = True

    def effective_stride(self) -> int:
        return self.stride or self.tile_size


@evented
@dataclass
class TrainSettings:
    """The training settings the Train panel shows; defaults are training.TrainConfig's
    (through options), every other TrainConfig field keeps its default."""

    epochs: int = train_default("epochs")
    learning_rate: float = train_default("learning_rate")
    augment: bool = train_default("augment")
    seed: int = train_default("seed")
    runs: int = train_default("runs")
    device: str = train_default("device")  # "auto" | "cpu" | "gpu"
    architecture: str = train_default("architecture")

    def config(self) -> "TrainConfig":
        return train_config_from(dataclasses.asdict(self))


# Tiles imported from root/<class>/<image> folders, with the settings they were cut with.
ImportedFolders = ClassFolders


@dataclass
class TrainedModel:
    model: "nn.Module"
    meta: "ModelMeta"
    history: "History | None" = None
    source: str = "trained"  # "trained" | a file path
    cancelled: bool = False


@dataclass
class TrainingLog:
    """What the Train panel shows; kept here so a re-opened widget shows it again."""

    epochs: list["EpochEnd"] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    memorisation: list[str] = field(default_factory=list)


class Session:
    classes_changed = Signal()
    model_changed = Signal()
    labels_changed = Signal()  # painted labels / whole-image choices / imports changed
    predictions_changed = Signal(str)  # field id
    log_changed = Signal()
    current_changed = Signal()  # the selected field (`current_field`) changed
    counts_changed = Signal()  # `counts` (labelled tiles per class) was recomputed

    def __init__(self, viewer: "napari.Viewer | None" = None):
        from ..modelfile import default_class_colors

        colors = default_class_colors(len(DEFAULT_CLASS_NAMES))
        self.classes = [ClassSpec(n, c) for n, c in zip(DEFAULT_CLASS_NAMES, colors)]
        self.data = DataSettings()
        self.train = TrainSettings()
        # field id -> LABELS_PAINTED | LABELS_UNUSED | 1-based class value (whole image)
        self.field_labels: dict[str, Any] = {}
        self.current_field: str | None = None
        self.counts = None  # _labelling.TileCounts, kept fresh by the widget
        self.imported: ImportedFolders | None = None
        self.import_added: list[str] = []  # classes the import created (Forget import may drop them)
        self.trained: TrainedModel | None = None
        # source (field) name -> {"train", "validation": {(row, col)}} of the last training
        self.training_split: dict[str, dict[str, set]] = {}
        # field id -> (field name, prediction)
        self.predictions: dict[str, tuple[str, "FieldPrediction"]] = {}
        self.log = TrainingLog()
        self.jobs = JobRunner()
        self._classifier: tuple[str, "Classifier"] | None = None
        self._viewer_ref = weakref.ref(viewer) if viewer is not None else (lambda: None)
        # Recorded here, not in a panel, so the curves survive closing the widget mid-training.
        self.jobs.progress.connect(self._record_progress)

    @property
    def viewer(self) -> "napari.Viewer | None":
        return self._viewer_ref()

    # -- classes ---------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def class_colors(self) -> list[str]:
        return [c.color for c in self.classes]

    def add_class(self, name: str | None = None) -> ClassSpec:
        from ..modelfile import default_class_colors

        taken = set(self.class_names)
        if name is None:
            k = len(self.classes) + 1
            while f"Class {k}" in taken:
                k += 1
            name = f"Class {k}"
        elif name in taken:
            raise ValueError(f"a class named {name!r} already exists")
        palette = default_class_colors(len(self.classes) + 1)
        used = set(self.class_colors)
        color = next((c for c in palette if c not in used), palette[-1])
        spec = ClassSpec(name, color)
        self.classes.append(spec)
        self.classes_changed.emit()
        return spec

    def remove_class(self, index: int) -> None:
        """Remove class `index` (0-based). Whole-image choices above it shift down by one; painted
        label values are renumbered by the caller (it owns the layers)."""
        if len(self.classes) <= 2:
            raise ValueError("a classifier needs at least two classes")
        del self.classes[index]
        value = index + 1
        for fid, choice in list(self.field_labels.items()):
            if isinstance(choice, int):
                if choice == value:
                    self.field_labels[fid] = LABELS_PAINTED
                elif choice > value:
                    self.field_labels[fid] = choice - 1
        self.classes_changed.emit()
        self.labels_changed.emit()

    def rename_class(self, index: int, name: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError("a class name cannot be empty")
        if name in self.class_names[:index] + self.class_names[index + 1 :]:
            raise ValueError(f"a class named {name!r} already exists")
        self.classes[index].name = name
        self.classes_changed.emit()

    def set_class_color(self, index: int, color: str) -> None:
        self.classes[index].color = color
        self.classes_changed.emit()

    def set_classes(self, names: list[str], colors: list[str]) -> None:
        self.classes = [ClassSpec(n, c) for n, c in zip(names, colors)]
        self.classes_changed.emit()

    def color_of(self, class_name: str, fallback: str) -> str:
        for spec in self.classes:
            if spec.name == class_name:
                return spec.color
        return fallback

    def set_current_field(self, field_id: str | None) -> None:
        if field_id != self.current_field:
            self.current_field = field_id
            self.current_changed.emit()

    def set_counts(self, counts) -> None:
        self.counts = counts
        self.counts_changed.emit()

    # -- labels ----------------------------------------------------------------------------------
    def labels_source(self, field_id: str) -> Any:
        return self.field_labels.get(field_id, LABELS_PAINTED)

    def set_labels_source(self, field_id: str, choice: Any) -> None:
        if self.field_labels.get(field_id, LABELS_PAINTED) != choice:
            self.field_labels[field_id] = choice
            self.labels_changed.emit()

    def set_imported(self, imported: ImportedFolders | None, added: Sequence[str] = ()) -> None:
        self.imported = imported
        self.import_added = list(added)
        self.labels_changed.emit()

    # -- model -----------------------------------------------------------------------------------
    def set_model(self, trained: TrainedModel | None) -> None:
        self.trained = trained
        self._classifier = None
        self.model_changed.emit()

    def classifier(self, device: str) -> "Classifier":
        """The trained model wrapped once per device (the wrapper sizes batches, moves weights)."""
        from ..inference import Classifier

        if self.trained is None:
            raise ValueError("there is no model yet: train one or load a model file first")
        if self._classifier is None or self._classifier[0] != device:
            self._classifier = (device, Classifier(self.trained.model, self.trained.meta, device=device))
        return self._classifier[1]

    @property
    def precision_report(self):
        """precision.PrecisionReport of the wrapped model, None until it has been wrapped."""
        return None if self._classifier is None else self._classifier[1].precision_report

    def set_prediction(self, field_id: str, field_name: str, prediction: "FieldPrediction") -> None:
        self.predictions[field_id] = (field_name, prediction)
        self.predictions_changed.emit(field_id)

    def adopt_training(
        self, result, channel_indices: list[int], extra: dict | None = None, pixel_size: dict | None = None
    ) -> bool:
        """Keep a finished (or cancelled) training's best model, with the classes' colours;
        `extra` (what the worker computed: "evaluation", "baseline") goes into meta.extra, and
        `pixel_size` (pixelsize.training_pixel_size of the labelled fields) into meta.pixel_size.
        A training cancelled before any epoch ended has no model worth keeping: False, and the
        previous model (if any) stays."""
        if result.cancelled and not any(run.get("epochs_completed", 0) > 0 for run in result.history.runs):
            self.log.messages.append("Cancelled before the first epoch ended: no model kept.")
            self.log_changed.emit()
            return False
        colors = [
            self.color_of(name, c)
            for name, c in zip(result.class_names, _fallback_colors(len(result.class_names)))
        ]
        meta = result.meta(class_colors=colors, channel_indices=list(channel_indices) or None)
        if extra:
            meta.extra = {**(meta.extra or {}), **extra}
        meta.pixel_size = pixel_size
        self.set_model(TrainedModel(result.model, meta, result.history, "trained", result.cancelled))
        self.log.messages.append(summary_text(result.history, result.cancelled))
        # The CNN-vs-classical warning stays out of the log: the Train panel shows that comparison
        # (verdict included) on its own line, and the log repeated it word for word.
        comparison = (getattr(result.history, "baseline", None) or {}).get("sentence")
        self.log.messages.extend(
            w for w in self.unseen_warnings(result.history) if not (comparison and comparison in w)
        )
        self.log_changed.emit()
        return True

    def unseen_warnings(self, history) -> list[str]:
        """A finished training's warnings that the log has not shown live already."""
        return [w for w in history.warnings if w not in self.log.memorisation]

    def adopt_model_file(self, model, meta, path: str) -> list[str]:
        """A loaded model brings its classes (names, colours), its tile size and its training
        curves. Returns what that changed, in words (the log keeps them too): never silent."""
        from ..training import History

        history = History.from_dict(meta.history) if meta.history else None
        changes = []
        if self.class_names != list(meta.class_names):
            changes.append(f"classes {', '.join(self.class_names)} -> {', '.join(meta.class_names)}")
        if self.class_names != list(meta.class_names) or self.class_colors != list(meta.class_colors):
            self.set_classes(list(meta.class_names), list(meta.class_colors))
        if int(self.data.tile_size) != int(meta.tile_size):
            changes.append(f"tile size {self.data.tile_size} -> {int(meta.tile_size)} px")
        self.data.tile_size = int(meta.tile_size)
        self.set_model(TrainedModel(model, meta, history, source=str(path)))
        self.log = TrainingLog(
            epochs=epochs_from_history(history),
            messages=[f"Loaded from {path}"] + [f"Changed by the model: {c}." for c in changes],
        )
        self.log_changed.emit()
        return changes

    # -- training log ----------------------------------------------------------------------------
    def reset_log(self) -> None:
        self.log = TrainingLog()
        self.log_changed.emit()

    def _record_progress(self, kind: str, event: Any) -> None:
        from ..training import EpochEnd, MemorisationWarning, RunFinished

        if kind != "train":
            return
        if isinstance(event, EpochEnd):
            self.log.epochs.append(event)
        elif isinstance(event, MemorisationWarning):
            self.log.memorisation.append(event.message)  # the controller notifies
        elif isinstance(event, RunFinished):
            self.log.messages.append(run_text(event))
        else:
            return
        self.log_changed.emit()


def _fallback_colors(n: int) -> list[str]:
    from ..modelfile import default_class_colors

    return default_class_colors(n)


# Sessions die with their viewer: the key is held weakly.
_SESSIONS: "weakref.WeakKeyDictionary[Any, Session]" = weakref.WeakKeyDictionary()


def real_viewer(viewer):
    """napari hands dock widgets a PublicOnlyProxy of the viewer, a new proxy per widget; the
    session must be keyed by the viewer itself so every widget on it finds the same one."""
    inner = getattr(viewer, "__wrapped__", None)
    while inner is not None and inner is not viewer:
        viewer, inner = inner, getattr(inner, "__wrapped__", None)
    return viewer


def session_for(viewer: "napari.Viewer") -> Session:
    """The viewer's session, created on first use and shared by every widget on that viewer."""
    viewer = real_viewer(viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session(viewer)
    return session
