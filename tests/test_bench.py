"""`instantsr bench` on tiny models built in place: files, one row per (model, steps), passes, parameter
counts, PSNR equal to the eval code's, timing statistics, plots and conditions."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantsr import weights
from instantsr.bench import Candidate, parse_model_spec
from instantsr.cli import main
from instantsr.codecs import PixelUnshuffleCodec
from instantsr.degrade import quantize
from instantsr.diffusion.resshift import ResShiftSchedule
from instantsr.evaluate import evaluate_folder
from instantsr.imresize import imresize
from instantsr.io import read_image, save_image
from instantsr.metrics import MetricSuite
from instantsr.model import SRModel
from instantsr.nets.rrdbnet import load_realesrgan_x4plus
from instantsr.nets.unet import ConditionalUNet
from instantsr.timing import Setting, speed_settings, time_setting

from .conftest import smooth_image

METRICS = ["psnr", "ssim", "lpips", "dists"]


def tiny_model(folder: Path, method: str, steps: int, seed: int) -> SRModel:
    torch.manual_seed(seed)
    model = SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4),
                    ResShiftSchedule(), scale=4, method=method, steps=steps,
                    max_steps=None if method == "resshift" else steps)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One bench run: a tiny teacher and student, Real-ESRGAN, bicubic, three 16 -> 64 pairs."""
    weights.fetch(["alexnet", "vgg16", "lpips_alex", "dists", "realesrgan_x4plus"], verbose=False)  # cached
    root = tmp_path_factory.mktemp("bench")
    teacher = tiny_model(root / "runs" / "teacher" / "model", "resshift", 15, 0)
    student = tiny_model(root / "student", "sinsr", 1, 1)
    for i in range(3):
        hr = smooth_image(64, 64, i)
        save_image(hr, root / "hr" / f"im{i}.png")
        save_image(quantize(imresize(hr[None], scale=0.25))[0], root / "lr" / f"im{i}.png")
    out = root / "out"
    code = main(["bench", "-m", str(root / "runs" / "teacher"), "-m", f"student={root / 'student'}",
                 "--baseline", "realesrgan", "--lr", str(root / "lr"), "--hr", str(root / "hr"), "-o", str(out),
                 "--steps", "1,2", "--sizes", "16,24", "--batch", "1,2", "--tile", "16", "--tile-overlap", "4",
                 "--repeats", "1", "--warmup", "0", "--crop", "8", "--save-sr", "--fp32"])
    assert code == 0
    with open(out / "bench.csv", newline="") as f:
        rows = {(r["name"], int(r["steps"])): r for r in csv.DictReader(f)}
    return {"root": root, "out": out, "rows": rows, "teacher": teacher, "student": student}


def test_files_written(bench_run):
    out = bench_run["out"]
    for name in ("report.md", "bench.csv", "images.csv", "conditions.json", "perception_distortion.png",
                 "speed_vs_steps.png", "strip.png"):
        assert (out / name).is_file(), name


def test_one_row_per_model_and_steps_with_passes_and_params(bench_run):
    rows = bench_run["rows"]
    # the teacher (method resshift) at each --steps, named after its run folder; the student at its own 1 step
    assert set(rows) == {("bicubic", 0), ("realesrgan", 1), ("teacher", 1), ("teacher", 2), ("student", 1)}
    for (name, steps), r in rows.items():
        assert int(r["passes_per_img"]) == steps  # counted by a hook on the network, not copied from steps
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert int(rows["teacher", 1]["params"]) == int(rows["teacher", 2]["params"]) == n(bench_run["teacher"])
    assert int(rows["student", 1]["params"]) == n(bench_run["student"])
    assert int(rows["realesrgan", 1]["params"]) == n(load_realesrgan_x4plus()) > 16_000_000
    assert int(rows["bicubic", 0]["params"]) == 0


def test_quality_equals_the_eval_code(bench_run):
    rows, root, out = bench_run["rows"], bench_run["root"], bench_run["out"]
    suite = MetricSuite(METRICS)
    for (name, steps), r in rows.items():
        if name == "bicubic":  # as `instantsr eval --baseline bicubic`
            _, summary = evaluate_folder(None, root / "hr", METRICS, lr_dir=root / "lr", suite=suite)
        else:
            sr_dir = out / "sr" / (f"{name}-s{steps}" + (f"-{r['sampler']}" if r["sampler"] else ""))
            assert sorted(p.name for p in sr_dir.iterdir()) == ["im0.png", "im1.png", "im2.png"]
            _, summary = evaluate_folder(sr_dir, root / "hr", METRICS, suite=suite)
        for m in METRICS:
            assert float(r[m]) == pytest.approx(summary[m], rel=1e-9, abs=1e-12), (name, steps, m)
        assert int(r["images"]) == 3
    assert 15 < float(rows["bicubic", 0]["psnr"]) < 60
    per_image = list(csv.DictReader(open(out / "images.csv")))
    assert len(per_image) == 3 * len(rows)


