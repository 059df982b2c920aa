"""`instantsr compare`: strips of windows of LR-only photos, bicubic | models | Real-ESRGAN, and an index page."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from instantsr import weights
from instantsr.cli import main
from instantsr.bench import bicubic_candidate
from instantsr.compare import Window, upscale_window, windows_of
from instantsr.evaluate import bicubic_baseline
from instantsr.io import read_image, save_image
from instantsr.pipeline import Upscaler

from .conftest import smooth_image
from .test_bad_input import run


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    flat = torch.full((3, 72, 96), 0.5)
    flat[:, :, :40] = smooth_image(72, 40, 3) * 0.8 + 0.1  # a textured left part, a flat grey right part
    flat[:, :, :40] += 0.2 * (torch.rand(3, 72, 40) - 0.5)
    save_image(flat.clamp(0, 1), folder / "a.png")
    save_image(smooth_image(64, 80, 1), folder / "b.jpg")
    return folder


def test_windows_are_picked_detailed_and_flat_or_given(photos):
    lr = read_image(photos / "a.png").rgb
    detailed, flat = windows_of(lr, (), 24, "a.png")
    assert (detailed.kind, flat.kind) == ("detailed", "flat")
    assert detailed.x + 24 <= 40 and flat.x >= 40  # in the textured part, and in the flat grey one
    assert windows_of(lr, [Window(10, 5, 16)], 24, "a.png") == [Window(10, 5, 16)]
    with pytest.raises(ValueError, match="reaches past the photo"):
        windows_of(lr, [Window(90, 0, 16)], 24, "a.png")


def test_a_window_with_context_is_the_whole_photo_output_away_from_its_edges(photos, model_dir):
    lr = read_image(photos / "b.jpg").rgb
    up = Upscaler.from_pretrained(model_dir)
    run = lambda lq: up.upscale_tensor(lq, seed=0)  # noqa: E731
    win = Window(30, 20, 16)
    whole = upscale_window(run, lr, win, 4, None)
    assert whole.shape == (3, 64, 64)
    torch.testing.assert_close(whole, up.upscale_tensor(lr[None], seed=0)[0, :, 80:144, 120:184])
    # bicubic's support is 2 LR px (4 with antialiasing off the edges): 8 px of context give it exactly
    bicubic = bicubic_candidate(4)
    bic = lambda lq: bicubic.run(lq, None, 0, 1)  # noqa: E731
    torch.testing.assert_close(upscale_window(bic, lr, win, 4, 8), upscale_window(bic, lr, win, 4, None))
    assert upscale_window(run, lr, Window(0, 0, 16), 4, 8).shape == (3, 64, 64)  # clipped at the photo's corner


def test_compare_writes_a_strip_per_photo_and_an_index(photos, model_dir, tmp_path, capsys):
    weights.fetch(["realesrgan_x4plus"], verbose=False)  # cached
    out = tmp_path / "out"
    code = main(["compare", "-i", str(photos), "-o", str(out), "-m", f"tiny={model_dir}", "--size", "24"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "index.html"]
    strip = np.asarray(Image.open(out / "a.png").convert("RGB"))
    # two windows of 24 LR px, each 96 px tall at 100 %, under an 18-px label row; LR | bicubic | tiny | realesrgan
    assert strip.shape == (18 + 2 * 96, 4 * 96, 3)
    lr = read_image(photos / "a.png").rgb
    detailed = windows_of(lr, (), 24, "a.png")[0]
    bic = bicubic_baseline(lr, (288, 384))[:, detailed.y * 4:detailed.y * 4 + 96, detailed.x * 4:detailed.x * 4 + 96]
    panel = torch.from_numpy(strip[18:114, 96:192].copy()).permute(2, 0, 1).float() / 255
    assert (panel - bic).abs().max() < 0.05  # the bicubic column (8 px of context: exact, up to 8-bit rounding)
    assert (strip[18:114, 288:384].astype(int) - strip[18:114, 96:192]).__abs__().mean() > 1  # Real-ESRGAN differs
    page = (out / "index.html").read_text()
    assert "a.png" in page and "b.jpg" in page and "LR | bicubic | tiny | realesrgan" in page
    assert "open" in capsys.readouterr().err


def test_compare_says_what_is_wrong_in_one_line(photos, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (photos / "empty.png").write_bytes(b"")
    code = run(["compare", "-i", str(photos), "-o", str(out), "-m", str(model_dir), "--baseline", "bicubic",
                "--crop", "4,4,16"])
    err = capsys.readouterr().err
    assert code == 1 and f"failed: {photos / 'empty.png'}: empty file (0 bytes)" in err  # the others are written
    assert (out / "a.png").is_file() and (out / "b.png").is_file()
    assert main(["compare", "-i", str(photos), "-o", str(out), "--baseline", "lanczos"]) == 2
    assert "--baseline lanczos: choose from bicubic, realesrgan" in capsys.readouterr().err
    assert main(["compare", "-i", str(photos), "-o", str(out), "--crop", "4,4"]) == 2
    assert "--crop 4,4: give X,Y,SIZE" in capsys.readouterr().err
