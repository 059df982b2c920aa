"""The one training loop: loss goes down, kill + resume continues exactly, multi-process gradients agree."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instantsr.cli import main
from instantsr.config import read_config, write_config
from instantsr.methods import build_recipe
from instantsr.methods.resshift import ResShiftConfig, ResShiftRecipe
from instantsr.methods.rsd import RSDConfig
from instantsr.methods.sinsr import SinSRConfig
from instantsr.model import SRModel
from instantsr.pipeline import Upscaler
from instantsr.train import TrainConfig, Trainer, last_checkpoint, load_run_config

TINY = ResShiftConfig(unet="tiny")
PLAIN = ResShiftConfig(unet="tiny", sigma_data=0)  # the paper's x0 output: its loss starts high and falls fast


def tiny_train_config(data: Path, **kw) -> TrainConfig:
    base = TrainConfig(data=str(data), steps=20, batch_size=4, crop=32, lr=1e-3, num_workers=0, log_every=1,
                       checkpoint_every=5, keep_checkpoints=10, ema_decay=0.9, degradation="realesrgan")
    return replace(base, **kw)


def losses(run: Path) -> list[float]:
    with open(run / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_loss_goes_down_and_model_exports(hr_folder, tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    Trainer(ResShiftRecipe(PLAIN), tiny_train_config(hr_folder, steps=60, checkpoint_every=60), run, "resshift").run()
    trace = losses(run)
    assert len(trace) == 60
    assert sum(trace[-15:]) / 15 < 0.7 * sum(trace[:5]) / 5
    model = SRModel.from_pretrained(run / "model")
    out = Upscaler(model).upscale_tensor(torch.rand(1, 3, 16, 16), steps=2, seed=0)
    assert out.shape == (1, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
    # The run folder says everything needed to reproduce it.
    saved = read_config(run / "config.toml")
    assert saved["method"] == "resshift" and saved["train"]["steps"] == 60 and saved["resshift"]["unet"] == "tiny"
    train_cfg, method_cfg = load_run_config(run / "config.toml", "resshift", ResShiftConfig)
    assert method_cfg == PLAIN and train_cfg.crop == 32


@pytest.mark.slow
def test_kill_and_resume_continue_exactly(hr_folder, tmp_path, monkeypatch):
    torch.manual_seed(0)
    straight = tmp_path / "straight"
    Trainer(ResShiftRecipe(TINY), tiny_train_config(hr_folder), straight, "resshift").run()

    torch.manual_seed(0)
    killed = tmp_path / "killed"
    recipe = ResShiftRecipe(TINY)
    real_step = recipe.training_step

    def dies_at_step_8(hr, lr, ctx):
        if ctx.step == 8:
            raise KeyboardInterrupt
        return real_step(hr, lr, ctx)

    monkeypatch.setattr(recipe, "training_step", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        Trainer(recipe, tiny_train_config(hr_folder), killed, "resshift").run()
    assert last_checkpoint(killed).name == "step_0000008"  # Ctrl-C saved where it stopped

    torch.manual_seed(123)  # the resumed run must not depend on the global RNG
    Trainer(ResShiftRecipe(TINY), tiny_train_config(hr_folder), killed, "resshift").run()
    assert losses(killed)[8:] == pytest.approx(losses(straight)[8:], rel=1e-5)
    a, b = last_checkpoint(straight), last_checkpoint(killed)
    assert a.name == b.name == "step_0000020"
    for name in ("denoiser", "ema", "optim_denoiser"):
        ta, tb = load_file(a / f"{name}.safetensors"), load_file(b / f"{name}.safetensors")
        assert ta.keys() == tb.keys()
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-5, atol=1e-6)


def test_interrupted_checkpoint_write_is_not_resumed_from(hr_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(ResShiftRecipe(TINY), tiny_train_config(hr_folder, steps=5), run, "resshift").run()
    broken = run / "checkpoints" / "step_0000010"
    broken.mkdir()
    (broken / "denoiser.safetensors").write_bytes(b"partial")  # no state.json: never completed
    assert last_checkpoint(run).name == "step_0000005"


MULTI = r"""
import os, sys, torch
from pathlib import Path
from instantsr.methods.resshift import ResShiftConfig, ResShiftRecipe
from instantsr.train import TrainConfig, Trainer
data, run = sys.argv[1], Path(sys.argv[2])
seen = []
recipe = ResShiftRecipe(ResShiftConfig(unet="tiny"))
step = recipe.training_step
def spy(hr, lr, ctx):
    seen.append(float(hr.sum()))
    return step(hr, lr, ctx)
