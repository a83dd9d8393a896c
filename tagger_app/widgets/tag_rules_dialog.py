"""The rules for proposed and written tags (mlcnn_core.tag_rules): a confidence threshold, excluded
tags, a maximum count, a caption prefix, and underscores or spaces in written tags."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
)

from mlcnn_core.tag_rules import TagRules, parse_tag_list
from tagger_app.settings import AppSettings

SEPARATOR_TEXT = {
    "keep": "Keep tags as they are",
    "space": "Spaces: long_hair is written long hair",
    "underscore": "Underscores: long hair is written long_hair",
}


class TagRulesDialog(QDialog):
    def __init__(self, settings: AppSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Tag rules")
        self.settings = settings
        rules = settings.tag_rules
        self.use_threshold = QCheckBox("Propose tags with a confidence of at least")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.use_threshold.setChecked(rules.min_confidence is not None)
        self.threshold.setValue(0.5 if rules.min_confidence is None else rules.min_confidence)
        self.threshold.setEnabled(self.use_threshold.isChecked())
        self.use_threshold.toggled.connect(self.threshold.setEnabled)
        self.use_threshold.setToolTip("Unticked: the model's own threshold. The confidence is the bar in the tag list.")
        self.max_tags = QSpinBox()
        self.max_tags.setRange(0, 999)
        self.max_tags.setSpecialValueText("no limit")
        self.max_tags.setValue(rules.max_tags or 0)
        self.exclude = QLineEdit(", ".join(rules.exclude))
        self.exclude.setPlaceholderText("e.g. text, watermark, *_background")
        self.prefix = QLineEdit(", ".join(rules.prefix))
        self.prefix.setPlaceholderText("e.g. ohwx (a trigger word)")
        self.separator = QComboBox()
        for key, text in SEPARATOR_TEXT.items():
            self.separator.addItem(text, key)
        self.separator.setCurrentIndex(list(SEPARATOR_TEXT).index(rules.word_separator))

        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.use_threshold)
        threshold_row.addWidget(self.threshold)
        threshold_row.addStretch(1)
        form = QFormLayout()
        form.addRow("Proposals:", threshold_row)
        form.addRow("At most:", self.max_tags)
        form.addRow("Never propose or write:", self.exclude)
        form.addRow("Start every .txt caption with:", self.prefix)
        form.addRow("Words in written tags:", self.separator)
        self.error = QLabel()
        self.error.setStyleSheet("color: #be3232")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        note = QLabel(
            "Proposals follow these rules from the next prediction on (Tag ▸ Tag all images proposes again); "
            "captions follow them from the next write. Tags are comma-separated; * matches any text, ? one character."
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def rules(self) -> TagRules:
        """The rules as the dialog shows them; ``ValueError`` for a prefix that cannot be written."""
        return TagRules(
            min_confidence=self.threshold.value() if self.use_threshold.isChecked() else None,
            exclude=parse_tag_list(self.exclude.text()),
            max_tags=self.max_tags.value() or None,
            prefix=parse_tag_list(self.prefix.text()),
            word_separator=self.separator.currentData(),
        )

    def accept(self) -> None:
        try:
            self.settings.tag_rules = self.rules()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.settings.sync()
        super().accept()
