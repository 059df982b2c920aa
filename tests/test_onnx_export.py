"""ONNX export (`instantsr export`) and its onnxruntime runner (`instantsr upscale --onnx`, the bench row): the
graph gives the torch upscaler's output to 1e-4 in float32 (random and real images, sizes that are and are not
multiples of the model's), half precision stays finite on flat and saturated images, multi-step models and bad
files are refused in one line.

Four exports in all, of 10 to 20 s each on one core (the tests that need them are marked slow): the shipped
default model (the ResShift teacher, with noise inputs, through the CLI) and the DFOSD model of issue 21
(models/dfosd/default_0.8, no noise), and
a tiny RSD-like model with extra noise channels in float32 (one input, the chaiNNer form) and in float16."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from instantsr import bench  # noqa: E402
from instantsr.cli import main  # noqa: E402
from instantsr.codecs import PixelUnshuffleCodec  # noqa: E402
from instantsr.diffusion.resshift import ResShiftSchedule  # noqa: E402
from instantsr.io import read_image, save_image  # noqa: E402
from instantsr.model import SRModel  # noqa: E402
from instantsr.nets.unet import ConditionalUNet  # noqa: E402
from instantsr.onnx_export import OneStepGraph, OnnxUpscaler, bicubic_kernel, export_onnx  # noqa: E402
from instantsr.pipeline import Upscaler  # noqa: E402
from instantsr.tiling import pad_to_multiple  # noqa: E402

from .conftest import DATA, needs_shared, smooth_image  # noqa: E402

TOL = 1e-4  # float32 ONNX against torch (measured: under 1e-5)
DFOSD = Path(__file__).resolve().parents[1] / "models" / "dfosd" / "default_0.8"


def tiny_model(folder: Path, method: str = "rsd", steps: int = 1, extra: int = 1) -> Path:
    """A tiny seeded model; with `extra` noise channels whose input weights are not zero (a fresh RSD generator's
    are), so that the noise wiring shows in the output."""
    torch.manual_seed(0)
    backbone = ConditionalUNet.from_preset("tiny", latent_channels=48, extra_channels=extra)
    with torch.no_grad():
        backbone.unet.conv_in.weight[:, 51:].normal_(0, 0.5)
    model = SRModel(backbone, PixelUnshuffleCodec(4), ResShiftSchedule(), scale=4, method=method, steps=steps,
                    max_steps=None if method == "resshift" else steps)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def default_graph(tmp_path_factory) -> Path:
    """The shipped model, exported through the CLI with its noise as an input (so a seed gives torch's output)."""
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    assert main(["export", "-o", str(path), "--noise-input"]) == 0
    return path


@pytest.fixture(scope="module")
def dfosd_graph(tmp_path_factory) -> Path:
    """DFOSD on the teacher (the default of issue 21): it reads z_L with no noise, so --noise-input adds none."""
    path = tmp_path_factory.mktemp("onnx") / "dfosd.onnx"
    assert main(["export", "-m", str(DFOSD), "-o", str(path), "--noise-input"]) == 0
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_graph(tiny_dir) -> Path:
    """The default form: one input, the noise drawn inside the graph."""
    return export_onnx(tiny_dir, tiny_dir.parent / "tiny.onnx")


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


# ---- float32: the torch upscaler's output --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("which", ["default", "dfosd"])
def test_default_model_matches_torch_at_every_size(which, default_graph, dfosd_graph):
    graph, folder = (default_graph, None) if which == "default" else (dfosd_graph, DFOSD)
    onnx, torch_up = OnnxUpscaler(graph), Upscaler.from_pretrained(folder)
    # DFOSD reads z_L with no noise: --noise-input adds no input; the teacher's (the default's) x_T has its noise
    assert onnx.inputs == (["image"] if which == "dfosd" else ["image", "noise"])
    assert onnx.scale == 4 and onnx.multiple == 4
    # multiples of 4 and not (the graph pads and crops as the upscaler does), a batch
    for shape in [(1, 3, 24, 32), (1, 3, 21, 30), (2, 3, 9, 13), (1, 3, 8, 17)]:
        lq = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        assert close(onnx.upscale_tensor(lq, seed=3), torch_up.upscale_tensor(lq, seed=3)) < TOL, shape
    # the same image in any batch, as with torch; for the teacher (the default) the seed matters
    lq = torch.rand(2, 3, 12, 12)
    one, two = onnx.upscale_tensor(lq, seed=1), onnx.upscale_tensor(lq[:1], seed=1)
    assert close(one[:1], two) < 1e-6
    assert (close(one[:1], onnx.upscale_tensor(lq[:1], seed=2)) > 1e-3) == (which == "default")


@needs_shared("data", "test", "realsr", "lr", "Canon_001_LR4.png")
@pytest.mark.slow
def test_default_model_matches_torch_on_a_real_image(default_graph):
    image = read_image(DATA / "test" / "realsr" / "lr" / "Canon_001_LR4.png").rgb
    onnx, torch_up = OnnxUpscaler(default_graph), Upscaler.from_pretrained()
    for crop in (image[:, 16:64, 40:104], image[:, 50:87, 80:123]):  # 64x48 and 43x37 px (of 128x128)
        lq = crop[None]
        assert close(onnx.upscale_tensor(lq, seed=0), torch_up.upscale_tensor(lq, seed=0)) < TOL


def test_graph_pads_as_the_upscaler():
    # reflect, and replicate where a pad is not shorter than its side (LR multiple 16: 8 px pads by 8)
    model = SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4),
                    ResShiftSchedule(), method="sinsr", steps=1, max_steps=1, lr_multiple=16)
    graph = OneStepGraph(model)
    for h, w in [(16, 32), (9, 13), (8, 12), (20, 8), (17, 30)]:
        x = torch.rand(1, 3, h, w)
        torch.testing.assert_close(graph.pad(x), pad_to_multiple(x, 16), rtol=0, atol=0)


