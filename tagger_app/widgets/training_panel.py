"""The training panel: fine-tune the model on the person's confirmed images, compare, switch.

The panel shows what training would use (confirmed images, label counts, labels with too few
examples, labels the current model lacks), runs ``mlcnn train`` as a subprocess (the same command a
person would type; the panel only sets options on it), draws its progress, then compares the new
model with the current one on the held-out confirmed images (``mlcnn evaluate``) and offers to make
it the active model. Kept models live in the user data folder; any of them can be made active again.

It never imports torch and never blocks: every subprocess reports by signal; the libraries are read
(and a run's manifests written) on the library worker, behind the edits asked for before, and the
kept models are moved and listed by a ModelKeeper. Intents go out as signals
(``activateModelRequested``); the main window does the loading.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from PySide6.QtCore import QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mlcnn_core.library import Library
from mlcnn_core.recipes import TrainConfig
from tagger_app.durations import format_duration
from tagger_app.models.model_registry import KeptModel, KeptModelsModel, ModelRegistry
from tagger_app.models.training_tables import (
    FEW,
    MIN_EXAMPLES,
    NEW,
    WORSE,
    ComparisonModel,
    LabelCountsModel,
    Verdict,
    accuracy_verdict,
    comparison_summary,
    overall_table,
)
from tagger_app.training_data import LabelCounts, TrainingSource, count_labels, model_stem, training_runs_dir
from tagger_app.widgets.training_curves import LogView, TrainingCurves
from tagger_app.widgets.training_options import TrainingOptions
from tagger_app.workers.library_worker import LibraryThread, TrainingData, TrainingDataRequest
from tagger_app.workers.model_keeper import ModelKeeper
from tagger_app.workers.predictor_worker import ModelSummary
from tagger_app.workers.trainer_process import EvaluationProcess, TrainerProcess


def _table_view(model, stretch_last: bool) -> QTableView:
    """A compact read-only table: no row numbers, columns as wide as their contents."""
    view = QTableView()
    view.setModel(model)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(22)
    view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    view.horizontalHeader().setStretchLastSection(stretch_last)
    return view


class TrainingPanel(QWidget):
    """Shows the training data, runs and watches the trainer, compares and offers the new model.

    The main window gives it its library thread, calls :meth:`set_library`, :meth:`set_current_model`
    (with the loaded model's summary) and :meth:`shutdown`, and loads the model of
    ``activateModelRequested``. Without a library thread the panel runs one of its own."""

    activateModelRequested = Signal(str)  # path of the model to make active
    trainingEnded = Signal(str)  # "done" | "cancelled" | "failed"
    comparisonReady = Signal()
    dataShown = Signal()  # what training would use was read and is shown

    def __init__(
        self,
        parent: QWidget | None = None,
        registry: ModelRegistry | None = None,
        runs_dir: str | Path | None = None,
        library_thread: LibraryThread | None = None,
    ):
        super().__init__(parent)
        self.registry = registry or ModelRegistry()
        self.runs_dir = Path(runs_dir) if runs_dir is not None else training_runs_dir()
        self._own_library_thread = library_thread is None
        self.library_thread = library_thread or LibraryThread(self)
        self._data_token = 0  # requests for what training would use; only the latest is shown
        self._reading = False  # a refresh's read is on the library worker
        self._read_again = False  # asked for during that read
        self._starting: TrainingDataRequest | None = None  # the click's read: the run starts when it is back
        self._keeping = False  # the finished run's model is being moved into the kept models
        self._done_event: dict = {}
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
        self.label_counts = LabelCountsModel(self)
        self.comparison = ComparisonModel(self)
        self.kept_models = KeptModelsModel(self)
        self.keeper = ModelKeeper(self.registry, self)

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
        self.counts_view = _table_view(self.label_counts, stretch_last=True)
        self.counts_view.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        layout.addWidget(self.counts_view, 1)
        layout.addWidget(QLabel("Also train on confirmed images of:"))
        self.other_list = QListWidget()
        self.other_list.setMaximumHeight(80)
        layout.addWidget(self.other_list)
        self.refresh_button = QPushButton("Refresh")
        layout.addWidget(self.refresh_button)
        tabs.addTab(data, "Data")

        self.options = TrainingOptions()
        tabs.addTab(self.options, "Options")
        self.tabs_left = tabs
        return tabs

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
        # one line that scrolls: a wrapping label changed height with the command and laid out the dock again
        self.command_label = QLineEdit()
        self.command_label.setReadOnly(True)
        self.command_label.setFrame(False)
        self.command_label.setToolTip("The command this run is (select and copy it to run it in a terminal)")
        self.command_label.setStyleSheet("color: gray; font-family: monospace; background: transparent;")
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
        self.comparison_view = _table_view(self.comparison_proxy, stretch_last=False)
        self.comparison_view.setSortingEnabled(True)
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
        self.kept_view = _table_view(self.kept_models, stretch_last=True)
        self.kept_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.kept_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
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
        self.other_list.itemChanged.connect(lambda _item: self.refresh_data())
        self.options.modeChanged.connect(self._update_mode)
        self.options.heldOutChanged.connect(lambda _v: self._recount())
        self.options.changed.connect(self._show_command)

        self.trainer.started.connect(self._on_started)
        self.trainer.progress.connect(self._on_progress)
        self.trainer.preparing.connect(self._on_preparing)
        self.trainer.epochEnded.connect(self.curves.add_epoch)
        self.trainer.logLine.connect(self.log.appendPlainText)
        self.trainer.finished.connect(self._on_done)
        self.trainer.cancelled.connect(self._on_cancelled)
        self.trainer.failed.connect(self._on_failed)
        self.evaluator.finished.connect(self._on_compared)
        self.evaluator.progress.connect(self._on_compare_progress)
        self.evaluator.failed.connect(self._on_compare_failed)
        self.library_thread.worker.trainingDataRead.connect(self._on_data_read)
        self.keeper.listed.connect(self._on_models_listed)
        self.keeper.kept.connect(self._on_kept)
        self.keeper.keepFailed.connect(self._on_keep_failed)

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
        self.keeper.list_models()
        self.kept_models.set_active(self.current_model)
        self._update_mode()
        self._recount()
        self._offer_new_model()

    def shutdown(self) -> None:
        """Stop any subprocess (the trainer keeps its checkpoint) and the panel's own threads."""
        if self.trainer.process is not None:
            self.trainer.process.terminate()
            self.trainer.process.waitForFinished(10_000)
        self.evaluator.cancel()
        self.keeper.wait(10_000)
        if self._own_library_thread:
            self.library_thread.stop()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._busy():
            self.refresh_data()
        self.keeper.list_models()

    def _on_models_listed(self, models: list[KeptModel]) -> None:
        self.kept_models.set_models(models)
        self.kept_models.set_active(self.current_model)

    # ------------------------------------------------------------------ what training would use

    def _checked_other_items(self) -> list[QListWidgetItem]:
        """The other libraries ticked under "Also train on confirmed images of"."""
        items = (self.other_list.item(i) for i in range(self.other_list.count()))
        return [item for item in items if item.checkState() == Qt.CheckState.Checked]

    def refresh_data(self) -> None:
        """Read what training would use on the library worker; asked for while a read runs, it is
        read once more after that one."""
        self._data_token += 1
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        self.library_thread.trainingDataRequested.emit(self._data_request())

    def _data_request(self, run_dir: Path | None = None) -> TrainingDataRequest:
        folders = [item.text() for item in self._checked_other_items()]
        return TrainingDataRequest(self.library, folders, self.options.held_out(), self._data_token, run_dir)

    def _on_data_read(self, data: TrainingData) -> None:
        request = data.request
        if request is self._starting:
            self._starting = None
            self._begin_run(data)
            return
        if request.run_dir is not None:  # the read of a start that was cancelled
            return
        self._reading = False
        if self._read_again:
            self._read_again = False
            self.refresh_data()
        if request.token == self._data_token and request.library is self.library:
            self._show_data(data)

    def _show_data(self, data: TrainingData) -> None:
        self.other_list.blockSignals(True)  # a tooltip is an itemChanged too, which would read again
        for i in range(self.other_list.count()):
            item = self.other_list.item(i)
            item.setToolTip("No confirmed images here (or the folder is gone)" if item.text() in data.missing else "")
        self.other_list.blockSignals(False)
        self.sources = data.sources
        same_split = data.request.val_fraction == self.options.held_out()
        self._recount(data.counts if same_split else None)
        if data.error:
            self.last_error = f"Cannot read the confirmed images: {data.error}"
            self.data_summary.setText(self.last_error)
        self.dataShown.emit()

    def _recount(self, counts: LabelCounts | None = None) -> None:
        counts = counts or count_labels(self.sources, self.options.held_out())
        self.n_train, self.n_held_out = counts.n_train, counts.n_held_out
        known = self.current_labels if self.options.finetune() else None
        self.label_counts.set_counts(counts.train, counts.held_out, known)
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
        self._set_running(self._busy())

    def _new_labels(self) -> list[str]:
        return [r[0] for r in self.label_counts.rows if r[3].startswith("new")]

    # ------------------------------------------------------------------ options

    def _update_mode(self) -> None:
        finetune = self.options.finetune()
        self.start_button.setText("Fine-tune" if finetune else "Train from scratch")
        if self.current_model is None and finetune:
            self.options.finetune_radio.setToolTip("No model is loaded: load one (Model menu) or train from scratch")
        self._recount_known_only()
        self._request_defaults()
        self._set_running(self._busy())

    def _recount_known_only(self) -> None:
        if self.label_counts.rows or self.sources:
            train = {r[0]: r[1] for r in self.label_counts.rows}
            held = {r[0]: r[2] for r in self.label_counts.rows}
            self.label_counts.set_counts(train, held, self.current_labels if self.options.finetune() else None)

    def _request_defaults(self) -> None:
        if self.n_train > 0:
            self.options.show_recipe_defaults(self.n_train, self.current_model)
        self._show_command()

    def model_file_name(self, run_dir: Path) -> str:
        """``fine-tuned-<run's UTC time>.safetensors`` (or ``trained-…``): a fine-tune's card takes its
        name from this file's, and the model is kept under the same name."""
        return f"{model_stem(self.options.finetune())}-{run_dir.name[:15]}.safetensors"

    def request(self, data: list[str] | None = None, run_dir: Path | None = None) -> TrainConfig:
        """The ``mlcnn train`` run the panel's options describe (``data``: the manifests)."""
        run_dir = run_dir or self.runs_dir / "<run>"
        data = data or [str(run_dir / f"confirmed-{i}.jsonl") for i in range(max(1, len(self.sources)))]
        return self.options.config(data, str(run_dir / self.model_file_name(run_dir)), self.current_model)

    def _show_command(self) -> None:
        if not self._busy():
            self.command_label.setText(self.request().command_line())
            self.command_label.setCursorPosition(0)

    # ------------------------------------------------------------------ running

    def _busy(self) -> bool:
        """A run is starting (its data being read), running, or its model being kept."""
        return self._starting is not None or self.trainer.is_running() or self._keeping

    def _set_running(self, running: bool) -> None:
        can_start = (
            not running
            and not self.evaluator.is_running()
            and self.n_train > 0
            and (not self.options.finetune() or self.current_model is not None)
        )
        self.start_button.setEnabled(can_start)
        self.cancel_button.setEnabled(running)
        self.refresh_button.setEnabled(not running)
        self.other_list.setEnabled(not running)
        self.options.set_state(running, bool(self._new_labels()), bool(self._checked_other_items()))

    def start_training(self) -> bool:
        """Read the confirmed images as they are now (on the library worker, behind every edit made
        before the click), write them as manifests in a new run folder and start ``mlcnn train``
        once they are back. False if a run is on or no model is loaded to fine-tune."""
        if self._busy() or self.evaluator.is_running():
            return False
        if self.options.finetune() and not self.current_model:
            self._fail_message("No current model to fine-tune: load one, or train from scratch.")
            return False
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")
        self._data_token += 1
        self._starting = request = self._data_request(self.runs_dir / stamp)
        self.status_label.setText("Reading the confirmed images…")
        self._set_running(True)
        # asked once the panel has been laid out and painted: the worker's read would take turns with it
        QTimer.singleShot(0, self, lambda: self.library_thread.trainingDataRequested.emit(request))
        return True

    def _begin_run(self, data: TrainingData) -> None:
        """The click's data is back: show it, and start the run on it."""
        request = data.request
        if request.library is not self.library:
            return self._start_failed("Another folder was opened: look at its data and start again.")
        self._show_data(data)
        if data.error:
            return self._start_failed(self.last_error)
        if data.counts.n_train == 0:
            return self._start_failed("Nothing to train on: no confirmed images outside the held-out part.")
        if self.options.finetune() and not self.current_model:
            return self._start_failed("No current model to fine-tune: load one, or train from scratch.")
        self._run_dir = request.run_dir
        req = self.request(data.manifests, self._run_dir)
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
        self.command_label.setCursorPosition(0)
        self.log.clear()
        self.trainer.start(req)
        self._set_running(True)

    def _start_failed(self, message: str) -> None:
        self._fail_message(message)
        self._set_running(False)
        self.trainingEnded.emit("failed")

    def cancel_training(self) -> None:
        if self._starting is not None:  # its data is still being read: it never starts
            self._starting = None
            self.status_label.setText("Cancelled")
            self._set_running(False)
            self.trainingEnded.emit("cancelled")
        elif self.trainer.is_running():
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

    def _on_preparing(self, event: dict) -> None:
        """A fine-tune of the head first reads the confirmed images through the frozen part of the network."""
        self.status_label.setText(
            f"Reading the images through the frozen part of the network: {event.get('images_done')}/"
            f"{event.get('images')} · ETA {format_duration(float(event.get('eta_s', 0)))}"
        )

    def _on_progress(self, event: dict) -> None:
        self.progress_bar.setRange(0, max(1, int(event.get("total_steps", 1))))
        self.progress_bar.setValue(int(event.get("step", 0)))
        self.status_label.setText(
            f"Epoch {event.get('epoch')}/{event.get('epochs')} · step {event.get('step')}/{event.get('total_steps')} · "
            f"{event.get('images_per_s', 0):.1f} images/s · loss {event.get('loss', float('nan')):.4f} · "
            f"ETA {format_duration(float(event.get('eta_s', 0)))}"
        )
        self.curves.add_step(event)

    def _on_done(self, event: dict) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self._done_event = event
        self._keeping = True
        self.status_label.setText("Keeping the new model…")
        self.keeper.keep(event["model"], model_stem(bool(self._train_config.init)), event.get("checkpoint") or "")

    def _on_kept(self, kept: KeptModel) -> None:
        self._keeping = False
        event = self._done_event
        self.new_model = str(kept.path)
        self.keeper.list_models()
        self._done_text = f"Done in {format_duration(float(event.get('seconds', 0)))}: {kept.path.name}"
        self.status_label.setText(self._done_text)
        self.log.appendPlainText(f"Model kept as {kept.path}")
        self._check_promised_labels(set(kept.labels))
        self._offer_new_model()
        self._set_running(False)
        self.trainingEnded.emit("done")
        self._compare()

    def _on_keep_failed(self, message: str) -> None:
        self._on_failed(f"The trained model could not be kept: {message}", "")

    def _check_promised_labels(self, labels: set[str]) -> None:
        """Every label the Data tab promised as "will be added" must be in the new model (whose card
        has ``labels``): say so if not."""
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
        self._keeping = False
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
        self.overall_label.setText(overall_table(self.comparison.overall))
        curve = self.curves.accuracy[-1][1] if self.curves.accuracy else None
        self.verdict = accuracy_verdict(
            (current or {}).get("single_pass", {}).get("accuracy"), new["single_pass"].get("accuracy"),
            int(new.get("images", 0)),
        )
        summary = comparison_summary(self.comparison, current is not None, new, curve, self.verdict)
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