recipe.training_step = spy
cfg = TrainConfig(data=data, steps=3, batch_size=2, crop=32, lr=1e-3, num_workers=0, checkpoint_every=100)
Trainer(recipe, cfg, run, "resshift").run()
w = torch.cat([p.detach().flatten() for p in recipe.backbone.parameters()])
torch.save({"w": w, "seen": seen, "world": int(os.environ["WORLD_SIZE"])}, run / f"rank{os.environ['RANK']}.pt")
"""


@pytest.mark.slow
def test_two_processes_share_gradients(hr_folder, tmp_path):
    """torchrun starts 2 gloo processes; each sees its own data, yet their weights stay identical."""
    script = tmp_path / "multi.py"
    script.write_text(MULTI)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(script), str(hr_folder), str(run)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (torch.load(run / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["seen"] != r1["seen"]  # different data on each process
    torch.testing.assert_close(r0["w"], r1["w"])  # ... but gradients were averaged
    assert (run / "model" / "model_index.json").is_file()


def test_init_from_model_folder_and_loss_repeats(hr_folder, tmp_path):
    torch.manual_seed(0)
    first = tmp_path / "first"
    Trainer(ResShiftRecipe(TINY), tiny_train_config(hr_folder, steps=3), first, "resshift").run()
    exported = SRModel.from_pretrained(first / "model").backbone.state_dict()
    # init: a new run starts from the exported (EMA) backbone, not from a fresh initialisation.
    recipe = ResShiftRecipe(replace(TINY, init=str(first / "model"), loss_repeats=3))
    for k, v in recipe.backbone.state_dict().items():
        torch.testing.assert_close(v, exported[k], rtol=0, atol=0)
    # loss_repeats: the loss sees each image at several independent timesteps (batch x repeats).
    seen = []
    recipe.loss.__class__ = type("Spy", (type(recipe.loss),), {
        "__call__": lambda self, d, x0, y, cond=None, **kw: seen.append(x0.shape[0]) or torch.zeros(x0.shape[0],
                                                                                                     requires_grad=True)})
    Trainer(recipe, tiny_train_config(hr_folder, steps=1), tmp_path / "second", "resshift").run()
    assert seen == [4 * 3]
    with pytest.raises(ValueError, match="does not fit"):  # a backbone of another size is refused
        ResShiftRecipe(replace(TINY, unet="small", init=str(first / "model")))


def test_perceptual_term_trains_with_real_lpips(hr_folder, tmp_path):
    # lpips_weight adds LPIPS(decode(x0_hat), HR) to every step's loss (ResShift's journal version).
    runs = {}
    for name, config in (("plain", TINY), ("lpips", replace(TINY, lpips_weight=1.0, lpips_net="alex"))):
        torch.manual_seed(0)
        recipe = ResShiftRecipe(config)
        Trainer(recipe, tiny_train_config(hr_folder, steps=2), tmp_path / name, "resshift").run()
        runs[name] = losses(tmp_path / name)
    assert recipe.loss.perceptual is recipe.lpips and recipe.lpips.net_name == "alex"
    # Same seed, same first batch and draws: the first loss differs by the LPIPS term, which is positive.
    assert runs["lpips"][0] > runs["plain"][0] + 0.01
    with pytest.raises(ValueError, match="alex"):
        ResShiftRecipe(replace(TINY, lpips_weight=1.0, lpips_net="squeeze"))


def test_init_with_another_sigma_data_keeps_the_one_step_prediction(hr_folder, tmp_path):
    from instantsr.diffusion.resshift import ResShiftDenoiser, skip_scalings

    torch.manual_seed(0)
    first = tmp_path / "first"
    Trainer(ResShiftRecipe(TINY), tiny_train_config(hr_folder, steps=2), first, "resshift").run()
    start = SRModel.from_pretrained(first / "model")
    recipe = ResShiftRecipe(replace(TINY, init=str(first / "model"), sigma_data=0.04))
    moved = ResShiftDenoiser(recipe.backbone, recipe.schedule, recipe.sigma_data)
    g = torch.Generator().manual_seed(1)
    x_t, y, lq = torch.randn(2, 48, 8, 8, generator=g), torch.randn(2, 48, 8, 8, generator=g), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        t = torch.full((2,), recipe.schedule.T - 1)
        before, after = start.denoiser(x_t, t, (lq, y)), moved(x_t, t, (lq, y))
        # the network's term c_out net(...) is unchanged; only the (tiny) skip term at T differs
        skip_change = skip_scalings(t, recipe.schedule, 0.04, y)[0] - skip_scalings(t, recipe.schedule, 0.25, y)[0]
        torch.testing.assert_close(after - before, skip_change * (x_t - y), rtol=0, atol=1e-5)
        t = torch.full((2,), 1)  # at low t the skip changed, so the prediction does
        assert (moved(x_t, t, (lq, y)) - start.denoiser(x_t, t, (lq, y))).abs().max() > 0.1
    with pytest.raises(ValueError, match="sigma_data"):  # no rescaling to or from the paper's plain x0
        ResShiftRecipe(replace(PLAIN, init=str(first / "model")))


def test_shipped_recipe_configs_parse():
    # configs/default/*.toml are the recipe of the shipped model: every key must still be a known field.
    from instantsr.methods import METHODS
    from instantsr.config import read_config
    from instantsr.train import load_run_config

    files = sorted((Path(__file__).resolve().parents[1] / "configs" / "default").glob("*.toml"))
    assert {f.stem for f in files} >= {"teacher_stage1", "teacher", "teacher_stage4_cpu", "sinsr", "rsd"}
    for f in files:
        method = read_config(f)["method"]
        train, recipe = load_run_config(f, method, METHODS[method].load()[0])
        gpu = not f.stem.endswith("_cpu")  # GPU stages train in bf16; CPU ones in float32
        assert train.time_limit_min > 0 and train.mixed_precision == ("bf16" if gpu else "no"), f.name


# ---- reproducibility: a run is a function of its config (issue 19) -------------------------------------------
def weights_of(model_dir: Path) -> dict[str, torch.Tensor]:
    return {f"{f.parent.name}/{k}": v for f in sorted(model_dir.rglob("*.safetensors"))
            for k, v in load_file(f).items()}


def cli_train(method: str, config: Path, out: Path, *args: str, global_seed: int) -> Path:
    torch.manual_seed(global_seed)  # whatever torch's global RNG holds before the run must not matter
    assert main(["train", method, "--config", str(config), "--out", str(out), *args]) == 0
    return out


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["resshift", "sinsr"])
def test_runs_of_one_config_are_identical_and_the_seed_sets_the_initial_weights(method, hr_folder, tmp_path):
    if method == "resshift":
        method_cfg = TINY
    else:  # a tiny teacher of a few steps; the student copies it, so its init is the teacher's whatever the seed
        teacher = tmp_path / "teacher"
        Trainer(ResShiftRecipe(TINY), tiny_train_config(hr_folder, steps=2, checkpoint_every=100), teacher,
                "resshift").run()
        method_cfg = SinSRConfig(teacher=str(teacher / "model"), teacher_steps=3)
    config = tmp_path / "config.toml"
    write_config(config, {"train": asdict(tiny_train_config(hr_folder, steps=4, checkpoint_every=100, seed=7)),
                          method: asdict(method_cfg)})
    a = cli_train(method, config, tmp_path / "a", global_seed=1)
    b = cli_train(method, config, tmp_path / "b", global_seed=2)
    assert len(losses(a)) == 4 and losses(a) == losses(b)  # every step, bitwise
    assert_same_weights(weights_of(a / "model"), weights_of(b / "model"))
    other = cli_train(method, config, tmp_path / "other", "--seed", "8", global_seed=1)
    assert losses(other)[0] != losses(a)[0]  # another seed: other data and draws from step 1

    # The initial weights: the seed's alone (the global RNG left as it was), another seed's differ. SinSR's student
    # is the teacher's copy whatever the seed; RSD's fake model has a freshly initialised head.
    if method == "sinsr":
        method, method_cfg = "rsd", RSDConfig(teacher=method_cfg.teacher, lpips_weight=0)

    def initial(seed, global_seed=0):
        torch.manual_seed(global_seed)
        state = torch.random.get_rng_state()
        recipe = build_recipe(method, method_cfg, seed=seed)
        assert torch.equal(torch.random.get_rng_state(), state)
        return {f"{n}.{k}": v.clone() for n, net in recipe.networks().items() for k, v in net.state_dict().items()}

    w7, w8 = initial(7), initial(8)
    assert_same_weights(w7, initial(7, global_seed=5))
    assert any(not torch.equal(w7[k], w8[k]) for k in w7)