def test_bicubic_as_a_conv_is_torch_bicubic():
    for scale in (2, 4, 8):
        x = torch.rand(1, 3, 9, 14) * 2 - 1
        conv = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"),
                                          bicubic_kernel(scale), groups=3)
        ref = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        assert close(torch.nn.functional.pixel_shuffle(conv, scale), ref) < 1e-6


# ---- the one-input graph (chaiNNer) and half precision --------------------------------------------------------
@pytest.mark.slow
def test_one_input_graph_draws_its_noise(tiny_graph):
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_graph), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["output"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["instantsr.scale"] == "4" and meta["instantsr.noise_channels"] == "1"
    image = np.random.default_rng(0).random((1, 3, 13, 10), dtype=np.float32)  # not a multiple of 2
    first, second = (session.run(None, {"image": image})[0] for _ in range(2))
    assert first.shape == (1, 3, 52, 40) and np.isfinite(first).all() and 0 <= first.min() and first.max() <= 1
    assert np.abs(first - second).max() > 1e-3  # fresh noise at every run, as torch without a seed


@pytest.mark.slow
def test_noise_drawn_in_the_graph_is_the_methods(tiny_dir, tiny_graph):
    # as far from torch's output as another seed of torch's is (mean over 12k values: 0.17 and 0.17 measured):
    # noise of the wrong scale, or none, would not be
    onnx, torch_up = OnnxUpscaler(tiny_graph), Upscaler.from_pretrained(tiny_dir)
    lq = smooth_image(16, 16, 1)[None]
    ref = torch_up.upscale_tensor(lq, seed=0)
    seeds = float((torch_up.upscale_tensor(lq, seed=1) - ref).abs().mean())
    assert 0.8 < float((onnx.upscale_tensor(lq) - ref).abs().mean()) / seeds < 1.25


@pytest.mark.slow
def test_fp16_graph_is_finite_on_flat_and_saturated_images(tiny_dir):
    graph = export_onnx(tiny_dir, tiny_dir.parent / "tiny16.onnx", fp16=True, noise_input=True)
    onnx, torch_up = OnnxUpscaler(graph), Upscaler.from_pretrained(tiny_dir)
    assert onnx.meta["dtype"] == "float16" and onnx.inputs == ["image", "noise", "lq_noise"]
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2
    images = {"black": torch.zeros(3, 16, 16), "white": torch.ones(3, 16, 16), "grey": torch.full((3, 16, 16), .5),
              "red": torch.stack([torch.ones(16, 16), torch.zeros(16, 16), torch.zeros(16, 16)]),
              "checker": checker.float().expand(3, 16, 16), "smooth": smooth_image(16, 16, 0)}
    for name, image in images.items():
        sr = onnx.upscale_tensor(image[None], seed=0)
        assert torch.isfinite(sr).all(), name
        # an Inf clamped to 0 or 1 would not hide: near the float32 torch output of the same noise
        assert close(sr, torch_up.upscale_tensor(image[None], seed=0)) < 0.02, name


# ---- refusals, in one line ------------------------------------------------------------------------------------
def test_multi_step_model_is_refused(tmp_path, capsys):
    teacher = tiny_model(tmp_path / "teacher", method="resshift", steps=4, extra=0)
    with pytest.raises(ValueError, match="4 network passes"):
        export_onnx(teacher, tmp_path / "t.onnx")
    assert main(["export", "-m", str(teacher), "-o", str(tmp_path / "t.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "one-step models" in err and not (tmp_path / "t.onnx").exists()


def test_bad_files_and_options_are_one_line(tmp_path, capsys, monkeypatch):
    save_image(smooth_image(12, 12, 0), tmp_path / "in.png")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    upscale = ["upscale", "-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "out")]
    # the options are refused before the graph is read
    cases = {("--onnx", str(tmp_path / "missing.onnx")): "no such ONNX file",
             ("--onnx", str(broken)): "not a readable ONNX graph",
             ("--onnx", str(broken), "--tile", "64"): "whole images",
             ("--onnx", str(broken), "--steps", "4"): "fixed in the ONNX graph",
             ("--onnx", str(broken), "--fp16"): "fixed in the ONNX graph",
             ("--onnx", str(broken), "-m", str(tmp_path)): "give one"}
    for extra, message in cases.items():
        assert main(upscale + list(extra)) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, (extra, err)
    assert main(["export", "-o", str(tmp_path / "model.pt")]) == 2
    assert "named .onnx" in capsys.readouterr().err
    assert main(["export", "-o", str(tmp_path / "model.onnx"), "--opset", "12"]) == 2
    assert "opset 18 and above" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert main(upscale + ["--onnx", str(broken)]) == 2
    assert 'pip install "instantsr[onnx]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---- the CLI round trip, and the bench row --------------------------------------------------------------------
@pytest.mark.slow
def test_upscale_onnx_writes_the_torch_images(default_graph, tmp_path, capsys):
    for name, (h, w) in {"a": (20, 28), "b": (19, 26)}.items():
        save_image(smooth_image(h, w, len(name)), tmp_path / "in" / f"{name}.png")
    common = ["-i", str(tmp_path / "in"), "--seed", "7", "--color-fix", "wavelet"]
    assert main(["upscale", "-o", str(tmp_path / "torch")] + common) == 0
    assert main(["upscale", "--onnx", str(default_graph), "-o", str(tmp_path / "onnx")] + common) == 0
    assert "2 upscaled, 0 skipped (exist), 0 failed" in capsys.readouterr().out
    for name in ("a.png", "b.png"):
        ours, theirs = (read_image(tmp_path / d / name).rgb for d in ("onnx", "torch"))
        assert ours.shape == theirs.shape and close(ours, theirs) <= 1 / 255 + 1e-6  # 8-bit rounding at most
    assert main(["upscale", "--onnx", str(default_graph), "-o", str(tmp_path / "onnx")] + common) == 0
    assert "0 upscaled, 2 skipped" in capsys.readouterr().out  # the same file loop: existing outputs skipped


@pytest.mark.slow
def test_bench_onnx_row(tiny_dir, tiny_graph, tmp_path, monkeypatch):
    # the export itself is tested above: here the bench takes the graph already written
    import shutil

    from instantsr import onnx_export

    monkeypatch.setattr(onnx_export, "export_onnx", lambda src, out, **kw: shutil.copy(tiny_graph, out))
    rows = bench.run_bench(bench.BenchConfig(models=[f"tiny={tiny_dir}"], output=str(tmp_path), steps=(1,),
                                             sizes=(16, 24), batches=(1, 2), tiles=(16,), repeats=1, warmup=0,
                                             quality=False, onnx=True, device="cpu", dtype="fp32"))
    row = {r["name"]: r for r in rows}["tiny-onnxruntime"]
    assert row["passes_per_img"] == 1 and row["s_img_16_b1"] > 0 and row["s_img_16_b2"] > 0
    assert row.get("s_img_24_tile16") is None  # no tiles for a graph: "-" in the report
    assert "| tiny-onnxruntime | 1 | 1 |" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_vp_model_on_a_kl_codec_matches_torch(tmp_path):
    """A YONOS-SR model (VP family, KL autoencoder with attention, v-prediction): its schedule tables are constants
    in the graph (ONNX has no cumprod), and the graph gives the torch upscaler's output."""
    from instantsr.methods.autoencoder import AutoencoderConfig, build_autoencoder
    from instantsr.methods.yonos import YonosConfig, YonosRecipe

    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(width="tiny", down=4, latent_channels=4)).save_pretrained(tmp_path / "ae")
    YonosRecipe(YonosConfig(unet="tiny", scale=4, codec=str(tmp_path / "ae"))).sr_model().save_pretrained(
        tmp_path / "yonos")
    onnx = OnnxUpscaler(export_onnx(tmp_path / "yonos", tmp_path / "yonos.onnx", noise_input=True))
    torch_up = Upscaler.from_pretrained(tmp_path / "yonos")
    for shape in [(1, 3, 16, 24), (1, 3, 13, 10)]:  # a multiple of the codec's 4 and not
        lq = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        assert close(onnx.upscale_tensor(lq, seed=5), torch_up.upscale_tensor(lq, seed=5)) < TOL, shape


@pytest.mark.slow
def test_learned_pixel_decoder_exports_and_grey_stays_grey(tmp_path):
    """A pixel-unshuffle model with a learned decoder (`train decoder`, random weights here) exports as one pass
    and gives torch's output; a grey image comes back grey from both runners."""
    folder = tiny_model(tmp_path / "model", extra=0)
    model = SRModel.from_pretrained(folder)
    model.codec = PixelUnshuffleCodec(4, 3, decoder_channels=4, decoder_layers=3)
    torch.manual_seed(1)
    for p in model.codec.refiner.parameters():
        torch.nn.init.normal_(p, std=0.2)
    model.save_pretrained(folder)
    onnx = OnnxUpscaler(export_onnx(folder, tmp_path / "dec.onnx", noise_input=True))
    torch_up = Upscaler.from_pretrained(folder)
    lq = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(3))
    assert close(onnx.upscale_tensor(lq, seed=5), torch_up.upscale_tensor(lq, seed=5)) < TOL
    grey = lq[:, :1].expand(1, 3, 20, 28)
    for up in (onnx, torch_up):
        sr = up.upscale_tensor(grey, seed=5)
        assert torch.equal(sr[:, 0], sr[:, 1]) and torch.equal(sr[:, 1], sr[:, 2])


# ---- issue 32: the official Swin-UNet, the seeded noise streams, export failures in plain text ----------------
SWIN_CONFIG = dict(image_size=16, lq_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                   attention_resolutions=(16, 8), swin_embed_dim=32, num_head_channels=16, window_size=8)


@pytest.mark.slow
def test_official_swin_model_exports_and_matches_torch(tmp_path):
    """A reduced-width SinSR in the official layout (converted from official-style .pth files: Swin-UNet + VQ-f4)
    exports (its window attention passes 4-D q/k/v to SDPA; onnxscript takes no other) and gives torch's output
    to 1e-4 (measured 5e-6), at a size that is not a multiple of the model's and in a batch of 2."""
    from instantsr.convert import convert_official
    from instantsr.nets.swin_unet import ResShiftSwinUNet
    from instantsr.nets.vqgan import ResShiftVQGAN

    from .test_official_nets import SMALL_VQ, perturbed

    torch.manual_seed(0)
    unet, vq = perturbed(ResShiftSwinUNet(**SWIN_CONFIG)), perturbed(ResShiftVQGAN(**SMALL_VQ))
    torch.save({"state_dict": unet.state_dict()}, tmp_path / "SinSR_v1.pth")
    torch.save({"state_dict": vq.state_dict()}, tmp_path / "autoencoder_vq_f4.pth")
    folder = tmp_path / "sinsr"
    convert_official(tmp_path / "SinSR_v1.pth", tmp_path / "autoencoder_vq_f4.pth", "sinsr", folder,
                     unet_config=SWIN_CONFIG, autoencoder_config=SMALL_VQ)
    onnx = OnnxUpscaler(export_onnx(folder, tmp_path / "sinsr.onnx", noise_input=True))
    torch_up = Upscaler.from_pretrained(folder)
    assert type(torch_up.model.backbone).__name__ == "ResShiftSwinUNet"
    for shape in [(1, 3, 64, 64), (2, 3, 40, 72)]:
        lq = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        assert close(onnx.upscale_tensor(lq, seed=5), torch_up.upscale_tensor(lq, seed=5)) < TOL, shape


@pytest.mark.slow
def test_seeded_noise_inputs_are_the_torch_upscalers(tiny_dir):
    """`noise` (x_T's, from the seed) and `lq_noise` (RSD's extra channels, from the upscaler's generator stream
    `pipeline.step_seed`, apart from x_T's) fed by OnnxUpscaler give torch's output for the same seed."""
    graph = export_onnx(tiny_dir, tiny_dir.parent / "tiny_noise32.onnx", noise_input=True)
    onnx, torch_up = OnnxUpscaler(graph), Upscaler.from_pretrained(tiny_dir)
    assert onnx.inputs == ["image", "noise", "lq_noise"]
    lq = torch.stack([smooth_image(16, 20, 1), smooth_image(16, 20, 2)])
    ref = torch_up.upscale_tensor(lq, seed=3)
    assert close(onnx.upscale_tensor(lq, seed=3), ref) < TOL
    assert close(onnx.upscale_tensor(lq, seed=4), ref) > 100 * TOL


ANSI_FAILURE = ("Failed to convert the exported program to an ONNX model. \x1b[96mThis is step 3/3\x1b[0m of "
                "exporting the model to ONNX. Next steps:\n- If there is a missing ONNX function, implement it.\n\n"
                "## Exception summary\n\n<class 'AssertionError'>: only 4D query, key, and value are supported\n"
                "⬆️\n<class 'torch.onnx._internal.exporter._errors.ConversionError'>: Error when translating node "
                "%scaled_dot_product_attention_1 : [num_users=1] = call_function[target=torch.ops.aten."
                "scaled_dot_product_attention.default](args = (%getitem_2, ...), kwargs = {}).\n\n(Refer to the "
                "full stack trace above for more information.)")


def test_export_failures_name_their_cause_in_plain_text(tiny_dir, monkeypatch):
    """torch's exporter fails with pages of text, colour codes and a generic first line; the error names the cause
    (the innermost 'not supported' line, and the op) in one line of plain text."""
    def failing(*args, **kwargs):
        try:
            try:
                raise AssertionError("only 4D query, key, and value are supported")
            except AssertionError as inner:
                raise RuntimeError("Error when translating node %scaled_dot_product_attention_1 : "
                                   "call_function[target=torch.ops.aten.scaled_dot_product_attention.default]") \
                    from inner
        except RuntimeError as middle:
            raise RuntimeError(ANSI_FAILURE) from middle

    monkeypatch.setattr(torch.export, "export", failing)
    with pytest.raises(RuntimeError) as info:
        export_onnx(tiny_dir, tiny_dir.parent / "never.onnx")
    message = str(info.value)
    assert message == (f"{tiny_dir}: cannot export to ONNX (aten.scaled_dot_product_attention: only 4D query, key, "
                       "and value are supported)")
    assert not (tiny_dir.parent / "never.onnx").exists()

    def plain(*args, **kwargs):
        raise ValueError("\x1b[1;31mSomething \x1b[0mwent wrong\x1b[0m\nand a second line")

    monkeypatch.setattr(torch.export, "export", plain)
    with pytest.raises(RuntimeError, match=r"cannot export to ONNX \(Something went wrong\)$") as info:
        export_onnx(tiny_dir, tiny_dir.parent / "never.onnx")
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value)
