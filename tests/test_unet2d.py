"""nets/unet2d.py is diffusers' UNet2DModel in plain torch: the same parameter names (so the same weight files) and
the same outputs, for every block layout ConditionalUNet builds; and model folders load without diffusers."""

import json
import subprocess
import sys

import pytest
import torch
from diffusers import UNet2DModel

from instantsr.nets.unet import UNET_PRESETS, ConditionalUNet
from instantsr.nets.unet2d import UNet2D


def diffusers_twin(preset: dict, in_channels: int, out_channels: int) -> UNet2DModel:
    levels = preset["attention_levels"]
    return UNet2DModel(in_channels=in_channels, out_channels=out_channels,
                       block_out_channels=preset["block_out_channels"], layers_per_block=preset["layers_per_block"],
                       down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in levels),
                       up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
                       norm_num_groups=preset.get("norm_num_groups", 32), attention_head_dim=32,
                       add_attention=preset.get("mid_attention", True))


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_outputs_and_parameter_names_equal_diffusers_unet2dmodel(name):
    preset = {k: v for k, v in UNET_PRESETS[name].items()}
    if name == "base":  # base at a test's size: its layout (attention at the lowest level and in the middle)
        preset.update(block_out_channels=(32, 32, 64), layers_per_block=2)
    torch.manual_seed(0)
    reference = diffusers_twin(preset, 7, 4).eval()
    for p in reference.parameters():  # diffusers zero-inits nothing that matters; randomise all alike
        torch.nn.init.normal_(p, std=0.2)
    ours = UNet2D(7, 4, preset["block_out_channels"], preset["layers_per_block"], preset["attention_levels"],
                  preset.get("norm_num_groups", 32), 32, preset.get("mid_attention", True)).eval()
    ours.load_state_dict(reference.state_dict())  # strict: names and shapes agree
    assert sorted(ours.state_dict()) == sorted(reference.state_dict())
    x, t = torch.randn(2, 7, 16, 24), torch.tensor([3, 11])
    with torch.no_grad():
        expected = reference(x, t).sample
        torch.testing.assert_close(ours(x, t), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x, torch.tensor(5)), reference(x, torch.tensor(5)).sample, atol=1e-5,
                                   rtol=1e-5)
    assert expected.abs().mean() > 0.1  # a real signal, not zeros on both sides


def test_conditional_unet_round_trips_a_folder_and_reads_it_without_diffusers(tmp_path):
    torch.manual_seed(0)
    model = ConditionalUNet.from_preset("tiny", latent_channels=12)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    model.save_pretrained(tmp_path / "backbone")
    loaded = ConditionalUNet.from_pretrained(tmp_path / "backbone")
    assert loaded.config == json.loads(json.dumps(model.config)) and loaded.config.block_out_channels == [16, 32]
    x, lq, t = torch.randn(1, 12, 8, 8), torch.rand(1, 3, 8, 8), torch.tensor(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, lq), model(x, t, lq))
    code = ("import sys; from instantsr.nets.unet import ConditionalUNet; "
            f"ConditionalUNet.from_pretrained({str(tmp_path / 'backbone')!r}); "
            "import instantsr.pipeline; assert 'diffusers' not in sys.modules, 'diffusers imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
