"""Official ResShift / SinSR checkpoints (official key layout, wrappers) -> `instantsr convert` ->
`instantsr upscale`."""

from __future__ import annotations

import json

import pytest
import torch

from instantsr.cli import main
from instantsr.io import read_image, save_image
from instantsr.model import SRModel
from instantsr.nets import swin_unet
from instantsr.nets.swin_unet import ResShiftSwinUNet
from instantsr.nets.vqgan import ResShiftVQGAN
from instantsr.pipeline import Upscaler
from instantsr.tiling import chop_starts, pad_to_multiple

from .conftest import smooth_image
from .test_official_nets import SMALL_UNET, SMALL_VQ, perturbed

CONFIG = """
[unet]
image_size = 32
lq_size = 32
model_channels = 32
channel_mult = [1, 2, 2]
num_res_blocks = [1, 1, 1]
attention_resolutions = [32, 16, 8]
swin_embed_dim = 32
num_head_channels = 16
window_size = 8

[autoencoder]
ch = 32
ch_mult = [1, 2, 4]
num_res_blocks = 1
n_embed = 64
"""


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    unet, vq = perturbed(ResShiftSwinUNet(**SMALL_UNET)), perturbed(ResShiftVQGAN(**SMALL_VQ))
    # the wrappers of the released files: a training checkpoint's state_dict, DDP's module. prefix
    torch.save({"state_dict": {"module." + k: v for k, v in unet.state_dict().items()}}, root / "SinSR_v1.pth")
    torch.save({"_orig_mod." + k: v for k, v in unet.state_dict().items()}, root / "resshift_realsrx4_s15_v1.pth")
    torch.save({"state_dict": vq.state_dict()}, root / "autoencoder_vq_f4.pth")
    (root / "small.toml").write_text(CONFIG)
    return root, unet


@pytest.mark.slow
@pytest.mark.parametrize("method,steps,sampler,pad", [("sinsr", 1, "deterministic", 64),
                                                      ("resshift", 15, "stochastic", 32)])
def test_convert_then_upscale_through_the_cli(official, tmp_path, method, steps, sampler, pad):
    root, unet = official
    ckpt = root / ("SinSR_v1.pth" if method == "sinsr" else "resshift_realsrx4_s15_v1.pth")
    folder = tmp_path / method
    assert main(["convert", "--unet", str(ckpt), "--autoencoder", str(root / "autoencoder_vq_f4.pth"),
                 "--method", method, "-o", str(folder), "--config", str(root / "small.toml")]) == 0
    index = json.loads((folder / "model_index.json").read_text())
    assert (index["family"], index["method"], index["steps"], index["sampler"]) == ("resshift", method, steps, sampler)
    assert index["sigma_data"] is None and index["lr_multiple"] == pad  # x0_hat is the network's output
    assert (index["schedule"].get("start_cap") is not None) == (method == "sinsr")  # SinSR's code caps sqrt(eta_1)
    model = SRModel.from_pretrained(folder)
    for k, v in unet.state_dict().items():  # the weights, unchanged, in safetensors
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert model.multiple == pad
    # an LR that is not a multiple of the padding: reflect-padded, upscaled, cropped back
    lr = smooth_image(24, 40, 1)
    save_image(lr, tmp_path / "lr" / "a.png")
    assert main(["upscale", "-i", str(tmp_path / "lr"), "-o", str(tmp_path / "out"), "-m", str(folder)]) == 0
    sr = read_image(tmp_path / "out" / "a.png").rgb
    assert sr.shape == (3, 96, 160)
    lq = read_image(tmp_path / "lr" / "a.png").rgb[None]
    padded = pad_to_multiple(lq, pad)
    assert padded.shape[-2:] == (pad * 1, pad * (1 if pad == 64 else 2))
    whole = Upscaler(model).upscale_tensor(padded, seed=0)[..., :96, :160]  # the padding is reflect, as official
    assert (sr - whole[0]).abs().max() <= 0.5 / 255 + 1e-6


