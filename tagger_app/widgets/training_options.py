"""The training panel's Options tab: a form whose state is one ``mlcnn train`` run (a ``TrainConfig``).

"auto" leaves a value to the recipe; the form shows what the recipe picks (``TrainConfig.recipe_for``,
no torch) and warns where a chosen rate would leave a fine-tune's old weights where they are.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QRadioButton,
    QSpinBox,
    QWidget,
)

from mlcnn_core.recipes import RECIPES, TrainConfig, steps_per_epoch

ARCHITECTURES = ("compact", "tiny", "nin", "paper")
# How far a fine-tune may move from the current model:
# (shown, (mlcnn train --learn, --anchor); None: the recipe's)
KEEP_CHOICES = (("strongly (auto)", (None, None)), ("somewhat: learn more of a new style", (None, 30.0)),
                ("no: learn a new drawing style (every weight)", ("all", 0.0)))
KEEP_TOOLTIP = (
    "How much of the network a fine-tune moves and how strongly it pulls it back toward the current model "
    "(mlcnn train --learn, --anchor).\n"
    "Strongly: only the head learns, on the frozen trunk, pulled toward the current model (--anchor 100): what "
    "the model knew holds and new labels are learnt; a new drawing style is learnt a little.\n"
    "Somewhat (--anchor 30): a few hundred confirmed images of a new artist teach more of the new style, "
    "and the model forgets a little of the old.\n"
    "No (--learn all --anchor 0): every weight moves, with no pull back. With a thousand or more confirmed images "
    "a new style is learnt and the old one partly forgotten (less with images of the old style trained on too).\n"
    "BENCHMARKS.md has the numbers."
)
KEEP_REPLAY_NOTE = (
    "Without the pull back the model forgets some of what it knew. Tick a library of the images it already "
    "tags well under “Also train on confirmed images of” (Data tab) to keep it."
)


class TrainingOptions(QWidget):
    """Fine-tune or train from scratch, and the run's options; :meth:`config` is the run they describe.

    The panel tells the form whether a run is going on, whether the data has labels the current model
    lacks and whether other libraries are replayed (:meth:`set_state`)."""

    modeChanged = Signal()  # fine-tune ↔ from scratch, or another recipe: the defaults and counts change
    heldOutChanged = Signal(float)  # the held-out fraction: the split changes
    changed = Signal()  # anything else that changes the command

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.recipe = RECIPES["default"]  # what mlcnn train picks where the form says "auto"
        self.running = False
        self.new_labels = False
        self.replaying = False
        self._shown_for: tuple[int, str | None] | None = None  # the images and model the defaults are for
        self._build()
        self._connect()

    def _build(self) -> None:
        form = QFormLayout(self)
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
        for text, choice in KEEP_CHOICES:
            self.keep_combo.addItem(text, choice)
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
        self.recipe_combo.addItems(sorted(RECIPES))
        self.recipe_combo.setToolTip("default: batch norm, AdamW, cosine schedule; paper: the paper's exact recipe")
        form.addRow("Recipe", self.recipe_combo)
        self.epochs_spin = self._count_spin(1000)
        form.addRow("Epochs", self.epochs_spin)
        self.batch_spin = self._count_spin(1024)
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

    @staticmethod
    def _count_spin(most: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(0, most)
        spin.setSpecialValueText("auto")
        return spin

    @staticmethod
    def _rate_spin() -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(6)
        spin.setRange(0.0, 1.0)
        spin.setSingleStep(0.0001)
        spin.setSpecialValueText("auto")
        return spin

    def _connect(self) -> None:
        self.mode_group.buttonToggled.connect(lambda *_: self.modeChanged.emit())
        self.recipe_combo.currentTextChanged.connect(lambda _t: self.modeChanged.emit())
        self.val_spin.valueChanged.connect(self.heldOutChanged.emit)
        for spin in (self.epochs_spin, self.batch_spin, self.lr_spin, self.lr_max_spin, self.time_spin):
            spin.valueChanged.connect(lambda _v: self._on_changed())
        self.arch_combo.currentTextChanged.connect(lambda _t: self._on_changed())
        self.device_combo.currentTextChanged.connect(lambda _t: self._on_changed())
        self.keep_combo.currentIndexChanged.connect(lambda _i: self._on_keep_changed())
        self.new_only_check.toggled.connect(lambda _c: self._update_enabled())

    # ------------------------------------------------------------------ what the form says

    def finetune(self) -> bool:
        return self.finetune_radio.isChecked()

    def held_out(self) -> float:
        return self.val_spin.value()

    def teach_new_only(self) -> bool:
        """"Teach only the new labels" (a fine-tune of zero epochs), where it is offered."""
        return self.new_only_check.isEnabled() and self.new_only_check.isChecked()

    def config(self, data: list[str], out: str, current_model: str | None) -> TrainConfig:
        """The ``mlcnn train`` run the form describes, on ``data`` into ``out`` (a fine-tune of
        ``current_model`` when the form says fine-tune)."""
        finetune = self.finetune()
        paper = self.recipe_combo.currentText() == "paper"
        new_only = self.teach_new_only()
        return TrainConfig(
            data=data,
            out=out,
            events="-",
            init=current_model if finetune else None,
            arch="compact" if finetune else self.arch_combo.currentText(),
            recipe=self.recipe_combo.currentText(),
            epochs=0 if new_only else (self.epochs_spin.value() or None),
            batch_size=self.batch_spin.value() or None,
            lr=self.lr_spin.value() or None,
            lr_max=(self.lr_max_spin.value() or None) if paper else None,
            val_fraction=round(self.val_spin.value(), 4),
            device=self.device_combo.currentText(),
            time_budget_min=self.time_spin.value() or None,
            learns=self._keep()[0],
            anchor=self._keep()[1],
        )

    def _keep(self) -> tuple[str | None, float | None]:
        """The "keep what it knows" choice as (--learn, --anchor); (None, None) where it does not apply."""
        if self.teach_new_only() or not self.finetune():
            return None, None
        return self.keep_combo.currentData()

    # ------------------------------------------------------------------ what the panel tells it

    def set_state(self, running: bool, new_labels: bool, replaying: bool) -> None:
        """A run is going on; the data has labels the current model lacks; other libraries are replayed."""
        self.running, self.new_labels, self.replaying = running, new_labels, replaying
        self._update_enabled(emit=False)

    def show_recipe_defaults(self, n_train: int, current_model: str | None) -> None:
        """Show what ``mlcnn train`` picks where the form says "auto", for ``n_train`` training images."""
        self._shown_for = (n_train, current_model)
        auto = TrainConfig(data=[], out="", recipe=self.recipe_combo.currentText(),
                           init=current_model if self.finetune() else None, learns=self._keep()[0])
        recipe = self.recipe = auto.recipe_for(n_train)
        self.epochs_spin.setSpecialValueText(f"auto ({recipe.epochs})")
        self.batch_spin.setSpecialValueText(f"auto ({recipe.batch_size})")
        self.lr_spin.setSpecialValueText(f"auto ({recipe.lr:.2g})")
        self.lr_max_spin.setSpecialValueText(f"auto ({recipe.lr_max:.2g})")
        steps = recipe.epochs * steps_per_epoch(recipe, n_train)
        what = "every weight" if recipe.learns == "all" else f"the {recipe.learns} on the frozen trunk"
        self.defaults_note.setText(
            f"“auto” is what <tt>mlcnn train</tt> picks for {n_train} training images: "
            f"{recipe.name} recipe, {recipe.optimizer}, {recipe.schedule} schedule, "
            f"about {steps} steps, learning {what}."
        )
        self._warn_about_rate()

    # ------------------------------------------------------------------ keeping itself consistent

    def _on_keep_changed(self) -> None:
        if self._shown_for is not None:  # what "auto" means follows the part that learns
            self.show_recipe_defaults(*self._shown_for)
        self._on_changed()

    def _on_changed(self) -> None:
        self._show_keep_note()
        self._warn_about_rate()
        self.changed.emit()

    def _update_enabled(self, emit: bool = True) -> None:
        running, finetune = self.running, self.finetune()
        for widget in (self.finetune_radio, self.scratch_radio, self.recipe_combo, self.epochs_spin,
                       self.batch_spin, self.lr_spin, self.val_spin, self.device_combo, self.time_spin):
            widget.setEnabled(not running)
        self.arch_combo.setEnabled(not running and not finetune)
        self.lr_max_spin.setEnabled(not running and self.recipe_combo.currentText() == "paper")
        self.new_only_check.setEnabled(not running and finetune and self.new_labels)
        self.keep_combo.setEnabled(not running and finetune)
        if self.teach_new_only():  # nothing is trained: the training options do not apply
            for widget in (self.epochs_spin, self.batch_spin, self.lr_spin, self.lr_max_spin, self.time_spin,
                           self.keep_combo):
                widget.setEnabled(False)
        self._show_keep_note()
        self._warn_about_rate()
        if emit:
            self.changed.emit()

    def _show_keep_note(self) -> None:
        """Learning a new style without the pull back forgets the old one unless images of it are
        trained on too: say so while no other library is ticked."""
        weak = self.keep_combo.currentData()[1] is not None
        self.keep_note.setVisible(weak and not self.replaying and self.keep_combo.isEnabled())

    def _warn_about_rate(self) -> None:
        """A fine-tune pulls the weights toward the current model's by rate × anchor per step (capped
        at a full return): at or past the cap the old weights never move and only new labels learn."""
        fine_tune = self.finetune() and not self.teach_new_only()
        chosen = self.keep_combo.currentData()[1]
        anchor = float(self.recipe.anchor if chosen is None else chosen) if fine_tune else 0.0
        rate = self.lr_spin.value()
        if anchor > 0 and rate > 0 and rate * anchor >= 1.0:
            self.rate_warning.setText(
                f"At a rate of {rate:.2g} the pull toward the current model (anchor {anchor:g}) returns its "
                f"weights after every step: only new labels will learn. Use a rate below {1 / anchor:.2g}."
            )
            self.rate_warning.show()
        else:
            self.rate_warning.hide()
