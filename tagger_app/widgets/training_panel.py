"""The training panel: fine-tune the model on the person's confirmed images, compare, switch.

The panel shows what training would use (confirmed images, label counts, labels with too few
examples, labels the current model lacks), runs ``mlcnn train`` as a subprocess (the same command a
person would type; the panel only sets options on it), draws its progress, then compares the new
model with the current one on the held-out confirmed images (``mlcnn evaluate``) and offers to make
it the active model. Kept models live in the user data folder; any of them can be made active again.

It never imports torch and never blocks: every subprocess reports by signal. Intents go out as
signals (``activateModelRequested``); the main window does the loading.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QPointF,
    QRectF,
    QSize,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mlcnn_core.data import Sample, split_samples
from mlcnn_core.library import LIBRARY_DIRNAME, LIBRARY_FILENAME, Library, LibraryError, fallback_library_path
from mlcnn_core.modelfile import read_card
from mlcnn_core.recipes import RECIPES, TrainConfig
from tagger_app.models.column_table_model import ColumnTableModel
from tagger_app.models.model_registry import KeptModelsModel, ModelRegistry
from tagger_app.workers.predictor_worker import ModelSummary
from tagger_app.workers.trainer_process import EvaluationProcess, TrainerProcess

MIN_EXAMPLES = 5
ARCHITECTURES = ("compact", "tiny", "nin", "paper")
# How far a fine-tune may move from the current model: (shown, mlcnn train --anchor; None: the recipe's)
KEEP_CHOICES = (("strongly (auto)", None), ("somewhat: learn more of a new style", 200.0),
                ("no: learn a new drawing style", 0.0))
KEEP_TOOLTIP = (
    "How strongly a fine-tune pulls the weights back toward the current model's (mlcnn train --anchor).\n"
    "Strongly: what the model knew holds (a point or two lost on the benchmark) and new labels are learnt, "
    "but a new drawing style hardly is, even in the images that were confirmed.\n"
    "Somewhat (--anchor 200): with 25-200 confirmed images of a new artist, the new style gains 3-9 points "
    "of accuracy and the old one loses 6-11 (3-4 with images of the old style trained on too).\n"
    "No: with a thousand or more confirmed images a new style is learnt and the old one partly forgotten "
    "(benchmark, 1,000 scenes of a new artist: new style 22 % → 32 % accuracy, old style 86 % → 71 %; "
    "with images of the old style trained on too, 86 % → 80 %). BENCHMARKS.md has the numbers."
)
KEEP_REPLAY_NOTE = (
    "Without the pull back the model forgets some of what it knew. Tick a library of the images it already "
    "tags well under “Also train on confirmed images of” (Data tab) to keep it."
)
BETTER = QColor(30, 130, 60)
WORSE = QColor(190, 40, 40)
NEW = QColor(40, 90, 190)
FEW = QColor(140, 110, 40)  # a note, not an error: a label with few examples still trains


def training_runs_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mlcnn-tagger", appauthor=False)) / "training-runs"


# ------------------------------------------------------------------------------------------ data


def model_stem(finetune: bool) -> str:
    """How a run's model file and the copy kept of it are named: ``fine-tuned`` or ``trained``."""
    return "fine-tuned" if finetune else "trained"


@dataclass
class TrainingSource:
    """Confirmed images of one library: (absolute path, the person's tags)."""

    folder: Path
    images: list[tuple[Path, list[str]]]