class Payload:  # anything that is not tensors: a pickle that would run code is refused, not executed
    pass


def test_official_files_are_read_weights_only(tmp_path, monkeypatch):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth: cannot read as a weights-only"):
        swin_unet.read_official_state_dict(tmp_path / "evil.pth")
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    torch.save({"module.w": torch.ones(2)}, tmp_path / "ok.pth")
    assert torch.equal(swin_unet.read_official_state_dict(tmp_path / "ok.pth")["w"], torch.ones(2))
    assert seen["weights_only"] is True


def test_swin_unet_runs_batch_one_on_wide_latents_and_bad_convert_inputs(tmp_path):
    net = ResShiftSwinUNet(**{**SMALL_UNET, "image_size": 64, "lq_size": 64}).eval()
    with torch.no_grad():  # batch 1, a latent as tall as the largest window stage and wider: used to crash (.view)
        assert net(torch.randn(1, 3, 64, 128), 3, torch.randn(1, 3, 64, 128)).shape == (1, 3, 64, 128)
    assert main(["convert", "--unet", str(tmp_path / "none.pth"), "--autoencoder", str(tmp_path / "none.pth"),
                 "--method", "sinsr", "-o", str(tmp_path / "m")]) == 2
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    (tmp_path / "u.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="not a model folder"):
        from instantsr.convert import convert_official

        convert_official(tmp_path / "u.pth", tmp_path / "u.pth", "sinsr", tmp_path / "busy")


def official_extract_starts(length, pch_size, stride):  # the official ImageSpliterTh.extract_starts, verbatim logic
    if length <= pch_size:
        return [0]
    starts = list(range(0, length, stride))
    for ii in range(len(starts)):
        if starts[ii] + pch_size > length:
            starts[ii] = length - pch_size
    return sorted(set(starts), key=starts.index)


def test_chop_starts_are_the_official_ones():
    for length in (1, 100, 512, 513, 900, 960, 961, 1400, 2049):
        assert chop_starts(length, 512, 448) == official_extract_starts(length, 512, 448), length
    assert chop_starts(900, 512, 448) == [0, 388]


@pytest.fixture
def converted(official, tmp_path):
    from instantsr.convert import convert_official

    root, _ = official
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads(CONFIG)
    return convert_official(root / "SinSR_v1.pth", root / "autoencoder_vq_f4.pth", "sinsr", tmp_path / "sinsr",
                            unet_config=cfg["unet"], autoencoder_config=cfg["autoencoder"])


def test_converted_models_chop_as_the_official_code_and_tile_0_runs_whole(converted, tmp_path):
    assert SRModel.from_pretrained(tmp_path / "sinsr").extra["chop"] == {"size": 512, "stride": 448}
    converted.extra["chop"] = {"size": 32, "stride": 24}  # the official 512 / 448, scaled down to the tiny model
    up = Upscaler(converted)
    lq = smooth_image(40, 56, 2)[None]
    chopped = up.upscale_tensor(lq, seed=5)
    assert chopped.shape == (1, 3, 160, 224)
    expected, count = torch.zeros(1, 3, 160, 224), torch.zeros(1, 1, 160, 224)
    for k, (y, x) in enumerate([(y, x) for y in (0, 8) for x in (0, 24)]):  # chop_starts(40) and (56), 32 / 24
        piece = up.upscale_tensor(lq[..., y:y + 32, x:x + 32], seed=5 + k, tile=0)
        expected[..., 4 * y:4 * y + 128, 4 * x:4 * x + 128] += piece
        count[..., 4 * y:4 * y + 128, 4 * x:4 * x + 128] += 1
    torch.testing.assert_close(chopped, expected / count)
    whole = up.upscale_tensor(lq, seed=5, tile=0)
    assert (whole - chopped).abs().max() > 1e-3  # tile 0: the whole image, not the chops
    small = up.upscale_tensor(lq[..., :32, :32], seed=5)  # no larger than a chop: whole, as the official
    torch.testing.assert_close(small, up.upscale_tensor(lq[..., :32, :32], seed=5, tile=0))


def test_out_of_memory_halves_the_tile_of_a_network_that_is_not_exactly_tileable(converted, model_dir, capsys):
    from instantsr import pipeline

    def restore_within(limit):
        def restore(lq, tile=None, **kw):
            if tile is None or tile > limit:
                raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")
            return torch.zeros(lq.shape[0], 3, lq.shape[-2] * 4, lq.shape[-1] * 4)
        return restore

    converted.extra.pop("chop", None)
    up = Upscaler(converted)
    up._restore = restore_within(100)
    assert up.upscale_tensor(torch.rand(1, 3, 160, 200), seed=0).shape == (1, 3, 640, 800)
    assert capsys.readouterr().err == "instantsr: out of memory (whole); trying again in tiles of 100 LR px\n"
    up._restore = restore_within(60)  # 256 -> 128 -> 64 (the last tried), then no smaller tile
    with pytest.raises(RuntimeError, match="out of memory"):
        up.upscale_tensor(torch.rand(1, 3, 200, 256), seed=0, tile=256)
    assert capsys.readouterr().err.splitlines() == [
        "instantsr: out of memory (tiles of 256 LR px); trying again in tiles of 128 LR px",
        "instantsr: out of memory (tiles of 128 LR px); trying again in tiles of 64 LR px"]
    assert pipeline.MIN_RETRY_TILE == 64
    up._restore = lambda lq, **kw: (_ for _ in ()).throw(RuntimeError("shapes do not match"))
    with pytest.raises(RuntimeError, match="shapes"):  # not out of memory: no retry
        up.upscale_tensor(torch.rand(1, 3, 160, 200), seed=0)
    exact = Upscaler.from_pretrained(model_dir)  # our UNets tile exactly: told, not retried
    exact._restore = restore_within(100)
    with pytest.raises(RuntimeError, match="out of memory"):
        exact.upscale_tensor(torch.rand(1, 3, 160, 200), seed=0)
    assert capsys.readouterr().err == ""


def test_bench_times_the_official_sinsr_before_and_after_the_cpu_levers_in_one_run(converted, tmp_path):
    """`instantsr bench` rows of a converted (reduced-width) SinSR at 64->256 and 128->512, with the VQ codec's
    `lean` layout off ("lean": false in codec/config.json: the official layer order) and on, in one run: s/img and
    peak memory for both, and their outputs within 1/255 of each other."""
    import csv
    import shutil

    before = tmp_path / "official_order"
    shutil.copytree(tmp_path / "sinsr", before)
    cfg = json.loads((before / "codec" / "config.json").read_text())
    (before / "codec" / "config.json").write_text(json.dumps({**cfg, "lean": False}))
    assert SRModel.from_pretrained(tmp_path / "sinsr").codec.vq.lean
    assert not SRModel.from_pretrained(before).codec.vq.lean
    out = tmp_path / "bench"
    assert main(["bench", "-m", f"before={before}", "-m", f"after={tmp_path / 'sinsr'}", "-o", str(out),
                 "--sizes", "64,128", "--batch", "1", "--tile", "0", "--repeats", "1", "--warmup", "0",
                 "--no-quality", "--fp32"]) == 0
    with open(out / "bench.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    for name in ("before", "after"):
        assert float(rows[name]["s_img_64_b1"]) > 0 and float(rows[name]["s_img_128_b1"]) > 0
        assert float(rows[name]["peak_mem_mib"]) > 0
    lq = smooth_image(64, 64, 3)[None]
    a, b = (Upscaler.from_pretrained(p).upscale_tensor(lq, seed=0) for p in (before, tmp_path / "sinsr"))
    assert (a - b).abs().max() * 255 < 1.0
