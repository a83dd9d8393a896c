"""Start the application: ``tagger-app [FOLDER] [--demo] [--model FILE]``."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from mlcnn_core.shipped import resources_dir

DEMO_SOURCE = resources_dir() / "demo"
ICON = resources_dir() / "desktop" / "mlcnn-tagger.svg"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tagger-app", description="Tag artwork with a multi-label CNN.")
    parser.add_argument("folder", nargs="?", help="a folder of images to open")
    parser.add_argument("--demo", action="store_true", help="copy the demo folder to your data folder and open it")
    parser.add_argument("--model", help="a .safetensors model to use instead of the starter model")
    parser.add_argument("--settings", help="an INI file for the settings (default: the platform's location)")
    return parser.parse_args(argv)


def prepare_demo(source: Path = DEMO_SOURCE, data_dir: Path | None = None) -> Path:
    """Copy ``resources/demo`` to ``<user data>/demo`` (once) and return the copy.

    Raises FileNotFoundError with a clear message when the demo folder is not installed.
    """
    if not source.is_dir():
        raise FileNotFoundError(
            f"The demo folder is not installed ({source} does not exist); open a folder of your own instead."
        )
    from mlcnn_core.library import user_data_dir

    target = (data_dir or user_data_dir()) / "demo"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(".demo-copying")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(".mlcnn-tagger"))
        partial.rename(target)
    return target


def load_model_after_first_screen(window, load: Callable[[], None], fallback_ms: int = 1000) -> None:
    """Run ``load`` once the folder being opened is listed and its first screen of thumbnails is
    decoded (or ``fallback_ms`` after it is listed, or when it fails). Importing torch and reading a
    model hold the interpreter for seconds; started with the folder, they held up the scan and the
    first thumbnails (1.8–2.9 s against 0.5 s from the menu) and stalled the window."""
    started = []

    def start(*_) -> None:
        if not started:
            started.append(True)
            window.thumbnails.drained.disconnect(start)
            load()

    def listed(*_) -> None:
        from PySide6.QtCore import QTimer

        window.thumbnails.drained.connect(start)
        QTimer.singleShot(fallback_ms, start)

    window.folderOpened.connect(listed)
    window.folderFailed.connect(lambda *_: listed())


def start(args: argparse.Namespace):
    """Build and show the main window for ``args``: the folder (or the demo) is opened first, and the
    model loaded after it (see :func:`load_model_after_first_screen`)."""
    from PySide6.QtWidgets import QMessageBox

    from tagger_app.main_window import MainWindow
    from tagger_app.settings import AppSettings

    settings = AppSettings(args.settings)
    window = MainWindow(settings, load_default_model=False)
    load = (lambda: window.load_model(args.model)) if args.model else window.load_default_model
    window.show()

    folder = None
    if args.demo:
        try:
            folder = prepare_demo()
        except (FileNotFoundError, OSError) as exc:
            print(f"tagger-app: {exc}", file=sys.stderr)
            QMessageBox.warning(window, "Demo folder", str(exc))
    elif args.folder:
        folder = args.folder
    if folder is None:
        load()
        return window
    load_model_after_first_screen(window, load)
    # the demo's sidecars stand for a person's earlier work: they open as confirmed
    window.open_folder(folder, import_as_confirmed=True if args.demo else None)
    return window


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tagger_app.platform_check import xcb_problem

    if problem := xcb_problem():
        print(f"tagger-app: {problem}", file=sys.stderr)
        return 1
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from tagger_app.settings import APPLICATION, ORGANIZATION

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setDesktopFileName("mlcnn-tagger")
    app.setWindowIcon(QIcon(str(ICON)))
    window = start(args)  # noqa: F841 - kept alive until the event loop ends
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
