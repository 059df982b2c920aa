"""Bad input to `instantsr upscale` / `instantsr eval`: one line that names the problem and what to do, the right
exit code, nothing half-written; and one progress display, without carriage returns in logs."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantsr import cli
from instantsr.io import read_image, save_image

from .conftest import smooth_image


def run(argv: list[str]) -> int:
    """main's exit code, SystemExit(1) (files that failed) included."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("instantsr: error: ")
    return err


@pytest.fixture
def lr_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "lr"
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        save_image(smooth_image(8, 12, i), folder / name)
    return folder


def no_model(tmp_path: Path) -> list[str]:
    """-m of a folder that is no model: a check that answers first ran before the model loads."""
    return ["-m", str(tmp_path / "no_model")]


# ---- 1: a device this machine does not have ---------------------------------------------------------------
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
@pytest.mark.parametrize("command", ["upscale", "eval"])
def test_device_without_cuda_is_one_line(command, device, lr_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if command == "upscale":
        argv = ["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "out"), *no_model(tmp_path)]
    else:
        argv = ["eval", "--sr", str(lr_dir), "--hr", str(lr_dir), "--metrics", "psnr"]
    assert run(argv + ["--device", device]) == 2
    err = one_line(capsys)
    assert f"--device {device}: CUDA is not available on this machine" in err and err.endswith("use --device cpu")
    assert not (tmp_path / "out").exists()


def test_a_device_name_that_is_none(lr_dir, tmp_path, capsys):
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "out"), "--device", "gpu0"]) == 2
    assert "--device gpu0: not a device name" in one_line(capsys)


# ---- 2: images over Pillow's decompression-bomb limit -----------------------------------------------------
def test_image_over_pillow_limit_fails_alone(model_dir, tmp_path, monkeypatch, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    save_image(smooth_image(30, 40, 0), src / "big.png")  # 1200 px: between the limit and twice it (a warning)
    save_image(smooth_image(50, 50, 1), src / "huge.png")  # 2500 px: over twice it (Pillow's own error)
    save_image(smooth_image(12, 16, 2), src / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may get out
        code = run(["upscale", "-i", str(src), "-o", str(out), "-m", str(model_dir)])
    assert code == 1
    captured = capsys.readouterr()
    bombs = [line for line in captured.err.splitlines() if "over Pillow's limit of 1000 pixels" in line]
    assert len(bombs) == 2 and "big.png: 40x30 px (width x height)" in bombs[0] and "huge.png: 50x50 px" in bombs[1]
    assert "Warning" not in captured.err
    assert "1 upscaled, 0 skipped (exist), 2 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["small.png"]


# ---- 3, 4: -o the input folder, -o a file name ------------------------------------------------------------
def test_output_into_the_input_folder_is_refused(model_dir, lr_dir, tmp_path, capsys):
    before = sorted(lr_dir.iterdir())
    spelled_otherwise = os.path.join(str(lr_dir), ".", "..", "lr", "")  # the same folder once resolved
    assert run(["upscale", "-i", str(lr_dir), "-o", spelled_otherwise, *no_model(tmp_path)]) == 2
    err = one_line(capsys)
    assert "the outputs would replace the inputs" in err and "--suffix" in err
    assert sorted(lr_dir.iterdir()) == before
    # with a suffix the names differ: writing beside the inputs is fine
    assert run(["upscale", "-i", str(lr_dir), "-o", str(lr_dir), "--suffix", "_x4", "-m", str(model_dir)]) == 0
    assert read_image(lr_dir / "a_x4.png").size == (32, 48)


def test_output_file_name_for_one_input(model_dir, lr_dir, tmp_path, capsys):
    out = tmp_path / "res" / "result.jpg"
    assert run(["upscale", "-i", str(lr_dir / "a.png"), "-o", str(out), "-m", str(model_dir)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["result.jpg"]  # the file itself, no temp file beside it
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (48, 32)
    capsys.readouterr()
    assert run(["upscale", "-i", str(lr_dir / "a.png"), "-o", str(out), "--ext", "png", *no_model(tmp_path)]) == 2
    assert "--ext png disagrees" in one_line(capsys)


def test_output_file_name_for_a_folder_is_refused(lr_dir, tmp_path, capsys):
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "result.png"), *no_model(tmp_path)]) == 2
    err = one_line(capsys)
    assert "result.png: -i is a folder, so -o is the output folder" in err
    assert not (tmp_path / "result.png").exists()


# ---- 5: an output folder that cannot be written -----------------------------------------------------------
def test_unwritable_output_folder_is_found_first(lr_dir, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))  # root too
    assert run(["upscale", "-i", str(lr_dir), "-o", str(locked), *no_model(tmp_path)]) == 2
    assert f"{locked}: is not writable; give -o a folder" in one_line(capsys)
    assert run(["upscale", "-i", str(lr_dir), "-o", str(locked / "sub"), *no_model(tmp_path)]) == 2
    assert f"{locked / 'sub'}: cannot be created: {locked} is not writable" in one_line(capsys)
    assert list(locked.iterdir()) == []
    assert run(["eval", "--sr", str(lr_dir), "--hr", str(lr_dir), "--metrics", "psnr",
                "--csv", str(locked / "rows.csv")]) == 2  # before the scoring, not after it
    assert f"{locked}: is not writable; give --csv a folder" in one_line(capsys)
    (tmp_path / "afile").write_text("")
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "afile"), *no_model(tmp_path)]) == 2
    assert "afile: is a file, not a folder" in one_line(capsys)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_output_under_proc_is_named_unwritable(lr_dir, tmp_path, capsys):
    # /proc's permission bits let root write, its file system does not: found by trying, named as unwritable
    assert run(["upscale", "-i", str(lr_dir), "-o", "/proc/instantsr-out", *no_model(tmp_path)]) == 2
    err = one_line(capsys)
    assert "/proc/instantsr-out: cannot be created: /proc is not writable; give -o a folder" in err
    assert "No such file" not in err


