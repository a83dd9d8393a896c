"""Emoji artwork by other artists, from Iconify JSON packages on npm (``@iconify-json/<set>``).

A package holds ``icons.json`` (``icons``: name → SVG ``body`` with optional ``width``/``height``/
``left``/``top``; top-level defaults; ``aliases``: name → ``parent`` with optional ``hFlip``/
``vFlip``/``rotate``) and ``chars.json`` (code points → name, empty in some sets).

An emoji of the benchmark's taxonomy is matched to an icon by, in this order:

1. ``chars.json``: its code points as lower-case hex joined by ``-``, with and without FE0F;
2. its CLDR name from ``emoji-test.txt`` as a slug (lower case, non-alphanumerics → ``-``), among
   the icons and the aliases;
3. the same slug with every ``-`` removed, against the names with theirs removed (fxemoji names
   ``alarmclock``).

An alias whose own slug is another emoji's name is not followed: EmojiOne's ``cricket`` alias
points at the cricket *game*, not the insect. Matches through steps 2-3 were looked at on contact
sheets (``python bench/iconify_artists.py --sheet DIR``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NPM_DIR = Path(__file__).resolve().parent / ".npm" / "node_modules"


@dataclass(frozen=True)
class Artist:
    style: str  # the style name used in set names (no "-")
    package: str  # npm package
    version: str
    licence: str
    author: str


# Training artists beside the Noto font (emoji_scenes' "noto") and npm openmoji ("openmoji");
# fxemoji is one of the two unseen-artist test sets (the other is npm @twemoji/svg, "twemoji").
ARTISTS = {
    a.style: a
    for a in (
        Artist("notosvg", "@iconify-json/noto", "1.2.9", "Apache 2.0", "Google"),
        Artist("notov1", "@iconify-json/noto-v1", "1.2.5", "Apache 2.0", "Google"),
        Artist("fluent", "@iconify-json/fluent-emoji", "1.2.7", "MIT", "Microsoft"),
        Artist("fluentflat", "@iconify-json/fluent-emoji-flat", "1.2.6", "MIT", "Microsoft"),
        Artist("fluenthc", "@iconify-json/fluent-emoji-high-contrast", "1.2.6", "MIT", "Microsoft"),
        Artist("emojione", "@iconify-json/emojione", "1.2.3", "CC BY 4.0", "Emoji One"),
        Artist("emojionev1", "@iconify-json/emojione-v1", "1.2.3", "CC BY-SA 4.0", "Emoji One"),
        Artist("fxemoji", "@iconify-json/fxemoji", "1.2.2", "Apache 2.0", "Mozilla"),
    )
}
TRAINING_ARTISTS = ("noto", "notosvg", "notov1", "openmoji", "fluent", "fluentflat", "fluenthc", "emojione",
                    "emojionev1")
UNSEEN_ARTISTS = ("twemoji", "fxemoji")


def slug(name: str) -> str:
    """A CLDR name as an Iconify icon name: ``"A button (blood type)"`` → ``"a-button-blood-type"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("’", "").replace("'", "")).strip("-")


def npm_install_command() -> str:
    return "npm install --prefix bench/.npm " + " ".join(f"{a.package}@{a.version}" for a in ARTISTS.values())


