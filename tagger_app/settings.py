"""The application's persistent choices (QSettings): sidecar formats and policies, the rules for proposed
and written tags, recent folders, model."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from mlcnn_core.sidecars import NAMING_POLICIES, WRITE_POLICIES
from mlcnn_core.tag_rules import WORD_SEPARATORS, TagRules, parse_tag_list

ORGANIZATION = "mlcnn-tagger"
APPLICATION = "MLCNN Tagger"
MAX_RECENT = 10


def _as_bool(value, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


class AppSettings:
    """Typed access to QSettings. ``path``: an INI file (tests); default: the platform's location."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            self.qsettings = QSettings(ORGANIZATION, APPLICATION)
        else:
            self.qsettings = QSettings(str(path), QSettings.Format.IniFormat)

    def _get(self, key: str, default):
        return self.qsettings.value(key, default)

    def _set(self, key: str, value) -> None:
        self.qsettings.setValue(key, value)

    # ---- sidecars

    @property
    def sidecar_formats(self) -> list[str]:
        value = self._get("sidecars/formats", "txt")
        items = value if isinstance(value, list) else str(value).split(",")
        return [f for f in (i.strip() for i in items) if f in ("txt", "xmp")]

    @sidecar_formats.setter
    def sidecar_formats(self, formats: list[str]) -> None:
        self._set("sidecars/formats", ",".join(f for f in formats if f in ("txt", "xmp")))

    @property
    def naming(self) -> str:
        value = str(self._get("sidecars/naming", "auto"))
        return value if value in NAMING_POLICIES else "auto"

    @naming.setter
    def naming(self, value: str) -> None:
        self._set("sidecars/naming", value)

    @property
    def write_policy(self) -> str:
        value = str(self._get("sidecars/policy", "merge"))
        return value if value in WRITE_POLICIES else "merge"

    @write_policy.setter
    def write_policy(self, value: str) -> None:
        self._set("sidecars/policy", value)

    @property
    def write_on_confirm(self) -> bool:
        return _as_bool(self._get("sidecars/write_on_confirm", True), True)

    @write_on_confirm.setter
    def write_on_confirm(self, value: bool) -> None:
        self._set("sidecars/write_on_confirm", bool(value))

    @property
    def import_sidecars(self) -> bool:
        return _as_bool(self._get("sidecars/import", True), True)

    @import_sidecars.setter
    def import_sidecars(self, value: bool) -> None:
        self._set("sidecars/import", bool(value))

    @property
    def import_as_confirmed(self) -> bool:
        return _as_bool(self._get("sidecars/import_as_confirmed", False), False)

    @import_as_confirmed.setter
    def import_as_confirmed(self, value: bool) -> None:
        self._set("sidecars/import_as_confirmed", bool(value))

    # ---- proposal and caption rules (mlcnn_core.tag_rules, as `mlcnn tag` applies them)

    @property
    def tag_rules(self) -> TagRules:
        """The saved rules; a value that cannot be read (edited by hand) falls back to its default."""
        try:
            confidence = float(self._get("tags/min_confidence", "") or "nan")
        except (TypeError, ValueError):
            confidence = float("nan")
        try:
            max_tags = int(self._get("tags/max_tags", 0) or 0)
        except (TypeError, ValueError):
            max_tags = 0
        separator = str(self._get("tags/word_separator", "keep"))
        return TagRules(
            min_confidence=confidence if 0.0 <= confidence <= 1.0 else None,
            exclude=parse_tag_list(self._joined("tags/exclude")),
            max_tags=max_tags if max_tags >= 1 else None,
            prefix=parse_tag_list(self._joined("tags/prefix")),
            word_separator=separator if separator in WORD_SEPARATORS else "keep",
        )

    @tag_rules.setter
    def tag_rules(self, rules: TagRules) -> None:
        self._set("tags/min_confidence", "" if rules.min_confidence is None else repr(rules.min_confidence))
        self._set("tags/exclude", ", ".join(rules.exclude))
        self._set("tags/max_tags", rules.max_tags or 0)
        self._set("tags/prefix", ", ".join(rules.prefix))
        self._set("tags/word_separator", rules.word_separator)

    def _joined(self, key: str) -> str:
        # QSettings' INI format reads "a, b" back as the list ["a", "b"]
        value = self._get(key, "")
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value or "")

    # ---- folders and model

    @property
    def recent_folders(self) -> list[str]:
        value = self._get("recent/folders", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in value or []]

    def add_recent_folder(self, folder: str | Path) -> None:
        folder = str(Path(folder).resolve())
        folders = [folder] + [f for f in self.recent_folders if f != folder]
        self._set("recent/folders", folders[:MAX_RECENT])

    @property
    def model_path(self) -> str:
        return str(self._get("model/path", "") or "")

    @model_path.setter
    def model_path(self, value: str) -> None:
        self._set("model/path", value or "")

    @property
    def tag_list_path(self) -> str:
        """An autocomplete tag list (a1111 tag autocomplete CSV), or ""."""
        return str(self._get("completion/tag_list", "") or "")

    @tag_list_path.setter
    def tag_list_path(self, value: str) -> None:
        self._set("completion/tag_list", value or "")

    @property
    def overlay_opacity(self) -> int:
        try:
            return int(self._get("viewer/opacity", 60))
        except (TypeError, ValueError):
            return 60

    @overlay_opacity.setter
    def overlay_opacity(self, value: int) -> None:
        self._set("viewer/opacity", int(value))

    def sync(self) -> None:
        self.qsettings.sync()
