#!/bin/sh
# Retake docs/'s three screenshots with the shipped starter model and shrink them, in one command:
#
#     PYTHON=.venv/bin/python docs/make_screenshots.sh
#
# docs/take_screenshot.py takes each one under Xvfb and prints what it shows (tags, confidences,
# the training panel's numbers), which docs/gui.md quotes. Needs xvfb-run, pngquant and optipng
# (Debian and Ubuntu: apt install xvfb pngquant optipng). The fine-tune in the second shot runs on
# the CPU; docs/take_screenshot.py prints its progress.
set -eu
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
for tool in xvfb-run pngquant optipng; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool (apt install xvfb pngquant optipng)" >&2; exit 2; }
done
screen="-screen 0 1400x900x24"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" xvfb-run -a -s "$screen" "$python" docs/take_screenshot.py \
    docs/screenshot-main-window.png
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" xvfb-run -a -s "$screen" "$python" docs/take_screenshot.py \
    --training-panel --new-tag food:food- docs/screenshot-training-panel.png --activated docs/screenshot-new-model.png
for png in docs/screenshot-main-window.png docs/screenshot-training-panel.png docs/screenshot-new-model.png; do
    # 256 colours at the quality asked, or the file as it is (exit status 98/99: not worth it)
    pngquant --force --skip-if-larger --quality 80-95 --speed 1 --output "$png" "$png" || [ $? -ge 98 ]
    optipng -quiet -o2 "$png"
done
ls -l docs/screenshot-*.png