def existing_library(folder: str | Path) -> Library | None:
    """The library of a folder the person opened before, or None (never creates one)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if not (folder / LIBRARY_DIRNAME / LIBRARY_FILENAME).is_file() and not fallback_library_path(folder).is_file():
        return None
    try:
        return Library.open(folder)
    except LibraryError:
        return None


def write_manifest(path: Path, images: list[tuple[Path, list[str]]]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"image": str(p), "labels": list(tags)}, ensure_ascii=False) + "\n" for p, tags in images),
        encoding="utf-8",
    )


class LabelCountsModel(ColumnTableModel):
    """Per label: training images, held-out images, and whether it is new or has too few examples."""

    COLUMNS = ("Label", "Training", "Held out", "Note")

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[tuple[str, int, int, str]] = []

    def set_counts(self, train: dict[str, int], held: dict[str, int], known: set[str] | None) -> None:
        self.beginResetModel()
        self.rows = []
        for label in sorted(set(train) | set(held), key=lambda lab: (-train.get(lab, 0), lab)):
            notes = []
            if known is not None and label not in known:
                notes.append("new: will be added")
            if train.get(label, 0) < MIN_EXAMPLES:
                notes.append(f"too few (< {MIN_EXAMPLES})")
            self.rows.append((label, train.get(label, 0), held.get(label, 0), ", ".join(notes)))
        self.endResetModel()

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return row[index.column()]
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 3 and row[3]:
            return NEW if row[3].startswith("new") else FEW
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (1, 2):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class ComparisonModel(ColumnTableModel):
    """The current and the new model on the held-out images: overall rows first, then one row per label.

    A label the current model lacks shows "new" on its side; Δ is the new model's F1 minus the current one's."""

    COLUMNS = ("Label", "Images", "F1 now", "F1 new", "Δ F1", "P now", "P new", "R now", "R new")
    TOOLTIPS = (
        "",
        "Held-out images with this label",
        "F1 of the current model",
        "F1 of the new model",
        "F1 of the new model minus F1 of the current one",
        "Precision of the current model",
        "Precision of the new model",
        "Recall of the current model",
        "Recall of the new model",
    )
    SortRole = Qt.ItemDataRole.UserRole + 1
    _KEYS = ("label", "support", "f1_old", "f1_new", "delta", "p_old", "p_new", "r_old", "r_new")
    DELTA_COLUMN = 4

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[dict] = []
        self.overall: list[dict] = []

    def set_results(self, current: dict | None, new: dict) -> None:
        self.beginResetModel()
        new_single = new["single_pass"]
        old_single = current["single_pass"] if current else None
        self.overall = []
        for metric in ("precision", "recall", "accuracy", "mAP"):
            old_value = old_single.get(metric) if old_single else None
            self.overall.append({"metric": metric, "current": old_value, "new": new_single.get(metric)})
        old_labels = (old_single or {}).get("per_label", {})
        self.rows = []
        for label, m in new_single.get("per_label", {}).items():
            old = old_labels.get(label)
            self.rows.append(
                {
                    "label": label,
                    "support": m["support"],
                    "p_old": old["precision"] if old else None,
                    "p_new": m["precision"],
                    "r_old": old["recall"] if old else None,
                    "r_new": m["recall"],
                    "f1_old": old["f1"] if old else None,
                    "f1_new": m["f1"],
                    "delta": (m["f1"] - old["f1"]) if old else None,
                    "is_new": current is not None and old is None,
                }
            )
        self.rows = [r for r in self.rows if r["support"] > 0 or (r["delta"] or 0) != 0]
        self.endResetModel()

    def label_row(self, label: str) -> dict | None:
        return next((r for r in self.rows if r["label"] == label), None)

    def changed(self) -> tuple[list[str], list[str]]:
        """Labels whose F1 went up, and down, on the held-out images."""
        better = [r["label"] for r in self.rows if r["delta"] is not None and r["delta"] > 1e-9]
        worse = [r["label"] for r in self.rows if r["delta"] is not None and r["delta"] < -1e-9]
        return better, worse

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        key = self._KEYS[index.column()]
        value = row[key]
        if role == Qt.ItemDataRole.DisplayRole:
            if key in ("label", "support"):
                return value
            if value is None:
                return "new" if row["is_new"] and key != "delta" else "—"
            return f"{value:+.3f}" if key == "delta" else f"{value:.3f}"
        if role == self.SortRole:
            return value if value is not None else -math.inf
        if role == Qt.ItemDataRole.ForegroundRole:
            if row["is_new"]:
                return NEW
            if key == "delta" and value is not None and abs(value) > 1e-9:
                return BETTER if value > 0 else WORSE
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


@dataclass
class Verdict:
    """Which model read the held-out images better, in words, and whether the new one did worse."""

    text: str
    worse: bool


def accuracy_verdict(current: float | None, new: float | None, images: int) -> Verdict | None:
    """The new model's held-out accuracy against the current one's, with the chance a few images leave.

    The accuracy is a mean over images of a per-image score in [0, 1]; such a score with mean p has a
    standard deviation of at most √(p(1 − p)), so the paired difference of two models has one of at most
    the sum of theirs, and its 95 % margin on n images is at most 1.96 × that / √n (a bound: the margin
    itself is usually smaller, since both models get the same images right)."""
    if current is None or new is None or images <= 0 or not (math.isfinite(current) and math.isfinite(new)):
        return None
    delta = new - current
    spread = math.sqrt(max(0.0, current * (1 - current))) + math.sqrt(max(0.0, new * (1 - new)))
    margin = 1.96 * spread / math.sqrt(images)
    direction = "better" if delta > 0 else "worse"
    amount = f"accuracy {current:.3f} → {new:.3f}, {abs(delta):.3f} {direction}"
    if abs(delta) < 1e-9:
        return Verdict(f"Both models read the {images} held-out images equally well (accuracy {new:.3f}).", False)
    if abs(delta) > margin:
        return Verdict(f"The new model is {direction} ({amount} on {images} held-out images).", delta < 0)
    return Verdict(
        f"The new model scored {direction} ({amount}), but on {images} held-out images a difference of up "
        f"to ±{margin:.2f} can be chance: neither is clearly better. Confirm more images to tell.",
        delta < 0,
    )


# ------------------------------------------------------------------------------------------ curves


class LogView(QPlainTextEdit):
    """A read-only log that keeps its last line in view, also when its lines rewrap after a resize,
    until the person scrolls up to read; scrolling back to the end follows it again."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.following = True
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._scrolled)
        bar.rangeChanged.connect(self._range_changed)

    def _scrolled(self, value: int) -> None:
        self.following = value >= self.verticalScrollBar().maximum()

    def _range_changed(self, _low: int, high: int) -> None:
        if self.following:
            self.verticalScrollBar().setValue(high)


