"""The `instantsr` command: help everywhere, eval tables and files, degrade, clear one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from instantsr.cli import COMMANDS, build_parser, main
from instantsr.degrade import imresize, quantize
from instantsr.io import read_image, save_image

from .conftest import smooth_image


def subcommands():
    return list(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    assert command in subcommands()
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage: instantsr " + command in capsys.readouterr().out


def test_every_command_is_one_row_and_one_module():
    assert subcommands() == list(COMMANDS)
    for name, command in COMMANDS.items():
        module = command.load()
        assert module.__name__ == f"instantsr.cli.{command.module}" and callable(module.run), name
        assert module.add_parser.__code__.co_varnames[:3] == ("sub", "name", "help"), name


def run_python(code: str) -> str:
    env = {**os.environ, "COLUMNS": "200"}  # help lines unwrapped
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout


def test_help_lists_every_command_from_the_table_alone():
    out = run_python("import sys\nfrom instantsr.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
                     "    pass\nprint(sorted(m for m in sys.modules if m.startswith('instantsr.cli.')))")
    for name, command in COMMANDS.items():
        assert any(line.split() == [name, *command.help.split()] for line in out.splitlines()), name
    assert out.splitlines()[-1] == "[]"  # no command module imported for the list


def test_a_command_imports_its_own_module_only():
    out = run_python("import sys\nfrom instantsr.cli import main\ntry:\n    main(['degrade', '--help'])\n"
                     "except SystemExit:\n    pass\n"
                     "print(sorted(m for m in sys.modules if m.startswith('instantsr.cli.')))")
    assert "usage: instantsr degrade" in out
    assert out.splitlines()[-1] == "['instantsr.cli.degrade']"


def test_old_names_still_import():
    from instantsr.cli import apply_overrides, check_writable, launched_world_size, run_command  # noqa: F401

    with pytest.raises(ImportError):
        from instantsr.cli import no_such_name  # noqa: F401


def test_pytest_prints_skip_reasons():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "-rs" in pyproject["tool"]["pytest"]["ini_options"]["addopts"].split()


def test_help_is_instant_and_imports_nothing_heavy():
    code = "import sys; from instantsr.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.fixture
def sr_hr_lr(tmp_path):
    """HR images, their bicubic x4 LR, and 'SR' images = HR plus a little noise (one of the wrong size)."""
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        hr = smooth_image(64, 64, i)
        save_image(hr, tmp_path / "hr" / f"im{i}.png")
        save_image(quantize(imresize(hr[None], scale=0.25))[0], tmp_path / "lr" / f"im{i}.png")
        sr = (hr + 0.02 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
        save_image(sr if i < 2 else sr[:, :60], tmp_path / "sr" / f"im{i}.png")
    return tmp_path


def test_eval_table_csv_json_and_bicubic_baseline(sr_hr_lr, capsys):
    d = sr_hr_lr
    code = main(["eval", "--sr", str(d / "sr"), "--hr", str(d / "hr"), "--lr", str(d / "lr"),
                 "--baseline", "bicubic", "--metrics", "psnr,ssim", "--csv", str(d / "rows.csv"),
                 "--json", str(d / "summary.json")])
    assert code == 0
    out = capsys.readouterr()
    assert "im2.png is 64x60 px, its HR image 64x64 px (width x height)" in out.err  # a plain line, not a warning
    table = out.out
    assert "| method | psnr ↑ | ssim ↑ | images |" in table and "| sr |" in table and "| bicubic |" in table
    summary = json.loads((d / "summary.json").read_text())["summary"]
    assert summary["sr"]["images"] == 2 and summary["bicubic"]["images"] == 3
    assert summary["sr"]["psnr"] > summary["bicubic"]["psnr"]  # 0.02 noise beats a x4 bicubic round trip
    assert 25 < summary["sr"]["psnr"] < 40
    rows = (d / "rows.csv").read_text().splitlines()
    assert rows[0] == "method,image,psnr,ssim" and len(rows) == 1 + 2 + 3


def test_eval_without_hr_runs_no_reference_metrics_only(tmp_path, capsys):
    save_image(smooth_image(200, 200, 0), tmp_path / "sr" / "a.png")
    assert main(["eval", "--sr", str(tmp_path / "sr"), "--metrics", "psnr"]) == 2
    assert "nothing to compute without --hr" in capsys.readouterr().err
    assert main(["eval", "--sr", str(tmp_path / "sr"), "--metrics", "psnr,niqe"]) == 0
    out = capsys.readouterr()
    assert "leaving out the full-reference metrics psnr" in out.err
    niqe = float(out.out.strip().splitlines()[-1].split("|")[2])
    assert 2 < niqe < 100


def test_errors_are_one_line(tmp_path, capsys):
    save_image(smooth_image(8, 8, 0), tmp_path / "hr" / "a.png")
    assert main(["eval", "--sr", str(tmp_path / "nope"), "--hr", str(tmp_path / "hr"), "--metrics", "psnr"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instantsr: error:") and "nope" in err and len(err.splitlines()) == 1
    assert main(["eval", "--sr", str(tmp_path), "--metrics", "sharpness"]) == 2
    assert "sharpness" in capsys.readouterr().err


def test_degrade_command_writes_pairs(tmp_path, capsys):
    for i in range(2):
        save_image(smooth_image(66, 70, i), tmp_path / "in" / f"p{i}.png")
    assert main(["degrade", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--scale", "4",
                 "--preset", "bicubic"]) == 0
    assert read_image(tmp_path / "out" / "lr" / "p0.png").size == (16, 17)
    assert read_image(tmp_path / "out" / "hr" / "p0.png").size == (64, 68)