def test_speed_columns(bench_run):
    rows = bench_run["rows"]
    keys = ["16_b1", "16_b2", "24_tile16"]  # 16 fits the tile (both batches); 24 runs tiled
    for r in rows.values():
        for k in keys:
            med, lo, hi = (float(r[f"s_img_{k}{s}"]) for s in ("", "_min", "_max"))
            assert 0 < lo <= med <= hi < 60
            assert float(r[f"mem_mib_{k}"]) >= 0
        assert int(r["batch_16_b2"]) == 2
        assert float(r["peak_mem_mib"]) == max(float(r[f"mem_mib_{k}"]) for k in keys)


def test_plots_strip_and_report(bench_run):
    out, rows = bench_run["out"], bench_run["rows"]
    for name in ("perception_distortion.png", "speed_vs_steps.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size == (640, 480)
            assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something is drawn
    with Image.open(out / "strip.png") as im:
        # 3 images x (LR, bicubic, 4 model rows, HR), each panel 192 px high and wide, a label band of 18 px
        assert im.size == (7 * 192, 18 + 3 * 192)
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    assert lines[0] == "# instantsr bench" and f"torch_version {torch.__version__}" in lines[2]
    assert ("| model | steps | passes/img | params | s/img 16→64 b1 | s/img 16→64 b2 | s/img 24→96 tile 16 |"
            in report)
    table = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| model")]
    assert len(table) == len(rows)
    assert "![strip](strip.png)" in report


def test_conditions(bench_run):
    cond = json.loads((bench_run["out"] / "conditions.json").read_text())
    assert cond["torch_version"] == torch.__version__ and cond["threads"] == torch.get_num_threads()
    assert cond["device"] == "cpu" and cond["dtype"] == "float32" and cond["cpu"]
    assert cond["date"][:4].isdigit() and cond["quality_images"] == 3
    assert cond["settings"]["steps"] == [1, 2] and cond["settings"]["batches"] == [1, 2]


def test_time_setting_statistics_and_batch_halving():
    calls = []

    def run(lq, tile, overlap, batch):
        calls.append(lq.shape[0])
        if lq.shape[0] > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        time.sleep(0.002 * lq.shape[0])
        return lq

    cand = Candidate("fake", 1, 0, "", run)
    t = time_setting(cand, Setting(8, 8), torch.device("cpu"), repeats=3, warmup=1, overlap=0, tile_batch=1)
    assert t["batch"] == 2 and calls == [8, 4, 2, 2, 2, 2]
    assert 0.001 < t["min"] <= t["q1"] <= t["median"] <= t["q3"] <= t["max"] < 1
    assert not math.isnan(t["mem_mib"])


def test_out_of_memory_at_one_image_is_recorded_not_fatal():
    def run(lq, tile, overlap, batch):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes (simulated)")

    t = time_setting(Candidate("fake", 1, 0, "", run), Setting(8, 1), torch.device("cpu"), repeats=1, warmup=0,
                     overlap=0, tile_batch=1)
    assert t["median"] is None and t["runs"] == 0 and "not enough memory" in t["oom"]


def test_untiled_scaling_table_and_plot(tmp_path):
    """--untiled times the sizes above --tile both ways; the report gets the size table, scaling.png is drawn."""
    tiny_model(tmp_path / "m", "sinsr", 1, 0)
    out = tmp_path / "out"
    assert main(["bench", "-m", f"tiny={tmp_path / 'm'}", "-o", str(out), "--sizes", "16,32,48", "--batch", "1",
                 "--tile", "16", "--untiled", "--repeats", "1", "--warmup", "0", "--no-quality", "--fp32"]) == 0
    with open(out / "bench.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    for key in ("16_b1", "32_tile16", "32_b1", "48_tile16", "48_b1"):
        assert float(rows["tiny"][f"s_img_{key}"]) > 0, key
    assert not rows["bicubic"].get("s_img_32_tile16")  # bicubic does not tile: timed whole only
    report = (out / "report.md").read_text()
    assert "| tiny (1) | 48x48 | 0.0369 | 16 |" in report and "| tiny (1) | 48x48 | 0.0369 | whole |" in report
    assert "scaling.png" in report
    assert (out / "scaling.png").stat().st_size > 10_000


def test_several_tiles_are_timed_back_to_back_with_the_whole_image(tmp_path):
    tiny_model(tmp_path / "m", "sinsr", 1, 0)
    out = tmp_path / "out"
    assert main(["bench", "-m", f"tiny={tmp_path / 'm'}", "-o", str(out), "--sizes", "16,40", "--batch", "1",
                 "--tile", "32,16,8", "--untiled", "--repeats", "1", "--warmup", "0", "--no-quality", "--fp32"]) == 0
    with open(out / "bench.csv", newline="") as f:
        row = {r["name"]: r for r in csv.DictReader(f)}["tiny"]
    for key in ("16_tile8", "16_b1", "40_tile8", "40_tile16", "40_tile32", "40_b1"):
        assert float(row[f"s_img_{key}"]) > 0, key
    assert not row.get("s_img_16_tile16")  # not above the tile: not tiled at it
    report = (out / "report.md").read_text()
    tiles = [line.split("|")[4].strip() for line in report.splitlines() if line.startswith("| tiny (1) | 40x40 |")]
    assert tiles == ["8", "16", "32", "whole"]
    assert (out / "scaling.png").stat().st_size > 10_000  # a line per tile and one whole


def test_a_setting_foreseen_not_to_fit_is_not_run(tmp_path, monkeypatch):
    """When the memory the smaller sizes used, scaled to the next one, is over what the host has, that setting is
    recorded as out of memory without running (a host out-of-memory would kill the whole bench)."""
    import instantsr.bench as bench

    tiny_model(tmp_path / "m", "sinsr", 1, 0)
    monkeypatch.setattr(bench, "available_mib", lambda: -1.0)  # nothing fits
    out = tmp_path / "out"
    assert main(["bench", "-m", f"tiny={tmp_path / 'm'}", "-o", str(out), "--sizes", "16,32", "--batch", "1",
                 "--tile", "16", "--untiled", "--repeats", "1", "--warmup", "0", "--no-quality", "--fp32"]) == 0
    with open(out / "bench.csv", newline="") as f:
        row = {r["name"]: r for r in csv.DictReader(f)}["tiny"]
    assert row["oom_32_tile16"].startswith("not run") and not row["s_img_32_tile16"]
    report = (out / "report.md").read_text()
    assert "tiny (1) at 32→128 tile 16: out of memory (not run" in report


def test_settings_and_model_specs(tmp_path):
    assert [s.key for s in speed_settings([64, 128, 256], [1, 64], 64)] == ["64_b1", "64_b64", "128_tile64",
                                                                            "256_tile64"]
    assert [s.key for s in speed_settings([64], [1], None)] == ["64_b1"]
    assert [s.key for s in speed_settings([64, 512], [1, 8], (256, 128), untiled=True)] == [
        "64_b1", "64_b8", "512_tile128", "512_tile256", "512_b1"]
    assert [s.key for s in speed_settings([64, 128], [1, 8], 64, untiled=True)] == ["64_b1", "64_b8", "128_tile64",
                                                                                     "128_b1"]
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "model_index.json").write_text("{}")
    assert parse_model_spec(str(tmp_path / "run")) == ("run", tmp_path / "run" / "model")
    assert parse_model_spec(f"fast={tmp_path / 'run' / 'model'}") == ("fast", tmp_path / "run" / "model")


def test_bench_help_without_torch():
    code = ("import sys; from instantsr.cli import build_parser; build_parser().parse_args(['bench', '-o', 'x']);"
            " print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_bench_help_and_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0 and "usage: instantsr bench" in capsys.readouterr().out
    assert main(["bench", "-o", str(tmp_path / "out"), "--lr", str(tmp_path)]) == 2
    assert "quality needs both --lr LR_DIR and --hr HR_DIR" in capsys.readouterr().err


def test_teacher_at_each_sampler_above_one_step(tmp_path, capsys):
    """--samplers: one row per (steps, sampler) above one step, one row at one step; the stochastic images are
    the Upscaler's own with that sampler and seed 0."""
    from instantsr.pipeline import Upscaler

    tiny_model(tmp_path / "teacher", "resshift", 15, 0)
    for i in range(2):
        hr = smooth_image(32, 32, i)
        save_image(hr, tmp_path / "hr" / f"im{i}.png")
        save_image(quantize(imresize(hr[None], scale=0.25))[0], tmp_path / "lr" / f"im{i}.png")
    out = tmp_path / "out"
    code = main(["bench", "-m", str(tmp_path / "teacher"), "--lr", str(tmp_path / "lr"), "--hr", str(tmp_path / "hr"),
                 "-o", str(out), "--steps", "1,3", "--samplers", "deterministic,stochastic", "--no-speed",
                 "--metrics", "psnr", "--strip-images", "0", "--save-sr", "--fp32"])
    assert code == 0
    rows = [(r["name"], r["steps"], r["sampler"]) for r in csv.DictReader(open(out / "bench.csv"))]
    assert rows == [("bicubic", "0", ""), ("teacher", "1", ""), ("teacher", "3", "deterministic"),
                    ("teacher", "3", "stochastic")]
    assert "| teacher | 3 stochastic |" in (out / "report.md").read_text()
    up = Upscaler.from_pretrained(tmp_path / "teacher")
    lq = torch.stack([read_image(tmp_path / "lr" / f"im{i}.png").rgb for i in range(2)])
    for sampler in ("deterministic", "stochastic"):
        expected = up.upscale_tensor(lq, steps=3, seed=0, sampler=sampler, batch_size=1)
        got = torch.stack([read_image(out / "sr" / f"teacher-s3-{sampler}" / f"im{i}.png").rgb for i in range(2)])
        assert (got - expected).abs().max() <= 0.5 / 255 + 1e-6, sampler  # the same image, 8-bit
    det, sto = (read_image(out / "sr" / f"teacher-s3-{s}" / "im0.png").rgb for s in ("deterministic", "stochastic"))
    assert (det - sto).abs().max() > 1 / 255  # the two samplers really ran
    assert main(["bench", "-o", str(out), "--samplers", "bogus"]) == 2  # one line naming the samplers there are
    assert "no model family has bogus; the samplers are ddim, deterministic, stochastic" in capsys.readouterr().err
