"""Write the app's demo folder `resources/demo/`: emoji scenes, some with confirmed `.txt` sidecars.

    python bench/make_demo.py [--out resources/demo] [--noto 40] [--openmoji 16]

Half of each style's scenes keep their `.txt` sidecar (as if a person had confirmed them), the
other half have none (for the model to propose). Deterministic (seed 7, set names `*-demo`).
Licences of the artwork: resources/LICENSES.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emoji_scenes import build_demo  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("resources/demo"))
    ap.add_argument("--noto", type=int, default=40)
    ap.add_argument("--openmoji", type=int, default=16)
    ap.add_argument("--cache", type=Path, default=Path("data/emoji"), help="glyph caches of the benchmark build")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for style, count in (("noto", args.noto), ("openmoji", args.openmoji)):
            folder = build_demo(Path(tmp) / style, count=count, style=style, seed=7,
                                cache_dir=args.cache if args.cache.is_dir() else None)
            for i, image in enumerate(sorted(folder.glob("*.jpg"))):
                stem = f"{style}-{i:03d}"
                Image.open(image).save(args.out / f"{stem}.jpg", quality=82, optimize=True)
                if i % 2 == 0:
                    shutil.copy(image.with_suffix(".txt"), args.out / f"{stem}.txt")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(list(args.out.glob('*.jpg')))} scenes to {args.out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
