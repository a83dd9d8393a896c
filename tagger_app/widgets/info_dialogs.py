"""Read-only dialogs: the model card and the keyboard shortcuts."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPlainTextEdit, QTableWidget, QTableWidgetItem, QVBoxLayout


def format_model_card(card: dict, path: str, device: str) -> str:
    labels = card.get("labels", [])
    lines = [
        f"Name: {card.get('name') or '(unnamed)'}",
        f"File: {path}",
        f"Runs on: {device}",
        f"Architecture: {card.get('arch', {}).get('name', '?')}",
        f"Created: {card.get('created', '?')}",
        f"Labels ({len(labels)}): {', '.join(labels[:200])}{' …' if len(labels) > 200 else ''}",
    ]
    for key in ("provenance", "metrics", "threshold", "prediction"):
        if key in card:
            lines.append(f"\n{key.capitalize()}:\n{json.dumps(card[key], indent=2, ensure_ascii=False)}")
    return "\n".join(lines)


class TextDialog(QDialog):
    def __init__(self, title: str, text: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(640, 480)
        view = QPlainTextEdit(text)
        view.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(view)
        layout.addWidget(buttons)


def on_a_common_keyboard(sequence: QKeySequence) -> bool:
    """A key sequence a person can type on a common keyboard: not F13–F35 nor keys such as Undo or
    Back that the platform's standard bindings add (Undo is "Ctrl+Z, F14, Undo" on Linux)."""
    key = sequence[0].key().value if sequence.count() else 0
    return key < Qt.Key.Key_F13.value or Qt.Key.Key_F35.value < key < Qt.Key.Key_Back.value


class ShortcutsDialog(QDialog):
    """Lists every action that has a shortcut, so the list cannot drift from the code."""

    def __init__(self, actions: list[QAction], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(520, 560)
        rows = [
            (a.text().replace("&", ""), ", ".join(s.toString() for s in a.shortcuts() if on_a_common_keyboard(s)))
            for a in actions
            if any(on_a_common_keyboard(s) for s in a.shortcuts())
        ]
        table = QTableWidget(len(rows), 2)
        table.setHorizontalHeaderLabels(["Action", "Keys"])
        for r, (name, keys) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(name))
            table.setItem(r, 1, QTableWidgetItem(keys))
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.rows = rows
