"""Distributed upscaling: `instantsr upscale` under torchrun (2 CPU processes, gloo) and the Ray Data recipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantsr import cli
from instantsr.io import save_image
from instantsr.pipeline import Upscaler, upscale_paths
from instantsr.ray_recipe import UpscaleBatch, list_inputs

from .conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
VALID = [f"im{i}.png" for i in range(5)]



@pytest.fixture
def inputs(tmp_path) -> Path:
    """Five small images and a corrupt file (sorted first: rank 0 of 2 gets it)."""
    folder = tmp_path / "in"
    for i, name in enumerate(VALID):
        save_image(smooth_image(12, 16, i), folder / name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir())}


def same_pixels(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---- torchrun: 2 processes, each a share of the files ----------------------------------------------------------
def torchrun_upscale(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "instantsr.cli", "upscale", *args, "--device", "cpu"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)


@pytest.mark.slow
def test_torchrun_two_processes_share_files_like_one(model_dir, inputs, tmp_path, capsys):
    out, single = tmp_path / "out", tmp_path / "single"
    args = ["-i", str(inputs), "-o", str(out), "-m", str(model_dir), "--seed", "3"]
    run = torchrun_upscale(*args)
    log = run.stdout + run.stderr
    # files sorted: corrupt, im0..im4; rank r takes files[r::2] -> rank 0: corrupt, im1, im3; rank 1: im0, im2, im4
    assert "[0/2] 2 upscaled, 0 skipped (exist), 1 failed" in run.stdout, log
    assert "[1/2] 3 upscaled, 0 skipped (exist), 0 failed" in run.stdout, log
    assert run.stdout.count("total:") == 1  # printed once, by the main process, with the sums
    assert "total: 5 upscaled, 0 skipped (exist), 1 failed (2 processes)" in run.stdout
    assert "[0/2] failed: " in run.stderr and "corrupt.png" in run.stderr and "[1/2] failed" not in run.stderr
    assert run.returncode != 0  # a file failed on one process: the launch fails
    # 2 + 3 writes for 5 distinct outputs: every input written once, by exactly one process
    assert sorted(p.name for p in out.iterdir()) == VALID  # no temp files left either
    # one process gives the same pixels (each image's noise comes from the seed alone)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["upscale", *args[:2], "-o", str(single), *args[4:], "--device", "cpu"])
    assert exit_.value.code == 1
    assert "5 upscaled, 0 skipped (exist), 1 failed" in capsys.readouterr().out
    assert same_pixels(pixels(out), pixels(single))
    # again: every output is there, so nothing is done twice
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = torchrun_upscale(*args)
    assert "[0/2] 0 upscaled, 2 skipped (exist), 1 failed" in again.stdout, again.stdout + again.stderr
    assert "[1/2] 0 upscaled, 3 skipped (exist), 0 failed" in again.stdout
    assert "total: 0 upscaled, 5 skipped (exist), 1 failed (2 processes)" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_one_process_sets_up_no_process_group(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert cli.launched_world_size() == 4
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: the plain path
    save_image(smooth_image(12, 12, 0), tmp_path / "in" / "a.png")
    assert cli.main(["upscale", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 0
    assert capsys.readouterr().out.strip() == "1 upscaled, 0 skipped (exist), 0 failed"
    assert not torch.distributed.is_initialized()


# ---- the Ray Data recipe --------------------------------------------------------------------------------------
def test_upscale_batch_is_plain_python(model_dir, inputs, tmp_path, capsys):
    files = sorted(inputs.iterdir())
    assert list_inputs(inputs) == files == list_inputs(str(inputs / "*.png")) == list_inputs(files[::-1])
    assert list_inputs(str(tmp_path / "**" / "im0.png")) == [inputs / "im0.png"]
    with pytest.raises(FileNotFoundError, match="no image files match"):
        list_inputs(str(tmp_path / "nothing*.png"))
    fn = UpscaleBatch(model=model_dir, out_dir=tmp_path / "out", device="cpu")  # the model, once per worker
    ref = tmp_path / "ref"
    assert upscale_paths(fn.upscaler, files, ref, seed=0, progress=False) == (5, 0, 1)
    capsys.readouterr()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "im4.png").write_bytes((ref / "im4.png").read_bytes())  # done before: skipped
    res = fn({"path": np.array([str(f) for f in files])})
    assert list(res) == ["path", "output", "status"] and len(res["status"]) == 6
    status = dict(zip((Path(p).name for p in res["path"]), res["status"]))
    assert status.pop("corrupt.png").startswith(f"failed: {inputs / 'corrupt.png'}: not a readable image")
    assert status == {"im0.png": "upscaled", "im1.png": "upscaled", "im2.png": "upscaled", "im3.png": "upscaled",
                      "im4.png": "skipped"}
    assert [Path(p).name for p in res["output"]] == ["corrupt.png"] + VALID
    assert same_pixels(pixels(tmp_path / "out"), pixels(ref))  # the same outputs as `instantsr upscale`
    assert set(fn({"path": [str(inputs / "im1.png")]})["status"]) == {"skipped"}

    # decoded arrays (ray.data.read_images(..., include_paths=True)): "path" only names the output
    arrays = [np.asarray(Image.open(inputs / n)) for n in VALID[:2]]
    res = fn({"path": np.array([str(inputs / n) for n in VALID[:2]]), "image": arrays})
    assert list(res["status"]) == ["skipped", "skipped"]
    fn.out_dir, fn.suffix = tmp_path / "arrays", "_x4"
    assert list(fn({"path": [str(inputs / n) for n in VALID[:2]], "image": arrays})["status"]) == ["upscaled"] * 2
    for n in VALID[:2]:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "arrays" / n.replace(".", "_x4."))),
                              np.asarray(Image.open(ref / n)))
    with pytest.raises(KeyError, match="'path' column"):
        fn({"image": arrays})


@pytest.mark.slow
def test_ray_data_pipeline(model_dir, inputs, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    from instantsr.ray_recipe import run

    ref = tmp_path / "ref"
    upscale_paths(Upscaler.from_pretrained(model_dir), list_inputs(inputs), ref, seed=0, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "im2.png").write_bytes((ref / "im2.png").read_bytes())
    try:
        counts = run(str(inputs / "*.png"), out, model_dir, concurrency=1, rows_per_batch=2,
                     init_kwargs=dict(num_cpus=2, include_dashboard=False, log_to_driver=False))
    finally:
        ray.shutdown()
    assert counts == (4, 1, 1)
    captured = capsys.readouterr()
    assert "4 upscaled, 1 skipped (exist), 1 failed" in captured.out
    assert f"failed: {inputs / 'corrupt.png'}: not a readable image" in captured.err
    assert same_pixels(pixels(out), pixels(ref))


def test_ray_is_not_imported_with_the_package():
    code = ("import sys, instantsr.ray_recipe, instantsr.cli; "
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
