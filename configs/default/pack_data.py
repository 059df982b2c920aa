"""Pack ../shared/data/train small enough to travel to a lent GPU machine (64 MiB with code and wheels).

BSDS500 is copied as is; the high-resolution photos are resized (Lanczos) so their long side is at most
--max-side and saved as JPEG quality 95. Usage: python configs/default/pack_data.py ../shared/data/train .carry/train
"""

import argparse
import shutil
from pathlib import Path

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--max-side", type=int, default=1024)
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            if max(im.size) <= args.max_side:
                shutil.copyfile(path, out)
                continue
            k = args.max_side / max(im.size)
            im = im.convert("RGB").resize((round(im.width * k), round(im.height * k)), Image.LANCZOS)
            im.save(out.with_suffix(".jpg"), quality=95)


if __name__ == "__main__":
    main()