class IconifyRenderer:
    """Renders the emoji of one Iconify JSON package (``render(entry)`` like emoji_scenes' renderers)."""

    def __init__(self, style: str, npm_dir: Path = NPM_DIR, render_px: int = 256):
        artist = ARTISTS[style]
        self.package_dir = Path(npm_dir) / artist.package
        icons_path = self.package_dir / "icons.json"
        if not icons_path.exists():
            raise FileNotFoundError(f"{icons_path} (npm {artist.package}; run bash bench/setup.sh)")
        data = json.loads(icons_path.read_text(encoding="utf-8"))
        chars_path = self.package_dir / "chars.json"
        self.chars: dict[str, str] = json.loads(chars_path.read_text(encoding="utf-8")) if chars_path.exists() else {}
        self.icons: dict[str, dict] = data["icons"]
        self.aliases: dict[str, dict] = data.get("aliases", {})
        self.defaults = {k: data.get(k, v) for k, v in (("width", 16), ("height", 16), ("left", 0), ("top", 0))}
        version = json.loads((self.package_dir / "package.json").read_text(encoding="utf-8")).get("version", "")
        self.render_px = render_px
        self.source_id = f"{artist.package}:{version}:{render_px}"
        self.known_names: set[str] = set()  # slugs of every taxonomy emoji, set by match()
        self._squashed = {n.replace("-", ""): n for n in [*self.icons, *self.aliases]}

    def find(self, entry) -> tuple[str, str] | None:
        """(icon name, how it was matched: "chars", "name" or "squashed") or None."""
        cps = [f"{c:x}" for c in entry.codepoints]
        for key in ("-".join(cps), "-".join(c for c in cps if c != "fe0f")):
            if key in self.chars and self._resolvable(self.chars[key]):
                return self.chars[key], "chars"
        name = slug(entry.name)
        if name in self.icons or (name in self.aliases and self._alias_ok(name)):
            return name, "name"
        squashed = self._squashed.get(name.replace("-", ""))
        if squashed is not None and (squashed in self.icons or self._alias_ok(squashed)):
            return squashed, "squashed"
        return None

    def _resolvable(self, name: str) -> bool:
        return name in self.icons or name in self.aliases

    def _alias_ok(self, name: str) -> bool:
        parent = self.aliases[name].get("parent", "")
        return parent not in self.known_names or parent == name

    def svg(self, name: str) -> str:
        transform = []
        while name in self.aliases:
            alias = self.aliases[name]
            if alias.get("hFlip"):
                transform.append("h")
            if alias.get("vFlip"):
                transform.append("v")
            name = alias["parent"]
        icon = self.icons[name]
        w, h = icon.get("width", self.defaults["width"]), icon.get("height", self.defaults["height"])
        left, top = icon.get("left", self.defaults["left"]), icon.get("top", self.defaults["top"])
        body = icon["body"]
        if transform:
            sx = -1 if transform.count("h") % 2 else 1
            sy = -1 if transform.count("v") % 2 else 1
            cx, cy = left + w / 2, top + h / 2
            body = f'<g transform="translate({cx} {cy}) scale({sx} {sy}) translate({-cx} {-cy})">{body}</g>'
        return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{body}</svg>')

    def render(self, entry) -> np.ndarray | None:
        from emoji_scenes import crop_to_alpha, rasterize_svg

        found = self.find(entry)
        if found is None:
            return None
        try:
            rgba = rasterize_svg(self.render_px, self.render_px, bytestring=self.svg(found[0]).encode("utf-8"))
        except (MemoryError, ValueError, OSError) as exc:  # cairo refuses a few (CAIRO_STATUS_NO_MEMORY)
            print(f"WARNING: [{self.source_id}] {entry.name}: not rendered ({exc})", file=sys.stderr)
            return None
        return crop_to_alpha(rgba)

    def match(self, entries) -> dict[str, tuple[str, str]]:
        """Every entry's match (by its hex), after learning the taxonomy's names (for the alias rule)."""
        self.known_names = {slug(e.name) for e in entries}
        return {e.hex: m for e in entries if (m := self.find(e)) is not None}


def contact_sheet(style: str, entries, out: Path, how: str = "name", limit: int = 240, cell: int = 64) -> Path:
    """A PNG of the emoji matched by ``how`` (name or squashed), each beside its Noto-free caption index,
    with a text file listing index → name, for checking matches by eye."""
    renderer = IconifyRenderer(style)
    matches = renderer.match(entries)
    chosen = [e for e in entries if e.hex in matches and matches[e.hex][1] == how][:limit]
    cols = 16
    rows = max(1, -(-len(chosen) // cols))
    sheet = Image.new("RGB", (cols * cell, rows * cell), "white")
    lines = []
    for i, e in enumerate(chosen):
        arr = renderer.render(e)
        if arr is None:
            continue
        im = Image.fromarray(arr, "RGBA")
        im.thumbnail((cell - 4, cell - 4))
        sheet.paste(im, ((i % cols) * cell + 2, (i // cols) * cell + 2), im)
        lines.append(f"{i}\t{e.emoji}\t{e.name}\t{e.subgroup}\t{matches[e.hex][0]}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{style}-{how}.png"
    sheet.save(path)
    (out / f"{style}-{how}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from emoji_scenes import load_taxonomy

    ap = argparse.ArgumentParser(description="Match the benchmark's emoji to Iconify packages; print counts")
    ap.add_argument("--sheet", type=Path, help="also write contact sheets of name matches here")
    args = ap.parse_args(argv)
    tax = load_taxonomy()
    print(f"{'style':12s} {'package':44s} {'matched':>8s} {'chars':>6s} {'name':>6s} {'squashed':>8s} labels")
    for style, artist in ARTISTS.items():
        try:
            renderer = IconifyRenderer(style)
        except FileNotFoundError as exc:
            print(f"{style:12s} missing: {exc}")
            continue
        matches = renderer.match(tax.entries)
        hows = [m[1] for m in matches.values()]
        labels = {e.subgroup for e in tax.entries if e.hex in matches}
        print(f"{style:12s} {artist.package + ' ' + artist.version:44s} {len(matches):8d} {hows.count('chars'):6d} "
              f"{hows.count('name'):6d} {hows.count('squashed'):8d} {len(labels)}")
        if args.sheet:
            for how in ("name", "squashed"):
                contact_sheet(style, tax.entries, args.sheet, how)
    return 0


if __name__ == "__main__":
    sys.exit(main())