def test_folder_refusing_files_is_found_by_trying(lr_dir, tmp_path, monkeypatch, capsys):
    refusing = tmp_path / "mounted_read_only"  # writable bits, a file system that says no (EROFS)
    refusing.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == refusing:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert run(["upscale", "-i", str(lr_dir), "-o", str(refusing), *no_model(tmp_path)]) == 2
    assert f"{refusing}: is not writable; give -o a folder" in one_line(capsys)
    assert run(["upscale", "-i", str(lr_dir), "-o", str(refusing / "new"), *no_model(tmp_path)]) == 2
    assert f"{refusing / 'new'}: cannot be created: {refusing} is not writable" in one_line(capsys)
    assert list(refusing.iterdir()) == []
    monkeypatch.undo()
    out = tmp_path / "fine" / "out"  # the trial leaves nothing behind: no file, no folder
    assert run(["upscale", "-i", str(lr_dir), "-o", str(out), *no_model(tmp_path)]) == 2  # no model: after the check
    assert "not an instantsr model folder" in one_line(capsys)
    assert not (tmp_path / "fine").exists()


# ---- 6: weights holding NaN -------------------------------------------------------------------------------
def test_model_with_nan_weights_is_refused(model_dir, lr_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    weights = model / "backbone" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    name = min(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name][0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "out"), "-m", str(model)]) == 2
    err = one_line(capsys)
    assert f"{weights}: 1 tensor(s) hold NaN or Inf (e.g. {name}); the file is damaged" in err
    assert not (tmp_path / "out").exists()


