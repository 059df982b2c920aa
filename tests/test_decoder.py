"""Decoder fine-tuning of a finished one-step model (methods/decoder.py): a KL codec's decoder is tuned; a
pixel-unshuffle codec gets a learned decoder that starts as pixel-shuffle, runs exactly in strips, and is the only
part that changes."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from instantsr.cli import main
from instantsr.codecs import PixelUnshuffleCodec
from instantsr.methods.decoder import DecoderConfig, DecoderRecipe
from instantsr.methods.yonos import YonosConfig, YonosRecipe
from instantsr.model import SRModel
from instantsr.pipeline import Upscaler
from instantsr.train import Trainer

from .conftest import smooth_image
from .test_train import losses, tiny_train_config


class MeanAbs(torch.nn.Module):
    """An LPIPS stand-in (no weights needed): mean absolute difference per image."""

    def forward(self, a, b):
        return (a - b).abs().flatten(1).mean(1)


@pytest.fixture
def kl_yonos(tmp_path):
    """A tiny x4 yonos model on a tiny KL-f4 codec, as a finished one-step model."""
    from instantsr.methods.autoencoder import AutoencoderConfig, build_autoencoder

    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(width="tiny", down=4, latent_channels=3)).save_pretrained(tmp_path / "ae")
    folder = tmp_path / "yonos_kl"
    YonosRecipe(YonosConfig(unet="tiny", scale=4, codec=str(tmp_path / "ae"))).sr_model().save_pretrained(folder)
    return folder


def changed_keys(before: SRModel, after: SRModel) -> set[str]:
    old, new = before.state_dict(), after.state_dict()
    return {k for k in new if k not in old or not torch.equal(old[k], new[k])}


@pytest.mark.parametrize("gan_weight", [0.0, 0.1])
def test_kl_decoder_fine_tuning_changes_only_the_decoder(kl_yonos, hr_folder, tmp_path, gan_weight):
    config = DecoderConfig(model=str(kl_yonos), gan_weight=gan_weight, disc_channels=8)
    recipe = DecoderRecipe(config, lpips=MeanAbs())
    disc_before = copy.deepcopy(recipe.discriminator)
    run = tmp_path / "dec"
    Trainer(recipe, tiny_train_config(hr_folder, steps=3, lr=1e-2, ema_decay=0.0), run, "decoder").run()
    assert len(losses(run)) == 3
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert ("gan" in header and "disc" in header) == bool(gan_weight)
    if gan_weight:  # the discriminator trains alongside (and stays out of the exported model)
        assert any(not torch.equal(a, b) for a, b in zip(disc_before.state_dict().values(),
                                                        recipe.discriminator.state_dict().values()))
    before, after = SRModel.from_pretrained(kl_yonos), SRModel.from_pretrained(run / "model")
    assert before.state_dict().keys() == after.state_dict().keys()
    changed = changed_keys(before, after)
    assert changed and all(k.startswith("codec.vae.decoder.") for k in changed), sorted(changed)[:3]
    assert json.loads((run / "model" / "model_index.json").read_text())["steps"] == 1


def test_a_pixel_unshuffle_model_gets_a_decoder_that_starts_as_pixel_shuffle(model_dir, hr_folder, tmp_path):
    lq = smooth_image(24, 20, 3)[None]
    before = SRModel.from_pretrained(model_dir)
    assert before.codec.refiner is None
    recipe = DecoderRecipe(DecoderConfig(model=str(model_dir), decoder_channels=8), lpips=MeanAbs())
    assert recipe.model.codec.refiner is not None and recipe.model.codec.halo == 3
    with torch.no_grad():  # zero-initialised last layer: the same output as the model had
        torch.testing.assert_close(Upscaler(recipe.model).upscale_tensor(lq, seed=1),
                                   Upscaler(before).upscale_tensor(lq, seed=1), rtol=0, atol=0)

    run = tmp_path / "dec"
    Trainer(recipe, tiny_train_config(hr_folder, steps=3, lr=1e-2, ema_decay=0.0), run, "decoder").run()
    after = SRModel.from_pretrained(run / "model")
    changed = changed_keys(before, after)
    assert changed and all(k.startswith("codec.refiner.") for k in changed), sorted(changed)[:3]
    codec_config = json.loads((run / "model" / "codec" / "config.json").read_text())
    assert (codec_config["decoder_channels"], codec_config["decoder_layers"]) == (8, 3)
    assert (run / "model" / "codec" / "diffusion_pytorch_model.safetensors").is_file()
    with torch.no_grad():
        sr = Upscaler(after).upscale_tensor(lq, seed=1)
    assert sr.shape == (1, 3, 96, 80)
    assert not torch.equal(sr, Upscaler(before).upscale_tensor(lq, seed=1))


def test_target_model_compares_with_the_models_own_output_and_starts_at_zero(model_dir, kl_yonos, hr_folder):
    """target = model: at the start (a zero residual) the decoded image is the model's own output, so L1 and the
    LPIPS stand-in are exactly 0 whatever the HR crop; the grid terms then have nothing to trade against but
    leaving the image as it was. A KL codec has no such output to keep: refused."""
    recipe = DecoderRecipe(DecoderConfig(model=str(model_dir), target="model", decoder_channels=4), lpips=MeanAbs())

    class Context:  # a StepContext stand-in that records the losses only
        generator, step = torch.Generator().manual_seed(0), 0

        def update(self, name, loss):
            pass

    from instantsr.data import degrade_collate, degrade_pairs

    hr, lr = degrade_pairs(degrade_collate([(smooth_image(32, 32, i), i) for i in range(2)], scale=4), scale=(4,))
    logs = recipe.training_step(hr, lr, Context())
    assert float(logs["l1"]) == 0.0 and float(logs["lpips"]) == 0.0
    hr_recipe = DecoderRecipe(DecoderConfig(model=str(model_dir), decoder_channels=4), lpips=MeanAbs())
    assert float(hr_recipe.training_step(hr, lr, Context())["l1"]) > 0.01  # against HR: the untrained model's error
    with pytest.raises(ValueError, match="target = model needs a pixel-unshuffle codec"):
        DecoderRecipe(DecoderConfig(model=str(kl_yonos), target="model"), lpips=MeanAbs())
    with pytest.raises(ValueError, match="choose hr or model"):
        DecoderConfig(target="teacher")


def test_the_learned_decoder_is_exact_in_strips():
    torch.manual_seed(0)
    codec = PixelUnshuffleCodec(4, 3, decoder_channels=8, decoder_layers=3)
    for p in codec.refiner.parameters():
        torch.nn.init.normal_(p, std=0.3)
    z = torch.randn(1, 48, 37, 23)
    with torch.no_grad():
        whole = codec.decode(z)
        codec.strip_pixels = 5 * 92  # strips of 5 rows, each with 3 rows of context either side
        strips = codec.decode(z)
    torch.testing.assert_close(strips, whole, rtol=1e-5, atol=1e-5)  # float summation order only
    assert whole.shape == (1, 3, 148, 92)


def test_the_decoder_method_through_the_cli(model_dir, hr_folder, tmp_path):
    config = tmp_path / "dec.toml"
    config.write_text('method = "decoder"\n[train]\nsteps = 2\nbatch_size = 2\ncrop = 32\nnum_workers = 0\n'
                      'log_every = 1\n[decoder]\nlpips_weight = 0.0\ngrid_weight = 10.0\ngrid_ratio_weight = 0.1\n'
                      'decoder_channels = 4\n')
    run = tmp_path / "run"
    assert main(["train", "decoder", "--config", str(config), "--model", str(model_dir), "--data", str(hr_folder),
                 "--out", str(run)]) == 0
    assert len(losses(run)) == 2
    assert (run / "log.csv").read_text().splitlines()[0].split(",")[:5] == ["step", "loss", "l1", "grid", "grid_ratio"]
    assert SRModel.from_pretrained(run).codec.config.decoder_channels == 4


def test_a_codec_without_a_decoder_to_tune_is_refused(tmp_path):
    from instantsr.codecs import VQF4Codec
    from instantsr.diffusion.resshift import ResShiftSchedule
    from instantsr.nets.unet import ConditionalUNet

    codec = VQF4Codec(ch=32, n_embed=16, embed_dim=3, ch_mult=(1, 2, 4), num_res_blocks=1)
    SRModel(ConditionalUNet.from_preset("tiny", latent_channels=3), codec, ResShiftSchedule(), scale=4,
            method="sinsr", steps=1, max_steps=1).save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="decoder fine-tuning takes a pixel-unshuffle or a KL codec"):
        DecoderRecipe(DecoderConfig(model=str(tmp_path / "vq")), lpips=MeanAbs())
