#!/usr/bin/env bash
# Installs what bench/emoji_scenes.py needs on a fresh Debian machine (run as root; idempotent).
#   - Noto Color Emoji font, Unicode emoji-test.txt, libcairo (for cairosvg)
#   - OpenMoji and Twemoji SVGs from npm, under bench/.npm/ (gitignored)
#   - Iconify JSON emoji sets from npm (bench/iconify_artists.py), under bench/.npm/
#   - openclipart drawings, MATE and GNOME wallpapers (Debian; bench/openclipart.py, compositions.py)
#   - cairosvg, scikit-image, scikit-learn from PyPI
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

need_apt=0
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need_apt=1
[ -f /usr/share/unicode/emoji/emoji-test.txt ] || need_apt=1
ldconfig -p 2>/dev/null | grep -q 'libcairo\.so\.2' || need_apt=1
[ -d /usr/share/openclipart/svg ] || need_apt=1
[ -d /usr/share/backgrounds/mate ] || need_apt=1
if [ "$need_apt" = 1 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        fonts-noto-color-emoji unicode-data libcairo2 openclipart-svg mate-backgrounds gnome-backgrounds
fi

OPENMOJI_VERSION="${OPENMOJI_VERSION:-17}"
TWEMOJI_VERSION="${TWEMOJI_VERSION:-15.0.0}"
if [ ! -d "$here/.npm/node_modules/openmoji/color/svg" ] || [ ! -f "$here/.npm/node_modules/@twemoji/svg/1f600.svg" ]; then
    mkdir -p "$here/.npm"
    npm install --no-audit --no-fund --prefix "$here/.npm" "openmoji@${OPENMOJI_VERSION}" "@twemoji/svg@${TWEMOJI_VERSION}"
fi

# more emoji artists (bench/iconify_artists.py: the training artists and the fxemoji test set)
if [ ! -f "$here/.npm/node_modules/@iconify-json/fxemoji/icons.json" ]; then
    npm install --no-audit --no-fund --prefix "$here/.npm" @iconify-json/noto@1.2.9 @iconify-json/noto-v1@1.2.5 \
        @iconify-json/fluent-emoji@1.2.7 @iconify-json/fluent-emoji-flat@1.2.6 \
        @iconify-json/fluent-emoji-high-contrast@1.2.6 @iconify-json/emojione@1.2.3 \
        @iconify-json/emojione-v1@1.2.3 @iconify-json/fxemoji@1.2.2
fi

if ! python3 -c 'import cairosvg, skimage, sklearn' 2>/dev/null; then
    python3 -m pip install cairosvg scikit-image scikit-learn
fi

python3 - <<'PY'
import cairosvg, skimage, sklearn  # noqa: F401
print("bench setup ok: skimage", skimage.__version__, "sklearn", sklearn.__version__)
PY
