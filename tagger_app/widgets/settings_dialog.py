"""Sidecar settings: formats, naming policy, write policy, and how existing sidecars are read."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
)

from tagger_app.settings import AppSettings

NAMING_TEXT = {
    "auto": "image.txt, or image.jpg.txt when two images share a name",
    "stem": "image.txt only (images sharing a name get no .txt)",
    "full": "image.jpg.txt always",
}
POLICY_TEXT = {
    "merge": "Merge: keep tags already in the file, add ours",
    "replace": "Replace: the file holds exactly the library's tags",
}


class SidecarSettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Sidecar settings")
        self.settings = settings
        self.txt = QCheckBox(".txt (kohya-ss / taggui: comma-separated tags)")
        self.xmp = QCheckBox("XMP (image.jpg.xmp, dc:subject — digiKam, darktable, exiftool)")
        formats = settings.sidecar_formats
        self.txt.setChecked("txt" in formats)
        self.xmp.setChecked("xmp" in formats)
        self.naming = QComboBox()
        for key, text in NAMING_TEXT.items():
            self.naming.addItem(text, key)
        self.naming.setCurrentIndex(list(NAMING_TEXT).index(settings.naming))
        self.policy = QComboBox()
        for key, text in POLICY_TEXT.items():
            self.policy.addItem(text, key)
        self.policy.setCurrentIndex(list(POLICY_TEXT).index(settings.write_policy))
        self.write_on_confirm = QCheckBox("Write sidecars when a person confirms an image")
        self.write_on_confirm.setChecked(settings.write_on_confirm)
        self.import_sidecars = QCheckBox("Read existing sidecars and embedded keywords when a folder opens")
        self.import_sidecars.setChecked(settings.import_sidecars)
        self.import_as_confirmed = QCheckBox("…and treat their tags as confirmed by a person")
        self.import_as_confirmed.setChecked(settings.import_as_confirmed)

        form = QFormLayout()
        formats_box = QVBoxLayout()
        formats_box.addWidget(self.txt)
        formats_box.addWidget(self.xmp)
        form.addRow("Formats:", formats_box)
        form.addRow(".txt naming:", self.naming)
        form.addRow("Existing files:", self.policy)
        row = QHBoxLayout()
        row.addWidget(self.write_on_confirm)
        form.addRow("", row)
        form.addRow("", self.import_sidecars)
        form.addRow("", self.import_as_confirmed)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Sidecars are written atomically; a failed write is retried from the Sidecars menu."))
        layout.addWidget(buttons)

    def apply(self) -> None:
        formats = [f for f, box in (("txt", self.txt), ("xmp", self.xmp)) if box.isChecked()]
        self.settings.sidecar_formats = formats
        self.settings.naming = self.naming.currentData()
        self.settings.write_policy = self.policy.currentData()
        self.settings.write_on_confirm = self.write_on_confirm.isChecked()
        self.settings.import_sidecars = self.import_sidecars.isChecked()
        self.settings.import_as_confirmed = self.import_as_confirmed.isChecked()
        self.settings.sync()
