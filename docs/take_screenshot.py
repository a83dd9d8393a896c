"""Screenshot of the main window for docs/: a copy of the demo folder, tagged by the starter model,
one image's confidence map shown. Run under a real X server (Xvfb):

    xvfb-run -a -s "-screen 0 1400x900x24" python docs/take_screenshot.py docs/screenshot-main-window.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication

from mlcnn_core.modelfile import RESOURCES, starter_model_path
from tagger_app.main_window import MainWindow
from tagger_app.settings import AppSettings


def wait(app: QApplication, condition, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def main(out: str, image: str = "noto-003.jpg") -> int:
    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "demo"
        shutil.copytree(RESOURCES / "demo", folder)
        window = MainWindow(AppSettings(Path(tmp) / "settings.ini"), load_default_model=False)
        window.resize(1400, 900)
        window.show()
        opened = []
        window.folderOpened.connect(lambda *_: opened.append(True))
        window.open_folder(folder, import_as_confirmed=True)
        wait(app, lambda: opened)
        window.load_model(starter_model_path())
        wait(app, lambda: window.model is not None)
        done = []
        window.batchFinished.connect(lambda *a: done.append(a))
        window.tag_all()
        wait(app, lambda: done)
        record = next(r for r in window.images.records() if r.path == image)
        window.gallery.select_image(record.id)
        wait(app, lambda: window.viewer._maps is not None and window.viewer.view.image_size()[0] > 0)
        prediction = window.library.prediction(record.id)
        best = max(prediction.scores, key=prediction.scores.get)
        window.viewer.show_label(best)
        for _ in range(50):
            app.processEvents()
            time.sleep(0.02)
        window.grab().save(out)
        print(f"saved {out}: {image}, map of {best!r}")
        window.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
