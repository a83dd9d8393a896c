"""The training panel's tables: label counts of the data, and the current and the new model compared.

Also the comparison in words: its overall table (:func:`overall_table`), its one-line answer
(:func:`accuracy_verdict`) and the summary around it (:func:`comparison_summary`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QModelIndex, QObject, Qt
from PySide6.QtGui import QColor

from tagger_app.models.column_table_model import ColumnTableModel

MIN_EXAMPLES = 5
BETTER = QColor(30, 130, 60)
WORSE = QColor(190, 40, 40)
NEW = QColor(40, 90, 190)
FEW = QColor(140, 110, 40)  # a note, not an error: a label with few examples still trains
SAME = QColor(90, 90, 90)


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


def overall_table(overall: list[dict]) -> str:
    """``ComparisonModel.overall`` as a rich-text table: each metric, the current and the new model's,
    and the change in colour."""
    rows = []
    for r in overall:
        old, value = r["current"], r["new"]
        delta = ""
        if old is not None and value is not None and math.isfinite(old) and math.isfinite(value):
            color = BETTER if value > old + 1e-9 else WORSE if value < old - 1e-9 else SAME
            delta = f" <span style='color:{color.name()}'>({value - old:+.3f})</span>"
        old_text = f"{old:.3f}" if old is not None and math.isfinite(old) else "—"
        new_text = f"{value:.3f}" if value is not None and math.isfinite(value) else "—"
        rows.append(
            f"<tr><td>{r['metric']}</td><td align=right>{old_text}</td>"
            f"<td align=right><b>{new_text}</b>{delta}</td></tr>"
        )
    return "<table cellspacing=6><tr><th></th><th>current</th><th>new</th></tr>" + "".join(rows) + "</table>"


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


def comparison_summary(comparison: ComparisonModel, compared: bool, new: dict, curve_accuracy: float | None,
                       verdict: Verdict | None) -> str:
    """The comparison in rich text: the verdict, the labels that did better and worse, and why the
    curve's last held-out accuracy (``curve_accuracy``) may differ from the new model's own.
    ``compared``: there was a current model to compare with."""
    better, worse = comparison.changed()
    added = [r["label"] for r in comparison.rows if r["is_new"]]
    images = int(new.get("images", 0))
    summary = f"On {images} held-out images: {len(better)} labels better, {len(worse)} worse"
    if added:
        summary += f", new: {', '.join(added)}"
    if not compared:
        summary = f"On {images} held-out images (no current model to compare with)"
    elif added:
        summary += " (the current model's overall numbers count only the labels it knows)"
    summary += "."
    final = new["single_pass"].get("accuracy")
    if curve_accuracy is not None and final is not None and abs(curve_accuracy - final) > 5e-4:
        summary += (
            f" The curve's last held-out accuracy ({curve_accuracy:.3f}) cuts the scores where it suits those "
            f"same images best; {final:.3f} is the new model read with its own threshold, as it will be used."
        )
    if verdict is not None:
        color = WORSE if verdict.worse else BETTER if "is better" in verdict.text else SAME
        summary = f"<b style='color:{color.name()}'>{verdict.text}</b><br>{summary}"
    return summary