class TrainingCurves(QWidget):
    """Training loss (left axis) and held-out accuracy (right axis, 0–1) against epochs."""

    LOSS = QColor(40, 90, 190)
    ACCURACY = QColor(220, 110, 20)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loss: list[tuple[float, float]] = []
        self.accuracy: list[tuple[float, float]] = []
        self.epochs = 1
        self.setMinimumSize(260, 160)

    def sizeHint(self) -> QSize:
        return QSize(480, 220)

    def clear(self, epochs: int = 1) -> None:
        self.loss, self.accuracy, self.epochs = [], [], max(1, epochs)
        self.update()

    def add_step(self, event: dict) -> None:
        x = event["epoch"] - 1 + event["step_in_epoch"] / max(1, event["steps_per_epoch"])
        loss = float(event.get("loss", float("nan")))
        if math.isfinite(loss):
            self.loss.append((x, loss))
            self.update()

    def add_epoch(self, event: dict) -> None:
        val = event.get("val") or {}
        if "accuracy" in val and math.isfinite(float(val["accuracy"])):
            self.accuracy.append((float(event["epoch"]), float(val["accuracy"])))
            self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        metrics = painter.fontMetrics()
        left, right, top, bottom = (
            metrics.horizontalAdvance("0.000") + 10,
            metrics.horizontalAdvance("1.00") + 12,
            metrics.height() + 6,
            metrics.height() + 8,
        )
        plot = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        text_pen = QPen(self.palette().text().color())
        painter.setPen(QPen(QColor(180, 180, 180)))
        painter.drawRect(plot)

        x_max = max([self.epochs] + [x for x, _ in self.loss] + [x for x, _ in self.accuracy])
        losses = [y for _, y in self.loss]
        y_max = max(losses) * 1.05 if losses else 1.0
        y_min = min(0.0, min(losses)) if losses else 0.0
        y_span = max(1e-9, y_max - y_min)

        def point(x: float, y: float, lo: float, span: float) -> QPointF:
            return QPointF(
                plot.left() + plot.width() * x / max(1e-9, x_max), plot.bottom() - plot.height() * (y - lo) / span
            )

        painter.setPen(text_pen)
        for i in range(5):
            frac = i / 4
            y = plot.bottom() - plot.height() * frac
            painter.setPen(QPen(QColor(225, 225, 225)))
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(text_pen)
            align_right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            align_left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
            painter.drawText(QRectF(0, y - 8, left - 4, 16), align_right, f"{y_min + frac * y_span:.3g}")
            painter.drawText(QRectF(plot.right() + 4, y - 8, right, 16), align_left, f"{frac:.2f}")
        ticks = max(1, min(int(math.ceil(x_max)), 10))
        for i in range(ticks + 1):
            epoch = x_max * i / ticks
            x = plot.left() + plot.width() * i / ticks
            painter.drawText(
                QRectF(x - 30, plot.bottom() + 2, 60, bottom),
                Qt.AlignmentFlag.AlignHCenter,
                f"{epoch:.0f}" if abs(epoch - round(epoch)) < 1e-6 else f"{epoch:.1f}",
            )

        series = ((self.loss, self.LOSS, y_min, y_span), (self.accuracy, self.ACCURACY, 0.0, 1.0))
        for points, color, lo, span in series:
            if not points:
                continue
            painter.setPen(QPen(color, 2))
            path = QPainterPath(point(*points[0], lo, span))
            for p in points[1:]:
                path.lineTo(point(*p, lo, span))
            painter.drawPath(path)
            if color == self.ACCURACY:
                painter.setBrush(color)
                for p in points:
                    painter.drawEllipse(point(*p, lo, span), 3, 3)
                painter.setBrush(Qt.BrushStyle.NoBrush)

        painter.setPen(QPen(self.LOSS))
        painter.drawText(
            QRectF(plot.left(), 0, plot.width() / 2, top),
            Qt.AlignmentFlag.AlignLeft,
            "— training loss" + (f" {self.loss[-1][1]:.3f}" if self.loss else ""),
        )
        painter.setPen(QPen(self.ACCURACY))
        painter.drawText(
            QRectF(plot.center().x(), 0, plot.width() / 2, top),
            Qt.AlignmentFlag.AlignRight,
            "● held-out accuracy" + (f" {self.accuracy[-1][1]:.3f}" if self.accuracy else ""),
        )
        painter.setPen(text_pen)
        painter.drawText(
            QRectF(plot.left(), self.height() - bottom + 2 + metrics.height() * 0, plot.width(), bottom),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
            "epoch",
        )
        painter.end()


