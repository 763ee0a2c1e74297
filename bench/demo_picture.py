"""README's demo picture: `make demo`'s predict overlays side by side with the legend, as predict wrote them.

    python bench/demo_picture.py runs/demo/predict/<model>-demo-val docs/demo_predict.png

Nothing is drawn here: the overlays and the legend are `nascli predict`'s files, only placed in one row
(each overlay upscaled 2x, nearest neighbour, so the 96x96 images can be seen) and saved as a palette PNG
to keep it small.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a RUN/predict/<name>/ folder")
    p.add_argument("out", type=Path)
    p.add_argument("--scale", type=int, default=2)
    a = p.parse_args()
    overlays = [Image.open(f).convert("RGB") for f in sorted(a.folder.glob("*_overlay.png"))]
    if not overlays:
        raise SystemExit(f"no *_overlay.png in {a.folder}")
    overlays = [im.resize((im.width * a.scale, im.height * a.scale), Image.NEAREST) for im in overlays]
    legend = Image.open(a.folder / "legend.png").convert("RGB")
    gap = 4
    height = max([im.height for im in overlays] + [legend.height])
    width = sum(im.width + gap for im in overlays) + legend.width
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for im in overlays + [legend]:
        sheet.paste(im, (x, 0))
        x += im.width + gap
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(a.out, optimize=True)
    print(f"wrote {a.out} ({a.out.stat().st_size // 1024} KB, {width}x{height})")


if __name__ == "__main__":
    main()
