"""Split the training photos into a training part and a held-out validation set, the set on which checkpoints,
loss weights and settings are chosen (RealSR, Set14 and ImageNet256 are test sets: reported, never chosen on).

    python configs/validation/split.py ../shared/data/train .carry/split

Every 10th image of the sorted listing (index 5, 15, 25, ...) is held out: 40 of BSDS500's 400 and 4 of the 38
photos. OUT/train/ links the other 394 (same relative paths; train with `--data OUT/train`); OUT/val/hr/ holds a
256x256 centre crop of each held-out image (photos first resized to a long side of 1024 px, Lanczos, as
configs/default/pack_data.py packs them) and OUT/val/lr/ its 64x64 LR made by the Real-ESRGAN degradation with
seed 0 (`instantsr degrade`'s per-image seeds), so the set is the same on every machine. OUT/val_bicubic/ has the
same HR crops with plain bicubic LR: the mild LR of real photos, on which the no-reference measures (grid,
colour shift against the LR) mean what they say; against the Real-ESRGAN LR, whose noise and JPEG move the
colours, the HR crops themselves read 5.4 levels of colour shift.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from instantsr.data import find_images
from instantsr.degrade import degrade_folder

HOLD_OUT_EVERY, HOLD_OUT_AT = 10, 5
CROP, MAX_SIDE = 256, 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the training HR folder (../shared/data/train)")
    ap.add_argument("out", help="where train/ and val/{hr,lr}/ go")
    ap.add_argument("--seed", type=int, default=0, help="degradation seed of the validation LR")
    args = ap.parse_args()
    src, out = Path(args.src).resolve(), Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    held = []
    for i, path in enumerate(find_images(src)):
        if i % HOLD_OUT_EVERY == HOLD_OUT_AT:
            held.append(path)
            continue
        link = out / "train" / path.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    with tempfile.TemporaryDirectory() as tmp:
        for path in held:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if max(im.size) > MAX_SIDE:
                    k = MAX_SIDE / max(im.size)
                    im = im.resize((round(im.width * k), round(im.height * k)), Image.LANCZOS)
                left, top = (im.width - CROP) // 2, (im.height - CROP) // 2
                # names of the two sources cannot clash: parent folder in the name
                im.crop((left, top, left + CROP, top + CROP)).save(Path(tmp) / f"{path.parent.name}_{path.stem}.png")
        n = degrade_folder(tmp, out / "val", scale=4, preset="realesrgan", seed=args.seed)
        degrade_folder(tmp, out / "val_bicubic", scale=4, preset="bicubic", seed=args.seed)
    print(f"{out}/train: {sum(1 for _ in (out / 'train').rglob('*') if _.is_file())} images; "
          f"{out}/val and {out}/val_bicubic: {n} pairs each of {CROP} px HR, {CROP // 4} px LR")


if __name__ == "__main__":
    main()