# ---- 7: eval names what it leaves out, in plain lines; GIFs are images --------------------------------------
def test_eval_names_hr_images_without_partner_in_plain_lines(tmp_path, capsys):
    for i in range(7):
        save_image(smooth_image(16, 16, i), tmp_path / "hr" / f"h{i}.png")
    save_image(smooth_image(16, 16, 0), tmp_path / "sr" / "h0.png")
    save_image(smooth_image(16, 12, 1), tmp_path / "sr" / "h1.png")  # the wrong size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plain lines, not Python warnings
        assert run(["eval", "--sr", str(tmp_path / "sr"), "--hr", str(tmp_path / "hr"), "--metrics", "psnr"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{tmp_path / 'sr'}: 1 image(s) left out: h1.png is 12x16 px, its HR image 16x16 px "
                   "(width x height)",
                   f"{tmp_path / 'hr'}: 5 HR image(s) have no SR partner: h2.png, h3.png, h4.png, h5.png, h6.png"]


def gif(path: Path, frames: int) -> None:
    pictures = [Image.fromarray(np.full((12, 16, 3), 60 * i, np.uint8)) for i in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=frames > 1, append_images=pictures[1:])


def test_gifs_are_upscaled_and_animations_said(model_dir, tmp_path, capsys):
    gif(tmp_path / "in" / "still.gif", 1)
    gif(tmp_path / "in" / "moving.gif", 3)
    assert run(["upscale", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["moving.png", "still.png"]
    assert read_image(tmp_path / "out" / "moving.png").size == (48, 64)
    notes = [line for line in capsys.readouterr().err.splitlines() if "animated" in line]
    assert notes == [f"{tmp_path / 'in' / 'moving.gif'}: animated (3 frames); only the first frame is upscaled"]


def test_empty_file_is_said_to_be_empty(model_dir, lr_dir, tmp_path, capsys):
    (lr_dir / "empty.png").write_bytes(b"")
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 1
    captured = capsys.readouterr()
    assert f"failed: {lr_dir / 'empty.png'}: empty file (0 bytes)" in captured.err.splitlines()
    assert "3 upscaled, 0 skipped (exist), 1 failed" in captured.out


# ---- 8: a missing input before the heavy imports ----------------------------------------------------------
def test_missing_input_is_told_before_torch_loads():
    code = ("import sys; from instantsr.cli import main; r = main(['upscale', '-i', 'nothere', '-o', 'x']); "
            "print(r, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]
    assert done.stderr.strip() == "instantsr: error: nothere: no such file or folder"


# ---- 9, 10: sizes as width x height; out of memory suggests --tile ------------------------------------------
def test_too_small_image_is_named_width_by_height(model_dir, tmp_path, capsys):
    save_image(smooth_image(5, 9, 0), tmp_path / "in" / "thin.png")
    assert run(["upscale", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 1
    assert "thin.png: image is 9x5 px (width x height); the smallest side accepted is 8 px" in capsys.readouterr().err


@pytest.mark.parametrize("error, hint", [
    ("CUDA out of memory. Tried to allocate 20.00 GiB", ", a smaller --batch-size, or --device cpu"),
    ("DefaultCPUAllocator: not enough memory: you tried to allocate 20 GiB", ", a smaller --batch-size")])
def test_out_of_memory_suggests_tile(error, hint, model_dir, lr_dir, tmp_path, monkeypatch, capsys):
    from instantsr.pipeline import Upscaler

    def oom(*args, **kwargs):
        raise RuntimeError(error + "\nmore detail")

    monkeypatch.setattr(Upscaler, "upscale_loaded", oom)
    assert run(["upscale", "-i", str(lr_dir / "a.png"), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"a.png: out of memory ({error}); try --tile 256 (or a smaller one){hint}")
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


# ---- 11: one progress display -----------------------------------------------------------------------------
def test_progress_in_a_log_is_one_line_per_image(model_dir, lr_dir, tmp_path, capsys):
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 0
    out = capsys.readouterr()
    assert "\r" not in out.err
    assert out.err.splitlines() == [f"{lr_dir / n} -> {tmp_path / 'out' / n} ({i}/3)"
                                    for i, n in enumerate(["a.png", "b.png", "c.png"], 1)]
    assert out.out.strip() == "3 upscaled, 0 skipped (exist), 0 failed"


def test_progress_on_a_terminal_is_one_bar(model_dir, tmp_path, monkeypatch, capsys):
    save_image(smooth_image(24, 24, 0), tmp_path / "in" / "big.png")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    base = ["-o", str(tmp_path / "out"), "-m", str(model_dir), "--tile", "8"]
    assert run(["upscale", "-i", str(tmp_path / "in" / "big.png"), *base]) == 0
    err = capsys.readouterr().err
    assert "big.png" in err and "tile" in err  # one image: its tiles are the bar
    assert "upscaling" not in err and "denoising" not in err
    save_image(smooth_image(24, 24, 1), tmp_path / "in" / "other.png")
    assert run(["upscale", "-i", str(tmp_path / "in"), *base]) == 0
    err = capsys.readouterr().err
    assert "upscaling" in err and "img" in err and "tile" not in err  # several: the images are the bar


def test_one_untiled_image_on_a_terminal_spins_and_says_where_it_went(model_dir, tmp_path, monkeypatch, capsys):
    src, out = tmp_path / "in" / "one.png", tmp_path / "out"
    save_image(smooth_image(12, 16, 0), src)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run(["upscale", "-i", str(src), "-o", str(out), "-m", str(model_dir)]) == 0
    err = capsys.readouterr().err
    assert "loading the model" in err and "one.png: upscaling" in err  # the spinner's lines (redrawn with \r)
    assert err.endswith(f"\r{src} -> {out / 'one.png'}\n")  # after the spinner cleared its line
    assert run(["upscale", "-i", str(src), "-o", str(out), "-m", str(model_dir)]) == 0  # exists: skipped
    captured = capsys.readouterr()
    assert "->" not in captured.err and "upscaling" not in captured.err
    assert "0 upscaled, 1 skipped (exist), 0 failed" in captured.out


def test_several_images_on_a_terminal_say_where_each_went(model_dir, lr_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    save_image(smooth_image(8, 12, 0), out / "b.png")  # there already: skipped, and not listed
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run(["upscale", "-i", str(lr_dir), "-o", str(out), "-m", str(model_dir)]) == 0
    lines = capsys.readouterr().err.split("\n")
    assert [line for line in lines if "->" in line] == [f"{lr_dir / n} -> {out / n}" for n in ("a.png", "c.png")]


# ---- 12: --steps, --sampler and --tile checked once, before the first image ---------------------------------
@pytest.mark.parametrize("option, says", [
    (["--steps", "3"], "sinsr model: 3 steps is not possible (a distilled model runs at its own step count: "
                       "--steps 1)"),
    (["--sampler", "ddim"], "sinsr model: no sampler 'ddim'; a resshift model samples with deterministic"),
])
def test_model_options_are_checked_once_before_the_first_image(option, says, model_dir, lr_dir, tmp_path, capsys):
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "out"), "-m", str(model_dir), *option]) == 2
    assert says in one_line(capsys)  # one line and exit 2, not a failure per image
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, says", [
    (["--tile", "-5"], "--tile -5: give a tile size in LR pixels, or 0 for no tiling"),
    (["--steps", "0"], "--steps 0: give 1 or more (default: the model's own)"),
])
def test_impossible_counts_are_refused_before_the_model_loads(option, says, lr_dir, tmp_path, capsys):
    assert run(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "out"), *no_model(tmp_path), *option]) == 2
    assert one_line(capsys) == f"instantsr: error: {says}"


def test_tile_0_is_no_tiling(model_dir, tmp_path):
    save_image(smooth_image(24, 24, 0), tmp_path / "in" / "big.png")
    for name, tile in (("untiled", []), ("tile0", ["--tile", "0"]), ("tiled", ["--tile", "8"])):
        argv = ["upscale", "-i", str(tmp_path / "in"), "-o", str(tmp_path / name), "-m", str(model_dir), *tile]
        assert run(argv) == 0
    pixels = {name: read_image(tmp_path / name / "big.png").rgb for name in ("untiled", "tile0", "tiled")}
    assert torch.equal(pixels["tile0"], pixels["untiled"])