# ------------------------------------------------------------------------------------------ the panel


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class TrainingPanel(QWidget):
    """Shows the training data, runs and watches the trainer, compares and offers the new model.

    The main window calls :meth:`set_library`, :meth:`set_current_model` (with the loaded model's
    summary) and :meth:`shutdown`, and loads the model of ``activateModelRequested``."""

    activateModelRequested = Signal(str)  # path of the model to make active
    trainingStarted = Signal()
    trainingEnded = Signal(str)  # "done" | "cancelled" | "failed"
    comparisonReady = Signal()

    def __init__(
        self, parent: QWidget | None = None, registry: ModelRegistry | None = None, runs_dir: str | Path | None = None
    ):
        super().__init__(parent)
        self.registry = registry or ModelRegistry()
        self.runs_dir = Path(runs_dir) if runs_dir is not None else training_runs_dir()
        self.library: Library | None = None
        self.other_folders: list[str] = []
        self.current_model: str | None = None
        self.current_labels: set[str] | None = None
        self.sources: list[TrainingSource] = []
        self.n_train = 0
        self.n_held_out = 0
        self.new_model: str | None = None
        self.last_error = ""
        self.last_stderr = ""
        self._run_dir: Path | None = None
        self._train_config: TrainConfig | None = None
        self._compared_current: str | None = None
        self._start_event: dict = {}
        self._val_fraction = 0.1
        self.verdict: Verdict | None = None
        self._done_text = ""
        self._promised_labels: list[str] = []  # "New labels (will be added)" when the run started
        self.missing_labels: list[str] = []  # promised labels the new model lacks

        self.trainer = TrainerProcess(self)
        self.evaluator = EvaluationProcess(self)
        self._recipe = RECIPES["default"]  # the recipe mlcnn train would use with "auto" everywhere
        self.label_counts = LabelCountsModel(self)
        self.comparison = ComparisonModel(self)
        self.kept_models = KeptModelsModel(self.registry, self)

        self._build()
        self._connect()
        self._update_mode()
        self._set_running(False)

    # ------------------------------------------------------------------ building

    def _build(self) -> None:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._build_data_column())
        splitter.addWidget(self._build_run_column())
        splitter.addWidget(self._build_result_column())
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setStretchFactor(2, 3)
        splitter.setSizes([330, 500, 570])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

    def _build_data_column(self) -> QWidget:
        tabs = QTabWidget()
        data = QWidget()
        layout = QVBoxLayout(data)
        self.data_summary = QLabel("Open a folder and confirm some images to train on them.")
        self.data_summary.setWordWrap(True)
        layout.addWidget(self.data_summary)
        self.counts_view = QTableView()
        self.counts_view.setModel(self.label_counts)
        self.counts_view.verticalHeader().hide()
        self.counts_view.verticalHeader().setDefaultSectionSize(22)
        self.counts_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.counts_view.horizontalHeader().setStretchLastSection(True)
        self.counts_view.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        layout.addWidget(self.counts_view, 1)
        layout.addWidget(QLabel("Also train on confirmed images of:"))
        self.other_list = QListWidget()
        self.other_list.setMaximumHeight(80)
        layout.addWidget(self.other_list)
        self.refresh_button = QPushButton("Refresh")
        layout.addWidget(self.refresh_button)
        tabs.addTab(data, "Data")

        options = QWidget()
        form = QFormLayout(options)
        self.finetune_radio = QRadioButton("Fine-tune the current model")
        self.scratch_radio = QRadioButton("Train a new model from scratch")
        self.finetune_radio.setChecked(True)
        self.mode_group = QButtonGroup(self)
        self.mode_group.addButton(self.finetune_radio)
        self.mode_group.addButton(self.scratch_radio)
        form.addRow(self.finetune_radio)
        self.new_only_check = QCheckBox("Teach only the new labels")
        self.new_only_check.setToolTip(
            "Fit the new labels' output rows to the confirmed images and train nothing else: the model's other "
            "labels stay exactly as they are, and it takes seconds (mlcnn train --epochs 0)"
        )
        self.new_only_check.setEnabled(False)
        form.addRow(self.new_only_check)
        self.keep_combo = QComboBox()
        for text, anchor in KEEP_CHOICES:
            self.keep_combo.addItem(text, anchor)
        self.keep_combo.setToolTip(KEEP_TOOLTIP)
        form.addRow("Keep what it knows", self.keep_combo)
        self.keep_note = QLabel(KEEP_REPLAY_NOTE)
        self.keep_note.setWordWrap(True)
        self.keep_note.hide()
        form.addRow(self.keep_note)
        form.addRow(self.scratch_radio)
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(ARCHITECTURES)
        form.addRow("Architecture", self.arch_combo)
        self.recipe_combo = QComboBox()
        self.recipe_combo.addItems(["default", "paper"])
        self.recipe_combo.setToolTip("default: batch norm, AdamW, cosine schedule; paper: the paper's exact recipe")
        form.addRow("Recipe", self.recipe_combo)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 1000)
        form.addRow("Epochs", self.epochs_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 1024)
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = self._rate_spin()
        form.addRow("Learning rate α₀", self.lr_spin)
        self.lr_max_spin = self._rate_spin()
        self.lr_max_spin.setToolTip("α_max of the paper's optimiser (paper recipe)")
        form.addRow("α_max", self.lr_max_spin)
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.0, 0.5)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setDecimals(2)
        self.val_spin.setValue(0.1)
        self.val_spin.setToolTip("Part of the confirmed images held out (chosen by file name), never trained on")
        form.addRow("Held out", self.val_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        form.addRow("Device", self.device_combo)
        self.time_spin = QSpinBox()
        self.time_spin.setRange(0, 24 * 60)
        self.time_spin.setSuffix(" min")
        self.time_spin.setSpecialValueText("none")
        self.time_spin.setToolTip("Train as many epochs as fit in this time (planned again after every epoch)")
        form.addRow("Time limit", self.time_spin)
        self.defaults_note = QLabel("“auto” leaves the choice to the recipe.")
        self.defaults_note.setWordWrap(True)
        form.addRow(self.defaults_note)
        self.rate_warning = QLabel()
        self.rate_warning.setWordWrap(True)
        self.rate_warning.setStyleSheet("color: #b35900")
        self.rate_warning.hide()
        form.addRow(self.rate_warning)
        for spin in (self.epochs_spin, self.batch_spin):
            spin.setSpecialValueText("auto")
        tabs.addTab(options, "Options")
        self.tabs_left = tabs
        return tabs

    @staticmethod
    def _rate_spin() -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(6)
        spin.setRange(0.0, 1.0)
        spin.setSingleStep(0.0001)
        spin.setSpecialValueText("auto")
        return spin

    def _build_run_column(self) -> QWidget:
        box = QGroupBox("Training")
        layout = QVBoxLayout(box)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Fine-tune")
        self.cancel_button = QPushButton("Cancel")
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.command_label = QLabel()
        self.command_label.setWordWrap(True)
        self.command_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.command_label.setStyleSheet("color: gray; font-family: monospace;")
        layout.addWidget(self.command_label)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("Idle")
        layout.addWidget(self.status_label)
        self.curves = TrainingCurves()
        self.curves.setToolTip(
            "Held-out accuracy after each epoch, with the scores cut where it suits the held-out images best "
            "(an optimistic reading); the comparison reads the finished model with its own threshold"
        )
        layout.addWidget(self.curves, 2)
        self.log = LogView()
        self.log.setMaximumBlockCount(2000)
        self.log.setMinimumHeight(60)
        layout.addWidget(self.log, 1)
        return box

    def _build_result_column(self) -> QWidget:
        tabs = QTabWidget()
        result = QWidget()
        layout = QVBoxLayout(result)
        self.result_summary = QLabel(
            "When a run ends, the new model is compared with the current one here, on the held-out confirmed images."
        )
        self.result_summary.setWordWrap(True)
        layout.addWidget(self.result_summary)
        self.label_warning = QLabel()
        self.label_warning.setWordWrap(True)
        self.label_warning.setStyleSheet(f"color: {WORSE.name()}")
        self.label_warning.hide()
        layout.addWidget(self.label_warning)
        self.overall_label = QLabel()
        self.overall_label.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.overall_label)
        self.comparison_proxy = QSortFilterProxyModel(self)
        self.comparison_proxy.setSourceModel(self.comparison)
        self.comparison_proxy.setSortRole(ComparisonModel.SortRole)
        self.comparison_view = QTableView()
        self.comparison_view.setModel(self.comparison_proxy)
        self.comparison_view.setSortingEnabled(True)
        self.comparison_view.verticalHeader().hide()
        self.comparison_view.verticalHeader().setDefaultSectionSize(22)
        self.comparison_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.comparison_view, 1)
        self.activate_button = QPushButton("Use the new model")
        self.activate_button.setEnabled(False)
        layout.addWidget(self.activate_button)
        tabs.addTab(result, "Comparison")

        kept = QWidget()
        kept_layout = QVBoxLayout(kept)
        self.kept_note = QLabel(f"Kept models ({self.registry.root}); ● marks the active one.")
        self.kept_note.setWordWrap(True)
        kept_layout.addWidget(self.kept_note)
        self.kept_view = QTableView()
        self.kept_view.setModel(self.kept_models)
        self.kept_view.verticalHeader().hide()
        self.kept_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.kept_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.kept_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.kept_view.horizontalHeader().setStretchLastSection(True)
        kept_layout.addWidget(self.kept_view, 1)
        self.use_kept_button = QPushButton("Use the selected model")
        kept_layout.addWidget(self.use_kept_button)
        tabs.addTab(kept, "Kept models")
        self.tabs_right = tabs
        return tabs

    def _connect(self) -> None:
        self.start_button.clicked.connect(self.start_training)
        self.cancel_button.clicked.connect(self.cancel_training)
        self.activate_button.clicked.connect(self.activate_new_model)
        self.use_kept_button.clicked.connect(self._use_selected_kept_model)
        self.kept_view.doubleClicked.connect(lambda _i: self._use_selected_kept_model())
        self.refresh_button.clicked.connect(self.refresh_data)
        self.other_list.itemChanged.connect(lambda _item: self._on_other_libraries_changed())
        self.mode_group.buttonToggled.connect(lambda *_: self._update_mode())
        self.recipe_combo.currentTextChanged.connect(lambda _t: self._update_mode())
        self.val_spin.valueChanged.connect(lambda _v: self._recount())
        for widget in (self.epochs_spin, self.batch_spin, self.lr_spin, self.lr_max_spin, self.time_spin):
            widget.valueChanged.connect(lambda _v: self._show_command())
        self.arch_combo.currentTextChanged.connect(lambda _t: self._show_command())
        self.keep_combo.currentIndexChanged.connect(lambda _i: self._on_keep_changed())
        self.device_combo.currentTextChanged.connect(lambda _t: self._show_command())
        self.new_only_check.toggled.connect(lambda _c: self._on_new_only_toggled())

        self.trainer.started.connect(self._on_started)
        self.trainer.progress.connect(self._on_progress)
        self.trainer.epochEnded.connect(self._on_epoch)
        self.trainer.logLine.connect(self.log.appendPlainText)
        self.trainer.finished.connect(self._on_done)
        self.trainer.cancelled.connect(self._on_cancelled)
        self.trainer.failed.connect(self._on_failed)
        self.evaluator.finished.connect(self._on_compared)
        self.evaluator.progress.connect(self._on_compare_progress)
        self.evaluator.failed.connect(self._on_compare_failed)

    # ------------------------------------------------------------------ state from the main window

    def set_library(self, library: Library | None, recent_folders: list[str] | None = None) -> None:
        """The open folder's library, and the folders opened before (offered as extra training data)."""
        self.library = library
        root = str(library.root) if library is not None else None
        self.other_folders = [f for f in (recent_folders or []) if f != root]
        self.other_list.blockSignals(True)
        checked = {item.text() for item in self._checked_other_items()}
        self.other_list.clear()
        for folder in self.other_folders:
            item = QListWidgetItem(folder)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if folder in checked else Qt.CheckState.Unchecked)
            self.other_list.addItem(item)
        self.other_list.blockSignals(False)
        self.refresh_data()

    def set_current_model(self, model: ModelSummary | None) -> None:
        """The model the predictor has loaded (its labels tell which confirmed tags would be new)."""
        self.current_model = model.path if model else None
        self.current_labels = set(model.labels) if model else None
        self.kept_models.refresh()
        self.kept_models.set_active(self.current_model)
        self._update_mode()
        self._recount()
        self._offer_new_model()

    def shutdown(self) -> None:
        """Stop any subprocess (the trainer keeps its checkpoint)."""
        if self.trainer.process is not None:
            self.trainer.process.terminate()
            self.trainer.process.waitForFinished(10_000)
        self.evaluator.cancel()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self.trainer.is_running():
            self.refresh_data()
        self.kept_models.refresh()
        self.kept_models.set_active(self.current_model)

    # ------------------------------------------------------------------ what training would use

    def _checked_other_items(self) -> list[QListWidgetItem]:
        """The other libraries ticked under "Also train on confirmed images of"."""
        items = (self.other_list.item(i) for i in range(self.other_list.count()))
        return [item for item in items if item.checkState() == Qt.CheckState.Checked]

    def refresh_data(self) -> None:
        sources = []
        if self.library is not None:
            sources.append(TrainingSource(self.library.root, self.library.confirmed_images()))
        for item in self._checked_other_items():
            library = existing_library(item.text())
            if library is None:
                item.setToolTip("No confirmed images here (or the folder is gone)")
                continue
            try:
                sources.append(TrainingSource(library.root, library.confirmed_images()))
            finally:
                library.close()
        self.sources = sources
        self._recount()

    def _recount(self) -> None:
        # split as mlcnn train will: by file name, a label none of whose images would be trained on kept in
        samples = [Sample(str(image), tuple(tags)) for source in self.sources for image, tags in source.images]
        train_samples, held_samples = split_samples(samples, self.val_spin.value())
        self.n_train, self.n_held_out = len(train_samples), len(held_samples)
        train: dict[str, int] = {}
        held: dict[str, int] = {}
        for part, counts in ((train_samples, train), (held_samples, held)):
            for sample in part:
                for tag in sample.labels:
                    counts[tag] = counts.get(tag, 0) + 1
        known = self.current_labels if self.finetune_radio.isChecked() else None
        self.label_counts.set_counts(train, held, known)
        total = self.n_train + self.n_held_out
        if not self.sources:
            text = "Open a folder and confirm some images to train on them."
        elif total == 0:
            text = "No confirmed images yet: confirm the tags of some images (Edit ▸ Confirm all tags) first."
        else:
            folders = len(self.sources)
            text = (
                f"<b>{total}</b> confirmed images in {folders} folder{'s' if folders > 1 else ''}: "
                f"{self.n_train} to train on, {self.n_held_out} held out (chosen by file name, never trained "
                f"on; the comparison uses them; an image with a label no other trained image has is trained on)."
            )
            new = self._new_labels()
            few = [r[0] for r in self.label_counts.rows if "too few" in r[3]]
            if new:
                text += f"<br><span style='color:{NEW.name()}'>New labels (will be added): {', '.join(new)}</span>"
            if few:
                text += (
                    f"<br><span style='color:{FEW.name()}'>Fewer than {MIN_EXAMPLES} training images (learnt, "
                    f"but less reliably): "
                    f"{', '.join(few[:12])}{'…' if len(few) > 12 else ''}</span>"
                )
        self.data_summary.setText(text)
        self._request_defaults()
        self._set_running(self.trainer.is_running())

    def _new_labels(self) -> list[str]:
        return [r[0] for r in self.label_counts.rows if r[3].startswith("new")]

    # ------------------------------------------------------------------ options

    def _update_mode(self) -> None:
        finetune = self.finetune_radio.isChecked()
        self.arch_combo.setEnabled(not finetune and not self.trainer.is_running())
        self.start_button.setText("Fine-tune" if finetune else "Train from scratch")
        self.lr_max_spin.setEnabled(self.recipe_combo.currentText() == "paper")
        if self.current_model is None and self.finetune_radio.isChecked():
            self.finetune_radio.setToolTip("No model is loaded: load one (Model menu) or train from scratch")
        self._recount_known_only()
        self._request_defaults()
        self._set_running(self.trainer.is_running())

    def _recount_known_only(self) -> None:
        if self.label_counts.rows or self.sources:
            train = {r[0]: r[1] for r in self.label_counts.rows}
            held = {r[0]: r[2] for r in self.label_counts.rows}
            self.label_counts.set_counts(train, held, self.current_labels if self.finetune_radio.isChecked() else None)

    def _request_defaults(self) -> None:
        if self.n_train > 0:
            self._show_recipe_defaults()
        self._show_command()

    def _show_recipe_defaults(self) -> None:
        """What ``mlcnn train`` picks where the options say "auto", for this many training images."""
        auto = TrainConfig(data=[], out="", recipe=self.recipe_combo.currentText(),
                           init=self.current_model if self.finetune_radio.isChecked() else None)
        recipe = self._recipe = auto.recipe_for(self.n_train)
        self.epochs_spin.setSpecialValueText(f"auto ({recipe.epochs})")
        self.batch_spin.setSpecialValueText(f"auto ({recipe.batch_size})")
        self.lr_spin.setSpecialValueText(f"auto ({recipe.lr:.2g})")
        self.lr_max_spin.setSpecialValueText(f"auto ({recipe.lr_max:.2g})")
        steps = recipe.epochs * max(1, math.ceil(self.n_train / max(1, recipe.batch_size)))
        self.defaults_note.setText(
            f"“auto” is what <tt>mlcnn train</tt> picks for {self.n_train} training images: "
            f"{recipe.name} recipe, {recipe.optimizer}, {recipe.schedule} schedule, "
            f"about {steps} steps."
        )

    def model_file_name(self, run_dir: Path) -> str:
        """``fine-tuned-<run's UTC time>.safetensors`` (or ``trained-…``): a fine-tune's card takes its
        name from this file's, and the model is kept under the same name."""
        return f"{model_stem(self.finetune_radio.isChecked())}-{run_dir.name[:15]}.safetensors"

    def request(self, data: list[str] | None = None, run_dir: Path | None = None) -> TrainConfig:
        """The ``mlcnn train`` run the panel's controls describe (``data``: the manifests)."""
        run_dir = run_dir or self.runs_dir / "<run>"
        finetune = self.finetune_radio.isChecked()
        paper = self.recipe_combo.currentText() == "paper"
        return TrainConfig(
            data=data or [str(run_dir / f"confirmed-{i}.jsonl") for i in range(max(1, len(self.sources)))],
            out=str(run_dir / self.model_file_name(run_dir)),
            events="-",
            init=self.current_model if finetune else None,
            arch="compact" if finetune else self.arch_combo.currentText(),
            recipe=self.recipe_combo.currentText(),
            epochs=0 if self._teach_new_only() else (self.epochs_spin.value() or None),
            batch_size=self.batch_spin.value() or None,
            lr=self.lr_spin.value() or None,
            lr_max=(self.lr_max_spin.value() or None) if paper else None,
            val_fraction=round(self.val_spin.value(), 4),
            device=self.device_combo.currentText(),
            time_budget_min=self.time_spin.value() or None,
            anchor=None if self._teach_new_only() or not finetune else self.keep_combo.currentData(),
        )

    def _on_new_only_toggled(self) -> None:
        self._set_running(self.trainer.is_running())
        self._show_command()

    def _on_other_libraries_changed(self) -> None:
        self.refresh_data()
        self._show_keep_note()

    def _on_keep_changed(self) -> None:
        self._show_keep_note()
        self._show_command()

    def _show_keep_note(self) -> None:
        """Learning a new style without the pull back forgets the old one unless images of it are
        trained on too: say so while no other library is ticked."""
        weak = self.keep_combo.currentData() is not None
        replaying = bool(self._checked_other_items())
        self.keep_note.setVisible(weak and not replaying and self.keep_combo.isEnabled())

    def _teach_new_only(self) -> bool:
        return self.new_only_check.isEnabled() and self.new_only_check.isChecked()

    def _show_command(self) -> None:
        if not self.trainer.is_running():
            self.command_label.setText(self.request().command_line())
        self._warn_about_rate()

    def _warn_about_rate(self) -> None:
        """A fine-tune pulls the weights toward the current model's by rate × anchor per step (capped
        at a full return): at or past the cap the old weights never move and only new labels learn."""
        fine_tune = self.finetune_radio.isChecked() and not self._teach_new_only()
        chosen = self.keep_combo.currentData()
        anchor = float(self._recipe.anchor if chosen is None else chosen) if fine_tune else 0.0
        rate = self.lr_spin.value()
        if anchor > 0 and rate > 0 and rate * anchor >= 1.0:
            self.rate_warning.setText(
                f"At a rate of {rate:.2g} the pull toward the current model (anchor {anchor:g}) returns its "
                f"weights after every step: only new labels will learn. Use a rate below {1 / anchor:.2g}."
            )
            self.rate_warning.show()
        else:
            self.rate_warning.hide()

    # ------------------------------------------------------------------ running

    def _set_running(self, running: bool) -> None:
        can_start = (
            not running
            and not self.evaluator.is_running()
            and self.n_train > 0
            and (self.scratch_radio.isChecked() or self.current_model is not None)
        )
        self.start_button.setEnabled(can_start)
        self.cancel_button.setEnabled(running)
        for widget in (
            self.finetune_radio,
            self.scratch_radio,
            self.recipe_combo,
            self.epochs_spin,
            self.batch_spin,
            self.lr_spin,
            self.val_spin,
            self.device_combo,
            self.time_spin,
            self.refresh_button,
            self.other_list,
        ):
            widget.setEnabled(not running)
        self.arch_combo.setEnabled(not running and self.scratch_radio.isChecked())
        self.lr_max_spin.setEnabled(not running and self.recipe_combo.currentText() == "paper")
        self.new_only_check.setEnabled(not running and self.finetune_radio.isChecked() and bool(self._new_labels()))
        self.keep_combo.setEnabled(not running and self.finetune_radio.isChecked())
        if self._teach_new_only():  # nothing is trained: the training options do not apply
            for widget in (self.epochs_spin, self.batch_spin, self.lr_spin, self.lr_max_spin, self.time_spin,
                           self.keep_combo):
                widget.setEnabled(False)
        self._show_keep_note()

    def start_training(self) -> bool:
        """Write the confirmed images as manifests in a new run folder and start ``mlcnn train``."""
        if self.trainer.is_running() or self.evaluator.is_running():
            return False
        self.refresh_data()
        if self.n_train == 0:
            self._fail_message("Nothing to train on: no confirmed images outside the held-out part.")
            return False
        if self.finetune_radio.isChecked() and not self.current_model:
            self._fail_message("No current model to fine-tune: load one, or train from scratch.")
            return False
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")
        self._run_dir = self.runs_dir / stamp
        manifests = []
        for i, source in enumerate(self.sources):
            if source.images:
                path = self._run_dir / f"confirmed-{i}.jsonl"
                write_manifest(path, source.images)
                manifests.append(str(path))
        req = self.request(manifests, self._run_dir)
        self._promised_labels = self._new_labels() if req.init else []
        self.missing_labels = []
        self._val_fraction = req.val_fraction
        self._train_config = req
        self.new_model = None
        self.last_error = self.last_stderr = ""
        self._start_event = {}
        self.verdict = None
        self._offer_new_model()
        self.label_warning.hide()
        self.comparison.set_results(None, {"single_pass": {}})
        self.overall_label.clear()
        self.result_summary.setText("Training…")
        self.curves.clear(req.epochs or 1)
        self.progress_bar.setRange(0, 0)
        self.status_label.setText("Starting the trainer…")
        self.command_label.setText(req.command_line())
        self.log.clear()
        self.trainer.start(req)
        self._set_running(True)
        self.trainingStarted.emit()
        return True

    def cancel_training(self) -> None:
        if self.trainer.is_running():
            self.status_label.setText("Cancelling after the current step…")
            self.trainer.cancel()

    def _on_started(self, event: dict) -> None:
        self._start_event = event
        self.curves.clear(int(event.get("epochs", 1)))
        self.progress_bar.setRange(0, max(1, int(event.get("epochs", 1)) * int(event.get("steps_per_epoch", 1))))
        if int(event.get("epochs", 1)) == 0:
            self.status_label.setText(f"Fitting the new labels on {event.get('train_images')} images, "
                                      f"device {event.get('device')}")
        else:
            self.status_label.setText(
                f"Training on {event.get('train_images')} images, {event.get('epochs')} epochs, "
                f"device {event.get('device')}"
            )

    def _on_progress(self, event: dict) -> None:
        self.progress_bar.setRange(0, max(1, int(event.get("total_steps", 1))))
        self.progress_bar.setValue(int(event.get("step", 0)))
        self.status_label.setText(
            f"Epoch {event.get('epoch')}/{event.get('epochs')} · step {event.get('step')}/{event.get('total_steps')} · "
            f"{event.get('images_per_s', 0):.1f} images/s · loss {event.get('loss', float('nan')):.4f} · "
            f"ETA {_format_duration(float(event.get('eta_s', 0)))}"
        )
        self.curves.add_step(event)

    def _on_epoch(self, event: dict) -> None:
        self.curves.add_epoch(event)

    def _on_done(self, event: dict) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        try:
            kept = self.registry.keep(event["model"], stem=model_stem(bool(self._train_config.init)))
        except (OSError, ValueError) as e:
            self._on_failed(f"The trained model could not be kept: {e}", "")
            return
        self.new_model = str(kept.path)
        checkpoint_dir = Path(event.get("checkpoint") or "").parent
        if checkpoint_dir.name.endswith(".ckpt"):  # only a cancelled run needs its checkpoint to resume
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        self.kept_models.refresh()
        self.kept_models.set_active(self.current_model)
        self._done_text = f"Done in {_format_duration(float(event.get('seconds', 0)))}: {kept.path.name}"
        self.status_label.setText(self._done_text)
        self.log.appendPlainText(f"Model kept as {kept.path}")
        self._check_promised_labels(kept.path)
        self._offer_new_model()
        self._set_running(False)
        self.trainingEnded.emit("done")
        self._compare()

    def _check_promised_labels(self, model: Path) -> None:
        """Every label the Data tab promised as "will be added" must be in the new model: say so if not."""
        try:
            labels = set(read_card(model)["labels"])
        except ValueError as e:
            labels = set()
            self.log.appendPlainText(str(e))
        self.missing_labels = [label for label in self._promised_labels if label not in labels]
        if self.missing_labels:
            text = (
                f"The new model lacks the new label{'s' if len(self.missing_labels) > 1 else ''} "
                f"{', '.join(self.missing_labels)}: none of its images were trained on (the log says why). "
                "Confirm more images with it and train again."
            )
            self.label_warning.setText(text)
            self.label_warning.show()
            self.log.appendPlainText("Warning: " + text)
        else:
            self.label_warning.hide()

    def _on_cancelled(self, event: dict) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        model, checkpoint = event.get("model"), event.get("checkpoint")
        text = "Cancelled."
        if model:
            text += f" The model so far is in {model}"
        if checkpoint:
            text += f"; checkpoint {checkpoint} (mlcnn train … --resume continues it)."
        self.status_label.setText("Cancelled")
        self.result_summary.setText(text)
        self.log.appendPlainText(text)
        self._set_running(False)
        self.trainingEnded.emit("cancelled")

    def _on_failed(self, message: str, stderr_tail: str) -> None:
        self.last_error, self.last_stderr = message, stderr_tail
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label.setText("Training failed")
        self.result_summary.setText(f"<span style='color:{WORSE.name()}'>Training failed: {message}</span>")
        if stderr_tail:
            self.log.appendPlainText("--- trainer error output ---\n" + stderr_tail)
        self._set_running(False)
        self.trainingEnded.emit("failed")

    def _fail_message(self, message: str) -> None:
        self.last_error = message
        self.result_summary.setText(message)
        self.status_label.setText(message)

    # ------------------------------------------------------------------ comparison and switching

    def _compare(self) -> None:
        if self.new_model is None or self._run_dir is None:
            return
        held_out = int(self._start_event.get("val_images", self.n_held_out))
        if held_out == 0:
            self.result_summary.setText(
                "No held-out images to compare on: confirm more images or hold out a larger "
                "part. The new model is kept and can be used."
            )
            self.comparisonReady.emit()
            return
        models = ([self.current_model] if self.current_model else []) + [self.new_model]
        self._compared_current = self.current_model
        self.result_summary.setText(f"Comparing on {held_out} held-out images…")
        self.evaluator.start(
            models, self._train_config.data, self._val_fraction, self._run_dir, device=self._train_config.device
        )
        self._set_running(False)

    def _on_compare_progress(self, done: int, total: int, model: str) -> None:
        which = "the current model" if model == self._compared_current else "the new model"
        held_out = int(self._start_event.get("val_images", self.n_held_out))
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.status_label.setText(
            f"Comparing on {held_out} held-out images: reading them with {which} ({done + 1} of {total})…"
        )

    def _on_compared(self, results: dict) -> None:
        self._end_compare_progress()
        new = results.get(self.new_model)
        current = results.get(self._compared_current) if self._compared_current else None
        self._set_running(False)
        if new is None:
            return
        self.comparison.set_results(current, new)
        self.comparison_view.sortByColumn(ComparisonModel.DELTA_COLUMN, Qt.SortOrder.DescendingOrder)
        self.tabs_right.setCurrentIndex(0)
        rows = []
        for r in self.comparison.overall:
            old, value = r["current"], r["new"]
            delta = ""
            if old is not None and value is not None and math.isfinite(old) and math.isfinite(value):
                color = BETTER if value > old + 1e-9 else WORSE if value < old - 1e-9 else QColor(90, 90, 90)
                delta = f" <span style='color:{color.name()}'>({value - old:+.3f})</span>"
            old_text = f"{old:.3f}" if old is not None and math.isfinite(old) else "—"
            new_text = f"{value:.3f}" if value is not None and math.isfinite(value) else "—"
            rows.append(
                f"<tr><td>{r['metric']}</td><td align=right>{old_text}</td>"
                f"<td align=right><b>{new_text}</b>{delta}</td></tr>"
            )
        self.overall_label.setText(
            "<table cellspacing=6><tr><th></th><th>current</th><th>new</th></tr>" + "".join(rows) + "</table>"
        )
        better, worse = self.comparison.changed()
        added = [r["label"] for r in self.comparison.rows if r["is_new"]]
        images = int(new.get("images", 0))
        summary = f"On {images} held-out images: {len(better)} labels better, {len(worse)} worse"
        if added:
            summary += f", new: {', '.join(added)}"
        if current is None:
            summary = f"On {images} held-out images (no current model to compare with)"
        elif added:
            summary += " (the current model's overall numbers count only the labels it knows)"
        summary += "."
        curve = self.curves.accuracy[-1][1] if self.curves.accuracy else None
        final = new["single_pass"].get("accuracy")
        if curve is not None and final is not None and abs(curve - final) > 5e-4:
            summary += (
                f" The curve's last held-out accuracy ({curve:.3f}) cuts the scores where it suits those same "
                f"images best; {final:.3f} is the new model read with its own threshold, as it will be used."
            )
        verdict = accuracy_verdict(
            (current or {}).get("single_pass", {}).get("accuracy"), new["single_pass"].get("accuracy"), images
        )
        self.verdict = verdict
        if verdict is not None:
            color = WORSE if verdict.worse else BETTER if "is better" in verdict.text else QColor(90, 90, 90)
            summary = f"<b style='color:{color.name()}'>{verdict.text}</b><br>{summary}"
        self.result_summary.setText(summary)
        self._offer_new_model()
        self.comparisonReady.emit()

    def _offer_new_model(self) -> None:
        """"Use the new model" as the comparison warrants: "anyway" when it scored worse, never for the
        model already in use."""
        in_use = self.new_model is not None and self.new_model == self.current_model
        worse = self.verdict is not None and self.verdict.worse
        self.activate_button.setEnabled(self.new_model is not None and not in_use)
        self.activate_button.setText(
            "The new model is in use" if in_use else "Use the new model anyway" if worse else "Use the new model"
        )
        self.activate_button.setToolTip(
            "It scored worse than the current model on the held-out images" if worse and not in_use else ""
        )

    def _end_compare_progress(self) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self.status_label.setText(self._done_text)

    def _on_compare_failed(self, message: str, stderr_tail: str) -> None:
        self._end_compare_progress()
        self.last_error, self.last_stderr = message, stderr_tail
        self.result_summary.setText(f"<span style='color:{WORSE.name()}'>{message}</span>")
        if stderr_tail:
            self.log.appendPlainText(stderr_tail)
        self._set_running(False)
        self.comparisonReady.emit()

    def activate_new_model(self) -> None:
        if self.new_model:
            self.activateModelRequested.emit(self.new_model)
            self.activate_button.setEnabled(False)  # until the main window reports the switch, or back

    def _use_selected_kept_model(self) -> None:
        rows = self.kept_view.selectionModel().selectedRows()
        model = self.kept_models.model_at(rows[0].row()) if rows else None
        if model is not None:
            self.activateModelRequested.emit(str(model.path))
