"""The main window: builds the parts and wires their signals. It computes nothing itself.

Threads: the GUI thread shows and edits (a person's edit is shown at once, and stored by the library
thread, in the order made) and never reads the library itself; the library thread opens folders,
stores edits, reads the shown image's tags and what training would use, and writes sidecars; the
predictor thread talks to the prediction process, which owns the model (torch is imported there,
never in the app); thread pools decode thumbnails and the viewed image. Each thread closes its own
connection to a library that another folder replaced.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QImage, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QWidget,
)

from mlcnn_core.library import ImageRecord, Library, TagRecord
from tagger_app.durations import format_duration
from tagger_app.edit_commands import EditJob, TagEditCommand, folder_tag_edit, image_edit
from tagger_app.models.image_list_model import ImageListModel
from tagger_app.models.tag_models import with_all_confirmed, with_decision, with_renamed
from tagger_app.settings import AppSettings
from tagger_app.widgets.gallery import GalleryPanel
from tagger_app.widgets.info_dialogs import ShortcutsDialog, TextDialog, format_model_card
from tagger_app.widgets.settings_dialog import SidecarSettingsDialog
from tagger_app.widgets.tag_panel import FolderTagsPanel, TagPanel
from tagger_app.widgets.tag_rules_dialog import TagRulesDialog
from tagger_app.widgets.viewer import ViewerPanel
from tagger_app.workers.image_loader import FullImageLoader, ThumbnailLoader
from tagger_app.workers.library_worker import (
    EditResult,
    ExternalChanges,
    FolderTagCounts,
    ImageTags,
    ImageTagsRequest,
    LibraryThread,
    OpenedFolder,
    OpenRequest,
    SidecarReport,
    SidecarRequest,
)
from tagger_app.workers.predictor_worker import ModelSummary, PredictionJob, PredictionResult, PredictorThread
from tagger_app.workers.tag_list_loader import TagListLoader
from tagger_app.workers.thumbnail_cache import ThumbnailDiskCache

MAPS_CACHE_SIZE = 64
# An image shown this long is being looked at: only then is it predicted (and its proposals stored),
# so paging through the grid does not queue and store a prediction for every image passed.
PREDICT_AFTER_MS = 200
NO_MODEL_TEXT = "No model loaded (Model ▸ Open model…)"
NO_FOLDER_TEXT = "Open a folder of images (File ▸ Open folder…, Ctrl+O) or drop one here"


class MainWindow(QMainWindow):
    folderOpened = Signal(str)  # root
    folderFailed = Signal(str)  # message
    modelReady = Signal(object)  # ModelSummary
    modelFailed = Signal(str)
    predictionShown = Signal(int)  # image id whose result arrived
    batchFinished = Signal(int, int, bool)  # done, total, cancelled
    sidecarsWritten = Signal(object)  # SidecarReport, one per batch of a request (its last: .last)
    editStored = Signal(object)  # EditResult: an edit (or its undo) was stored, or failed

    def __init__(self, settings: AppSettings | None = None, load_default_model: bool = True):
        super().__init__()
        self.settings = settings or AppSettings()
        self.setWindowTitle("MLCNN Tagger")
        self.setAcceptDrops(True)
        self.resize(1400, 900)

        self.library: Library | None = None
        self.model: ModelSummary | None = None
        self.current_id = -1
        self.failed_sidecars: dict[int, str] = {}
        self.last_error = ""
        self.error_dialogs = True
        self._maps: OrderedDict[int, PredictionResult] = OrderedDict()
        self._opening: str | None = None
        self._counting_folder_tags = False  # a count is on the library worker
        self._count_folder_tags_again = False  # a refresh was asked for during that count
        self.edits_pending = 0  # edits (and undos) sent to the library worker and not yet stored
        self._tag_reads = 0  # the shown image's tags asked of the library worker: only the latest is shown
        self.tag_read_pending = False  # the latest of them has not come back yet

        self.thumbnails = ThumbnailLoader(parent=self, disk=ThumbnailDiskCache())
        self.image_loader = FullImageLoader(parent=self)
        self.images = ImageListModel(self.thumbnails, self)
        self.gallery = GalleryPanel(self.images)
        self.gallery.view.set_placeholder(NO_FOLDER_TEXT)
        self.viewer = ViewerPanel()
        self.viewer.opacity.setValue(self.settings.overlay_opacity)
        self.tag_panel = TagPanel()
        self.folder_tags = FolderTagsPanel()
        self.undo_stack = QUndoStack(self)
        self.predictor = PredictorThread(self)
        self.predictor.worker.set_rules(self.settings.tag_rules)
        self.library_thread = LibraryThread(self)
        self.tag_list: list[str] = []  # an autocomplete tag list's tags (Tag ▸ Autocomplete from a tag list)
        self.tag_list_loader = TagListLoader(self)

        self._build_layout()
        self._build_status_bar()
        self._build_menus()
        self._connect()

        self._folder_tags_timer = QTimer(self)
        self._folder_tags_timer.setSingleShot(True)
        self._folder_tags_timer.setInterval(600)
        self._folder_tags_timer.timeout.connect(self.refresh_folder_tags)
        self._predict_timer = QTimer(self)
        self._predict_timer.setSingleShot(True)
        self._predict_timer.setInterval(PREDICT_AFTER_MS)
        self._predict_timer.timeout.connect(self._predict_current)

        if self.settings.tag_list_path:
            self.tag_list_loader.load(self.settings.tag_list_path)
        if load_default_model:
            self.load_default_model()

    # ------------------------------------------------------------------------------- building

    def _build_layout(self) -> None:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.gallery)
        splitter.addWidget(self.viewer)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([520, 880])
        self.setCentralWidget(splitter)

        self.tags_dock = self._dock("Tags", self.tag_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.folder_tags_dock = self._dock("Folder tags", self.folder_tags, Qt.DockWidgetArea.RightDockWidgetArea)
        # The training panel (widgets/training_panel.py, with its trainer process in workers/) is built
        # the first time its dock is shown, so start-up never pays for it.
        self.training_panel = None
        self.training_dock = self._dock("Training", QWidget(), Qt.DockWidgetArea.BottomDockWidgetArea)
        # its own window (it can be docked back): docked at the bottom it squeezed the grid to 1.5 rows
        self.training_dock.setFloating(True)
        self.training_dock.resize(1300, 620)
        self.training_dock.hide()
        self.training_dock.visibilityChanged.connect(lambda visible: visible and self.ensure_training_panel())

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.replace(" ", "_").lower() + "_dock")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def ensure_training_panel(self):
        """Create the training panel (once) and give it the folder and the model."""
        if self.training_panel is None:
            from tagger_app.widgets.training_panel import TrainingPanel

            self.training_panel = TrainingPanel(self, library_thread=self.library_thread)
            self.training_panel.activateModelRequested.connect(self.load_model)
            self.training_dock.setWidget(self.training_panel)
            self._update_training_panel()
        return self.training_panel

    def _update_training_panel(self) -> None:
        if self.training_panel is not None:
            self.training_panel.set_library(self.library, self.settings.recent_folders)
            self.training_panel.set_current_model(self.model)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.counts_label = QLabel()
        self.model_label = QLabel(NO_MODEL_TEXT)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.eta_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop tagging (Esc)")
        for widget in (self.progress, self.eta_label, self.cancel_button):
            widget.setVisible(False)
        bar.addPermanentWidget(self.counts_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.eta_label)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.model_label)

    def _action(self, menu, text: str, slot: Callable, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(k) for k in keys])
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        self.addAction(action)  # shortcuts work whichever panel has focus
        self.shortcut_actions.append(action)
        return action

    def _build_menus(self) -> None:
        self.shortcut_actions: list[QAction] = []
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self._action(file_menu, "&Open folder…", self.choose_folder, QKeySequence.StandardKey.Open)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self._rebuild_recent_menu()
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        edit_menu = menu.addMenu("&Edit")
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcuts(QKeySequence.StandardKey.Undo)
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for action in (undo, redo):
            edit_menu.addAction(action)
            self.shortcut_actions.append(action)
        edit_menu.addSeparator()
        self._action(edit_menu, "&Confirm selected tag", self.tag_panel.confirm_selected, "C")
        self._action(edit_menu, "Re&ject selected tag", self.tag_panel.reject_selected, ["X", "Delete"])
        self._action(edit_menu, "Confirm &all tags of this image", self.confirm_all, ["Ctrl+Return", "Y"])
        self._action(edit_menu, "Add a &tag…", self.tag_panel.focus_add_field, "T")
        edit_menu.addSeparator()
        self._action(edit_menu, "Add a tag to the &selected images…", self.add_tag_to_selection, "Ctrl+Shift+T")
        self._action(edit_menu, "Re&move a tag from the selected images…", self.remove_tag_from_selection)
        self._action(edit_menu, "&Find and replace in the selected images' tags…", self.replace_in_selection,
                     "Ctrl+H")
        self._action(edit_menu, "Move the selected tag to the &front", self.move_tag_to_front,
                     tip="It leads the .txt captions of the selected images (kohya's --keep_tokens)")
        edit_menu.addSeparator()
        self._action(edit_menu, "Re&name a tag across the folder…", self._rename_selected_folder_tag)
        self._action(edit_menu, "&Delete a tag from the folder…", self._delete_selected_folder_tag)

        view_menu = menu.addMenu("&View")
        self._action(view_menu, "&Next image", lambda: self.gallery.step(1), ["J", "Ctrl+Right"])
        self._action(view_menu, "&Previous image", lambda: self.gallery.step(-1), ["K", "Ctrl+Left"])
        self._action(view_menu, "Next &unreviewed image", self.gallery.next_unreviewed, "N")
        view_menu.addSeparator()
        self._action(view_menu, "Selected tag's &map", self.viewer.show_tag_map, "M")
        self._action(view_menu, "&Winner map overlay", self.viewer.show_winner_map, "W")
        self._action(view_menu, "Next ta&g's map", lambda: self.cycle_tag_map(1), "L")
        self._action(view_menu, "Previous tag's map", lambda: self.cycle_tag_map(-1), "Shift+L")
        self._action(view_menu, "Overlay &off", self.viewer.hide_overlay, "O")
        self._action(view_menu, "&Fit image", self.viewer.view.fit, "F")
        self._action(view_menu, "Zoom &in", lambda: self.viewer.view.zoom(1.25), QKeySequence.StandardKey.ZoomIn)
        self._action(view_menu, "Zoom ou&t", lambda: self.viewer.view.zoom(0.8), QKeySequence.StandardKey.ZoomOut)
        self._action(view_menu, "Filter &tags", self.gallery.tag_filter.setFocus, "Ctrl+F")
        view_menu.addSeparator()
        for dock in (self.tags_dock, self.folder_tags_dock, self.training_dock):
            view_menu.addAction(dock.toggleViewAction())

        tag_menu = menu.addMenu("&Tag")
        self._action(tag_menu, "Tag &selected images", self.tag_selected, "Ctrl+P")
        self._action(tag_menu, "Tag &untagged images", self.tag_untagged, "Ctrl+Shift+P")
        self._action(tag_menu, "Tag &all images", self.tag_all, "Ctrl+Alt+P")
        self._action(tag_menu, "&Cancel tagging", self.cancel_tagging, "Esc")
        tag_menu.addSeparator()
        self._action(tag_menu, "&Rules…", self.edit_tag_rules,
                     tip="Threshold, excluded tags, maximum count, caption prefix, underscores or spaces")
        self._action(tag_menu, "Autocomplete from a tag &list…", self.choose_tag_list,
                     tip="A booru tag CSV (a1111 tag autocomplete's danbooru.csv) or one tag per line")
        self._action(tag_menu, "No autocomplete tag list", lambda: self.use_tag_list(""))

        model_menu = menu.addMenu("&Model")
        self._action(model_menu, "&Open model…", self.choose_model, "Ctrl+M")
        self._action(model_menu, "Model &card…", self.show_model_card)
        self._action(model_menu, "&Unload model", self.unload_model)
        self._action(model_menu, "Use the &starter model", self.load_starter_model)

        sidecar_menu = menu.addMenu("&Sidecars")
        self._action(sidecar_menu, "&Settings…", self.edit_sidecar_settings)
        self._action(sidecar_menu, "Write sidecars for this &image", self.write_current_sidecar, "Ctrl+S")
        self._action(
            sidecar_menu, "Write &predicted tags for all predicted images…", self._confirm_write_predicted_sidecars
        )
        self.retry_action = self._action(sidecar_menu, "&Retry failed writes", self.retry_failed_sidecars)
        self.retry_action.setEnabled(False)

        training_menu = menu.addMenu("T&raining")
        self._action(training_menu, "Show &training panel", self._show_training)

        help_menu = menu.addMenu("&Help")
        self._action(help_menu, "&Keyboard shortcuts", self.show_shortcuts, QKeySequence.StandardKey.HelpContents)
        self._action(help_menu, "&About", self._about)

    def _connect(self) -> None:
        worker = self.predictor.worker
        worker.modelLoaded.connect(self._on_model_loaded)
        worker.modelFailed.connect(self._on_model_failed)
        worker.modelUnloaded.connect(self._on_model_unloaded)
        worker.predicted.connect(self._on_predicted)
        worker.imageFailed.connect(self._on_image_failed)
        worker.progress.connect(self._on_progress)
        worker.batchFinished.connect(self._on_batch_finished)
        worker.processCrashed.connect(self._on_prediction_process_crashed)
        lib_worker = self.library_thread.worker
        lib_worker.opened.connect(self._on_folder_opened)
        lib_worker.openFailed.connect(self._on_folder_failed)
        lib_worker.sidecarsDone.connect(self._on_sidecars_done)
        lib_worker.externalChanges.connect(self._on_external_changes)
        lib_worker.folderTagsCounted.connect(self._on_folder_tags_counted)
        lib_worker.edited.connect(self._on_edit_stored)
        lib_worker.imageTagsRead.connect(self._on_image_tags_read)
        self.gallery.currentImageChanged.connect(self.show_image)
        self.image_loader.loaded.connect(self._on_image_decoded)
        self.tag_panel.confirmRequested.connect(self.confirm_tag)
        self.tag_panel.rejectRequested.connect(self.reject_tag)
        self.tag_panel.removeRequested.connect(self.remove_tag)
        self.tag_panel.addRequested.connect(self.add_tag)
        self.tag_panel.confirmAllRequested.connect(self.confirm_all)
        self.tag_panel.tagSelected.connect(self.viewer.set_selected_tag)
        self.tag_panel.tagClicked.connect(self.viewer.show_label)
        self.tag_panel.model.modelReset.connect(
            lambda: self.viewer.set_image_tags(self.tag_panel.model.positive_tags())
        )
        self.folder_tags.filterRequested.connect(self.gallery.set_tag_filter)
        self.folder_tags.renameRequested.connect(self.rename_tag)
        self.folder_tags.deleteRequested.connect(self.delete_tag)
        self.cancel_button.clicked.connect(self.cancel_tagging)
        self.viewer.opacity.valueChanged.connect(lambda v: setattr(self.settings, "overlay_opacity", v))
        self.tag_list_loader.loaded.connect(self._on_tag_list_loaded)
        self.tag_list_loader.failed.connect(self._on_tag_list_failed)

    # ------------------------------------------------------------------------------- folders

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path, import_as_confirmed: bool | None = None) -> None:
        """Open a folder; ``import_as_confirmed`` overrides the setting for its existing sidecars."""
        folder = str(folder)
        if not Path(folder).is_dir():
            self._report(f"{folder} is not a folder", error=True)
            self.folderFailed.emit(f"{folder} is not a folder")
            return
        self.cancel_tagging()
        self.predictor.worker.set_library(None)
        self.undo_stack.clear()
        self.thumbnails.reset()
        self._maps.clear()
        self.current_id = -1
        self.images.clear()
        self.viewer.clear()
        self.tag_panel.clear()
        self._opening = folder
        self.statusBar().showMessage(f"Opening {folder}…")
        self.library_thread.openRequested.emit(
            OpenRequest(
                folder,
                self.settings.import_sidecars or bool(import_as_confirmed),
                self.settings.import_as_confirmed if import_as_confirmed is None else import_as_confirmed,
            )
        )

    def _on_folder_opened(self, opened: OpenedFolder) -> None:
        # The threads that used a replaced library close their own connections to it, after their last use.
        if self._opening is None or Path(self._opening).resolve() != opened.library.root:
            return  # a later open superseded this one
        self._opening = None
        self.library = opened.library
        self.predictor.worker.set_library(self.library)
        self.failed_sidecars = dict(opened.failed_sidecars)
        self.retry_action.setEnabled(bool(self.failed_sidecars))
        # tags first, then one model reset: the proxy filters the 10,000 rows once
        self.gallery.proxy.set_tag_sets(
            {i: {t.tag for t in records if t.is_positive} for i, records in opened.tags.items()}
        )
        self.images.set_records(self.library.root, opened.records, self.gallery.sort_key())
        self.refresh_folder_tags()
        self.settings.add_recent_folder(self.library.root)
        self._rebuild_recent_menu()
        self.setWindowTitle(f"{self.library.root.name} — MLCNN Tagger")
        message = f"Opened {self.library.root}: {len(opened.records)} images in {opened.seconds:.2f} s"
        if opened.import_errors:
            message += f"; {len(opened.import_errors)} sidecars could not be read ({opened.import_errors[0]})"
        self.statusBar().showMessage(message, 15000)
        if opened.fallback_reason:
            self._report(opened.fallback_reason, error=False)
        if not opened.records:
            self._report(f"No images (JPEG, PNG, WebP, BMP, TIFF, GIF) in {self.library.root}", error=False)
        self.gallery.view.set_placeholder("No images match the filter" if opened.records else "No images here")
        self.gallery.select_row(0)
        self._update_training_panel()
        self.folderOpened.emit(str(self.library.root))
        self.library_thread.embeddedKeywordsRequested.emit()  # now that the folder is listed

    def _on_folder_failed(self, folder: str, message: str) -> None:
        self._opening = None
        self._report(f"Cannot open {folder}: {message}", error=True)
        previous = self.library
        if previous is not None and Path(folder).resolve() != previous.root:
            self.open_folder(previous.root)  # back to the folder that was open, not an empty grid
        self.folderFailed.emit(message)

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        for folder in self.settings.recent_folders:
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.open_folder(f))
        self.recent_menu.setEnabled(bool(self.settings.recent_folders))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and Path(urls[0].toLocalFile()).is_dir():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            self.open_folder(urls[0].toLocalFile())
            event.acceptProposedAction()

    # ------------------------------------------------------------------------------- the current image

    def show_image(self, image_id: int) -> None:
        self.current_id = image_id
        if image_id < 0 or self.library is None:
            self.viewer.clear()
            self.tag_panel.clear()
            return
        record = self.images.record_by_id(image_id)
        if record is None:
            return
        path = self.library.abspath(record.path)
        self.image_loader.load(image_id, path)
        cached = self._maps.get(image_id)
        if cached is not None:
            self._maps.move_to_end(image_id)
            self.viewer.set_maps(cached.maps, cached.winner, cached.label_names, cached.image_size, image_id)
        else:
            self.viewer.set_maps(None, None, image_id=image_id)
            self._predict_timer.start()
        if self.tag_panel.image_id != image_id:  # no other image's tags while this one's are read
            self.tag_panel.set_image(image_id, record.path, record.status, [])
        self._refresh_tag_panel()

    def _predict_current(self) -> None:
        """The image shown for PREDICT_AFTER_MS jumps the queue; an unreviewed one gets its proposals stored."""
        if self.model is None or self.library is None or self.current_id < 0 or self.current_id in self._maps:
            return
        record = self.images.record_by_id(self.current_id)
        if record is not None:
            job = PredictionJob(self.current_id, self.library.abspath(record.path), store=record.status == "untagged")
            self.predictor.worker.enqueue([job], first=True)

    def _on_image_decoded(self, image_id, image: QImage) -> None:
        if image_id != self.current_id:
            return
        self.viewer.set_image(image)
        if image.isNull():
            self.viewer.hover_label.setText("This file cannot be read as an image")

    def _refresh_tag_panel(self) -> None:
        """Ask the library worker for the shown image's tags; the panel shows them when they come."""
        if self.library is None or self.current_id < 0:
            return
        self._tag_reads += 1
        self.tag_read_pending = True
        self.library_thread.imageTagsRequested.emit(ImageTagsRequest(self.library, self.current_id, self._tag_reads))

    def _on_image_tags_read(self, read: ImageTags) -> None:
        request = read.request
        if request.token != self._tag_reads:
            return  # a later read was asked for
        self.tag_read_pending = False
        if request.library is not self.library or request.image_id != self.current_id:
            return
        if read.record is None:
            self._report(f"Cannot read the tags of image {request.image_id}: {read.error}", error=False)
            return
        self._show_current_tags(read.record, read.tags, read.scores)

    def _show_current_tags(self, record: ImageRecord, tags: list[TagRecord], stored_scores: dict[str, float]) -> None:
        """The shown image's tags as read from the library, with the confidences of the prediction
        this session made for it, or else of the one stored."""
        cached = self._maps.get(self.current_id)
        scores = cached.confidences if cached is not None else stored_scores
        self.tag_panel.set_image(self.current_id, record.path, record.status, tags, scores)

    # ------------------------------------------------------------------------------- prediction

    def _on_predicted(self, result: PredictionResult) -> None:
        if result.library is not self.library:
            return  # made for a folder that is no longer open
        self._maps[result.image_id] = result
        self._maps.move_to_end(result.image_id)
        while len(self._maps) > MAPS_CACHE_SIZE:
            self._maps.popitem(last=False)
        if result.record is not None:
            self.images.update_record(result.record)
            self.gallery.proxy.update_tags(result.image_id, {t.tag for t in result.tags if t.is_positive})
            if not self._folder_tags_timer.isActive():  # at most every 600 ms during a batch
                self._folder_tags_timer.start()
        if result.image_id == self.current_id:
            self.viewer.set_maps(result.maps, result.winner, result.label_names, result.image_size, result.image_id)
            if result.record is not None:
                self._tag_reads += 1  # a read asked for before may predate the stored proposals
                self.tag_read_pending = False
                self.tag_panel.set_image(
                    result.image_id, result.record.path, result.record.status, result.tags, result.confidences
                )
            else:
                self._refresh_tag_panel()
        self.predictionShown.emit(result.image_id)

    def _on_image_failed(self, image_id: int, message: str) -> None:
        record = self.images.record_by_id(image_id)
        name = record.path if record is not None else f"image {image_id}"
        self.statusBar().showMessage(f"Cannot predict {name}: {message}", 10000)

    def _on_prediction_process_crashed(self, message: str, restarts: bool) -> None:
        then = "It starts again with the next image." if restarts else "Open a model from the Model menu to go on."
        self._report(f"Prediction stopped: {message}. {then}", error=True)

    def _tag(self, image_ids: list[int]) -> int:
        if self.library is None or not image_ids:
            return 0
        if self.model is None:
            self._report("No model loaded: open one from the Model menu first.", error=True)
            return 0
        jobs = []
        for image_id in image_ids:
            record = self.images.record_by_id(image_id)
            if record is not None:
                jobs.append(PredictionJob(image_id, self.library.abspath(record.path), store=True, batch=True))
        if not jobs:
            return 0
        self.progress.setRange(0, 0)
        for widget in (self.progress, self.eta_label, self.cancel_button):
            widget.setVisible(True)
        self.eta_label.setText(f"0 / {len(jobs)}")
        self.predictor.worker.enqueue(jobs)
        return len(jobs)

    def tag_selected(self) -> int:
        ids = self.gallery.selected_image_ids() or ([self.current_id] if self.current_id >= 0 else [])
        return self._tag(ids)

    def tag_untagged(self) -> int:
        return self._tag([r.id for r in self.images.records() if r.status == "untagged"])

    def tag_all(self) -> int:
        return self._tag([r.id for r in self.images.records()])

    def cycle_tag_map(self, step: int) -> None:
        """L / Shift+L: select the image's next (previous) tag and show its map."""
        if self.tag_panel.select_relative(step) is not None:
            self.viewer.show_tag_map()

    def cancel_tagging(self) -> None:
        self.predictor.worker.cancel_batch()

    def _on_progress(self, done: int, total: int, elapsed: float) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        remaining = elapsed / done * (total - done) if done else 0.0
        rate = f" · {done / elapsed:.1f} images/s" if done and elapsed > 0 else ""
        self.eta_label.setText(f"{done} / {total}{rate} · ETA {format_duration(remaining)}")

    def _on_batch_finished(self, done: int, total: int, cancelled: bool) -> None:
        for widget in (self.progress, self.eta_label, self.cancel_button):
            widget.setVisible(False)
        verb = "Cancelled after" if cancelled else "Tagged"
        self.statusBar().showMessage(f"{verb} {done} of {total} images", 10000)
        self.refresh_folder_tags()
        self.batchFinished.emit(done, total, cancelled)

    # ------------------------------------------------------------------------------- models

    def load_default_model(self) -> None:
        saved = self.settings.model_path
        if saved and Path(saved).is_file():
            self.load_model(saved)
        else:
            self.load_starter_model(quiet=True)

    def load_starter_model(self, quiet: bool = False) -> None:
        from mlcnn_core.modelfile import starter_model_path

        path = starter_model_path()
        if path is None:
            self.model_label.setText(NO_MODEL_TEXT)
            if not quiet:
                self._report("No starter model is installed (resources/models/starter.safetensors).", error=True)
            return
        self.load_model(path)

    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", "", "Models (*.safetensors)")
        if path:
            self.load_model(path)

    def load_model(self, path: str | Path) -> None:
        self.model_label.setText(f"Loading model {Path(path).name}…")
        self.predictor.loadRequested.emit(str(path))

    def unload_model(self) -> None:
        self.predictor.unloadRequested.emit()

    def _on_model_loaded(self, summary: ModelSummary) -> None:
        self.model = summary
        self.settings.model_path = summary.path
        self._maps.clear()
        self.model_label.setText(f"Model: {summary.name} · {len(summary.labels)} labels · {summary.device}")
        if summary.warnings:
            self._report("; ".join(summary.warnings), error=False)
        self.viewer.set_labels(summary.labels)
        self._update_completions()
        if self.current_id >= 0:
            self.show_image(self.current_id)
        self._update_training_panel()
        self.modelReady.emit(summary)

    def _on_model_failed(self, message: str) -> None:
        self.model_label.setText(NO_MODEL_TEXT if self.model is None else self.model_label.text())
        self._report(f"Cannot load the model: {message}", error=True)
        self.modelFailed.emit(message)

    def _on_model_unloaded(self) -> None:
        self.model = None
        self.model_label.setText(NO_MODEL_TEXT)
        self.settings.model_path = ""
        self._update_training_panel()

    def show_model_card(self) -> None:
        if self.model is None:
            self._report("No model loaded.", error=False)
            return
        TextDialog("Model card", format_model_card(self.model.card, self.model.path, self.model.device), self).open()

    # ------------------------------------------------------------------------------- edits

    def _edit_current(self, text: str, apply: Callable[[Library], object], shown: list[TagRecord]) -> bool:
        """Push an undoable edit of the current image: its tags are shown as ``shown`` at once; the
        library worker stores it (a failure is reported, and the tags shown as they really are)."""
        if self.library is None or self.current_id < 0:
            return False
        image_id = self.current_id
        self.undo_stack.push(image_edit(text, self.library, image_id, apply, self._submit_edit))
        self.tag_panel.show_edit(shown)
        self.gallery.proxy.update_tags(image_id, {t.tag for t in shown if t.is_positive})
        return True

    def confirm_tag(self, tag: str) -> bool:
        image_id = self.current_id
        shown = with_decision(self.tag_panel.model.records(), tag, "confirmed")
        return self._edit_current(f"Confirm “{tag}”", lambda lib: lib.set_tag(image_id, tag, "confirmed"), shown)

    def reject_tag(self, tag: str) -> bool:
        image_id = self.current_id
        shown = with_decision(self.tag_panel.model.records(), tag, "rejected")
        return self._edit_current(f"Reject “{tag}”", lambda lib: lib.set_tag(image_id, tag, "rejected"), shown)

    def remove_tag(self, tag: str) -> bool:
        image_id = self.current_id
        shown = with_decision(self.tag_panel.model.records(), tag, None)
        return self._edit_current(f"Remove “{tag}”", lambda lib: lib.remove_tag(image_id, tag), shown)

    def add_tag(self, tag: str) -> bool:
        """A tag the person typed: added, or confirmed where the machine or a sidecar had it."""
        image_id = self.current_id
        shown_before = next((t for t in self.tag_panel.model.records() if t.tag == tag), None)
        shown_state = "confirmed" if shown_before is not None and shown_before.source != "human" else "added"
        shown = with_decision(self.tag_panel.model.records(), tag, shown_state)

        def add(lib: Library) -> str:
            existing = lib.tag_record(image_id, tag)
            return lib.set_tag(image_id, tag, "confirmed" if existing is not None and existing.source != "human"
                               else "added")

        return self._edit_current(f"Add “{tag}”", add, shown)

    def confirm_all(self) -> bool:
        image_id = self.current_id
        shown = with_all_confirmed(self.tag_panel.model.records())
        return self._edit_current("Confirm all tags", lambda lib: lib.confirm_all(image_id), shown)

    def rename_tag(self, old: str, new: str | None = None) -> bool:
        if self.library is None:
            return False
        if new is None:
            new, ok = QInputDialog.getText(self, "Rename a tag", f"Rename “{old}” on every image to:", text=old)
            if not ok:
                return False
        new = " ".join(new.split())
        if not new or new == old:
            return False
        self.undo_stack.push(folder_tag_edit(
            f"Rename “{old}” to “{new}”", self.library, old, lambda lib: lib.rename_tag(old, new), self._submit_edit,
            self._show_folder_tag_edit(old, new),
        ))
        return True

    def delete_tag(self, tag: str, confirm: bool = True) -> bool:
        if self.library is None:
            return False
        if confirm:
            answer = QMessageBox.question(self, "Delete a tag", f"Remove “{tag}” from every image in this folder?")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        self.undo_stack.push(folder_tag_edit(
            f"Delete “{tag}”", self.library, tag, lambda lib: lib.delete_tag(tag), self._submit_edit,
            self._show_folder_tag_edit(tag, None),
        ))
        return True

    def _show_folder_tag_edit(self, old: str, new: str | None) -> list[int]:
        """A tag renamed (or deleted) across the folder, shown at once in the grid and the tag panel;
        returns the images shown changed (read back from the library even if the edit fails)."""
        shown = self.gallery.proxy.images_with_tag(old)
        self.gallery.proxy.rename_tag(old, new)
        if self.current_id >= 0 and self.tag_panel.model.row_of(old) is not None:
            self.tag_panel.show_edit(with_renamed(self.tag_panel.model.records(), old, new))
            shown.append(self.current_id)
        return shown

    # ---- edits of the selected images (the current one when none is selected)

    def _selection(self) -> list[int]:
        return self.gallery.selected_image_ids() or ([self.current_id] if self.current_id >= 0 else [])

    def _edit_selection(self, text: str, apply: Callable[[Library, list[int]], list[int]]) -> bool:
        """Push an undoable edit of the selected images; an edit that changes nothing is dropped
        from the stack once the library worker says so."""
        ids = self._selection()
        if self.library is None or not ids:
            return False
        self.undo_stack.push(
            TagEditCommand(f"{text} ({len(ids)} images)" if len(ids) > 1 else text, self.library,
                           lambda _lib: ids, lambda lib: apply(lib, ids), self._submit_edit)
        )
        return True

    def _ask(self, title: str, label: str, text: str = "") -> str | None:
        value, ok = QInputDialog.getText(self, title, label, text=text)
        value = " ".join(value.split())
        return value if ok and value else None

    def add_tag_to_selection(self, tag: str | None = None) -> bool:
        tag = tag or self._ask("Add a tag", f"Add to the {len(self._selection())} selected images:")
        return bool(tag) and self._edit_selection(f"Add “{tag}”", lambda lib, ids: lib.add_tag_to_images(ids, tag))

    def remove_tag_from_selection(self, tag: str | None = None) -> bool:
        tag = tag or self._ask("Remove a tag", f"Remove from the {len(self._selection())} selected images:",
                               self.tag_panel.selected_tag() or "")
        return bool(tag) and self._edit_selection(
            f"Remove “{tag}”", lambda lib, ids: lib.remove_tag_from_images(ids, tag)
        )

    def replace_in_selection(self, find: str | None = None, replacement: str | None = None) -> bool:
        if find is None:
            find, ok = QInputDialog.getText(self, "Find and replace in tags",
                                            f"Find in the tags of the {len(self._selection())} selected images:")
            if not ok or not find:
                return False
        if replacement is None:
            replacement, ok = QInputDialog.getText(self, "Find and replace in tags",
                                                   f"Replace “{find}” with (empty: remove it):")
            if not ok:
                return False
        return self._edit_selection(
            f"Replace “{find}” with “{replacement}”", lambda lib, ids: lib.replace_in_tags(ids, find, replacement)
        )

    def move_tag_to_front(self, tag: str | None = None) -> bool:
        tag = tag or self.tag_panel.selected_tag() or self._ask("Move a tag to the front", "Tag to put first:")
        return bool(tag) and self._edit_selection(f"Move “{tag}” to the front",
                                                  lambda lib, ids: lib.move_to_front(ids, tag))

    def _rename_selected_folder_tag(self) -> None:
        tag = self.folder_tags.selected_tag() or self.tag_panel.selected_tag()
        if tag:
            self.rename_tag(tag)

    def _delete_selected_folder_tag(self) -> None:
        tag = self.folder_tags.selected_tag() or self.tag_panel.selected_tag()
        if tag:
            self.delete_tag(tag)

    def _submit_edit(self, job: EditJob) -> None:
        job.current_id = self.current_id
        self.edits_pending += 1
        self.library_thread.editRequested.emit(job)
        if self.tag_read_pending:  # it would show the tags from before the edit: read them after it
            self._refresh_tag_panel()

    def _on_edit_stored(self, result: EditResult) -> None:
        self.edits_pending -= 1
        job = result.job
        if job.library is not self.library:
            return
        if result.error:
            self._report(result.error, error=True)
        if job.first and (result.error or not result.changed):
            self._drop_edit(job.command)
            if not result.error:
                self.statusBar().showMessage(f"{job.text}: no image changed", 8000)
        self._show_stored(result)
        self.editStored.emit(result)

    def _drop_edit(self, command: TagEditCommand) -> None:
        """Take an edit that failed or changed nothing off the undo stack (an obsolete command is
        deleted there, not undone); one with edits above it goes when undo reaches it."""
        try:
            command.setObsolete(True)
        except RuntimeError:  # the stack was cleared meanwhile (another folder is opening)
            return
        top = self.undo_stack.index() - 1
        if top >= 0 and self.undo_stack.command(top) is command:
            self.undo_stack.undo()

    def _show_stored(self, result: EditResult) -> None:
        confirmed = []
        for record in result.records:
            self.images.update_record(record)
            self.gallery.proxy.update_tags(record.id, result.tags.get(record.id, set()))
            if record.status == "confirmed" and record.id in result.changed:
                confirmed.append(record.id)
        record = next((r for r in result.records if r.id == self.current_id), None)
        if result.current_tags is not None and record is not None and result.job.current_id == self.current_id:
            self._show_current_tags(record, result.current_tags, result.current_scores)
        elif self.current_id in result.changed:  # the person went on to an image the edit changed
            self._refresh_tag_panel()
        if result.changed:
            self._folder_tags_timer.start()
        if confirmed and self.settings.write_on_confirm:
            self.write_sidecars(confirmed, "human")

    # ------------------------------------------------------------------------------- sidecars

    def write_sidecars(self, image_ids: list[int] | None, content: str = "human") -> bool:
        """Write sidecars of ``image_ids`` (None: those whose last write failed) on the library worker."""
        formats = self.settings.sidecar_formats
        if self.library is None or image_ids == [] or not formats:
            return False
        self.library_thread.sidecarsRequested.emit(
            SidecarRequest(None if image_ids is None else list(image_ids), formats, self.settings.naming,
                           self.settings.write_policy, content, self.settings.tag_rules)
        )
        return True

    def write_current_sidecar(self) -> bool:
        return self.current_id >= 0 and self.write_sidecars([self.current_id], "human")

    def write_predicted_sidecars(self) -> int:
        """A batch of predictions to sidecars, as machine tags (recorded so in the library)."""
        ids = [r.id for r in self.images.records() if r.status == "predicted"]
        self.write_sidecars(ids, "machine")
        return len(ids)

    def _confirm_write_predicted_sidecars(self) -> None:
        count = sum(r.status == "predicted" for r in self.images.records())
        answer = QMessageBox.question(
            self,
            "Write predicted tags",
            f"Write the model's proposals for {count} unreviewed images to sidecars "
            f"({', '.join(self.settings.sidecar_formats) or 'no format chosen'}, policy "
            f"{self.settings.write_policy})?",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.write_predicted_sidecars()

    def retry_failed_sidecars(self) -> bool:
        """Write again the sidecars whose last write failed (the library worker finds them)."""
        return self.write_sidecars(None)

    def _on_sidecars_done(self, report: SidecarReport) -> None:
        """A batch of a sidecar request written: progress while there are more, a summary after the last."""
        if report.library is not self.library:
            return
        for image_id in report.written:
            self.failed_sidecars.pop(image_id, None)
        self.failed_sidecars.update(report.failed)
        self.retry_action.setEnabled(bool(self.failed_sidecars))
        if report.error:
            self._report(f"Cannot write sidecars: {report.error}", error=True)
        elif not report.last:
            failed = f" ({report.failures:,} failed)" if report.failures else ""
            self.statusBar().showMessage(f"Writing sidecars: {report.done:,} of {report.total:,}{failed}", 8000)
        elif report.failures:
            self._report(
                f"{report.failures} sidecar(s) could not be written — the tags are kept in the library; "
                f"Sidecars ▸ Retry failed writes. First error: {report.first_failure}",
                error=True,
            )
        elif report.files_written:
            paths = [p.name for paths in report.written.values() for p in paths]
            shown = ", ".join(paths[:3]) + (" …" if report.files_written > 3 else "")
            self.statusBar().showMessage(f"Wrote {report.files_written} sidecar file(s): {shown}", 8000)
        if report.notes:  # another program changed these sidecars: their tags were read again
            self._show_changed_tags(report.noted_records, report.noted_tags)
            notes = [n for image_notes in report.notes.values() for n in image_notes]
            self._report(notes[0] + (f" (and {len(notes) - 1} more)" if len(notes) > 1 else ""), error=False)
        self.sidecarsWritten.emit(report)

    def _on_external_changes(self, changes: ExternalChanges) -> None:
        if changes.library is not self.library:
            return
        if changes.records:
            self._show_changed_tags(changes.records, changes.tags)
            self.statusBar().showMessage(
                f"Keywords embedded in {len(changes.records)} image(s) were read"
                if changes.embedded
                else f"Sidecars of {len(changes.records)} image(s) were changed by another program; their tags "
                "were read again",
                8000,
            )
        if changes.messages:
            what = "image file(s) had embedded keywords that" if changes.embedded else "changed sidecar(s)"
            self._report(f"{len(changes.messages)} {what} could not be read: {changes.messages[0]}", error=False)

    def _show_changed_tags(self, records: list[ImageRecord], tags: dict[int, list[TagRecord]]) -> None:
        for record in records:
            self.images.update_record(record)
            self.gallery.proxy.update_tags(record.id, {t.tag for t in tags.get(record.id, []) if t.is_positive})
        if self.current_id in {r.id for r in records}:
            self._refresh_tag_panel()
        self._folder_tags_timer.start()

    def edit_tag_rules(self) -> TagRulesDialog:
        dialog = TagRulesDialog(self.settings, self)
        dialog.accepted.connect(lambda: self.predictor.worker.set_rules(self.settings.tag_rules))
        dialog.open()
        return dialog

    def edit_sidecar_settings(self) -> None:
        dialog = SidecarSettingsDialog(self.settings, self)
        dialog.accepted.connect(dialog.apply)
        dialog.open()

    # ------------------------------------------------------------------------------- misc

    def refresh_folder_tags(self) -> None:
        """Count the folder's tags and statuses on the library worker; while a count runs, asking
        again runs one more count after it."""
        if self.library is None:
            self.folder_tags.model.set_counts([])
            return
        if self._counting_folder_tags:
            self._count_folder_tags_again = True
            return
        self._counting_folder_tags = True
        self.library_thread.folderTagsRequested.emit(self.library)

    def _on_folder_tags_counted(self, counts: FolderTagCounts) -> None:
        self._counting_folder_tags = False
        if self._count_folder_tags_again:
            self._count_folder_tags_again = False
            self.refresh_folder_tags()
        if counts.library is not self.library:  # another folder was opened meanwhile
            return
        if counts.error:
            self._report(f"Cannot count the folder's tags: {counts.error}", error=False)
        if not counts.counted:
            return
        self.folder_tags.model.set_counts(counts.tags)
        self.counts_label.setText(" · ".join(f"{v} {k}" for k, v in counts.statuses.items()))
        self._update_completions()

    def _update_completions(self) -> None:
        labels = self.model.labels if self.model else []
        self.tag_panel.set_completions(list(labels) + self.folder_tags.model.tags(), self.tag_list)

    def choose_tag_list(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Autocomplete from a tag list", "",
                                              "Tag lists (*.csv *.txt);;All files (*)")
        if path:
            self.use_tag_list(path)

    def use_tag_list(self, path: str) -> None:
        """Complete tags from the list at ``path`` (read off the GUI thread; remembered), or none."""
        self.settings.tag_list_path = path
        if path:
            self.tag_list_loader.load(path)
        else:
            self._on_tag_list_loaded("", [])

    def _on_tag_list_failed(self, path: str, message: str) -> None:
        self.settings.tag_list_path = ""  # not tried again at every start
        self._report(f"Cannot use the tag list for autocomplete: {message}", error=True)

    def _on_tag_list_loaded(self, path: str, tags: list[str]) -> None:
        self.tag_list = tags
        self._update_completions()
        if path:
            self.statusBar().showMessage(f"Autocomplete: {len(tags)} tags from {Path(path).name}", 8000)

    def _report(self, message: str, error: bool) -> None:
        """Status bar for everything; errors also in a non-blocking message box (``error_dialogs``)."""
        self.last_error = message if error else self.last_error
        self.statusBar().showMessage(message, 20000)
        if error and self.isVisible() and self.error_dialogs:
            box = QMessageBox(QMessageBox.Icon.Warning, "MLCNN Tagger", message, QMessageBox.StandardButton.Ok, self)
            box.open()

    def show_shortcuts(self) -> ShortcutsDialog:
        dialog = ShortcutsDialog(self.shortcut_actions, self)
        dialog.open()
        return dialog

    def _show_training(self) -> None:
        self.ensure_training_panel()
        self.training_dock.show()
        self.training_dock.raise_()
        self.training_dock.activateWindow()

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About MLCNN Tagger",
            "Tags artwork with the multi-label CNN of Vallet & Sakamoto (2015): per-label confidence maps, "
            "sidecars, fine-tuning from corrections.",
        )

    def sizeHint(self) -> QSize:
        return QSize(1400, 900)

    def shutdown(self) -> None:
        """Stop the workers, then close what is left of the library's connections (also done on close)."""
        if self.training_panel is not None:
            self.training_panel.shutdown()
        self.predictor.stop()
        self.library_thread.stop()
        self.thumbnails.reset()
        self.thumbnails.wait(5000)
        self.image_loader.wait(5000)
        self.tag_list_loader.wait(5000)
        if self.library is not None:
            self.library.close()
            self.library = None
        self.settings.sync()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)
