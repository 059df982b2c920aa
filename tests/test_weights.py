"""Tests of instantsr.weights: the cache location, the missing-weights message, hash checking, conversion
and skipping, on small archives built here (offline) and, for the hash check, the real pinned wheel."""

import dataclasses
import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from instantsr import weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("INSTANTSR_CACHE", str(path))
    return path


def _fake_dists_wheel(folder, alpha_value=0.5):
    """A wheel with the pinned file name holding DISTS_pytorch/weights.pt of known tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"alpha": torch.full((1, 1475, 1, 1), alpha_value), "beta": torch.ones(1, 1475, 1, 1)}, buf)
    path = folder / weights.ARCHIVES["dists-pytorch"].filename
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("DISTS_pytorch/weights.pt", buf.getvalue())
    return path


def _pin(monkeypatch, key, sha256):
    monkeypatch.setitem(weights.ARCHIVES, key, dataclasses.replace(weights.ARCHIVES[key], sha256=sha256))


def test_cache_dir_honours_env(cache, monkeypatch):
    assert weights.cache_dir() == cache
    assert weights.weights_path("dists") == cache / "dists.safetensors"
    status = weights.weights_status()
    assert [row["name"] for row in status] == list(weights.WEIGHTS)
    assert not any(row["present"] for row in status)
    monkeypatch.delenv("INSTANTSR_CACHE")
    assert weights.cache_dir() == Path.home() / ".cache" / "instantsr"


def test_missing_weights_message(cache):
    with pytest.raises(weights.WeightsNotFoundError) as info:
        weights.load("dists")
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert "`instantsr weights fetch`" in message and str(cache) in message and "INSTANTSR_CACHE" in message
    assert "\n" not in message
    with pytest.raises(KeyError, match="known: alexnet"):
        weights.load("resnet")


def test_hash_mismatch_offline_archive(cache, tmp_path):
    archives = tmp_path / "archives"
    _fake_dists_wheel(archives)  # not the pinned bytes
    with pytest.raises(weights.WeightsHashError, match="expected 73e54ce1"):
        weights.fetch(["dists"], verbose=False, archive_dir=archives)
    assert not weights.weights_path("dists").exists()


def test_hash_mismatch_downloaded(cache, monkeypatch):
    # the real pinned wheel (20 kB) from the index, against a wrong expected hash
    _pin(monkeypatch, "dists-pytorch", "0" * 64)
    with pytest.raises(weights.WeightsHashError, match="refusing to use it"):
        weights.fetch(["dists"], verbose=False)
    assert not weights.weights_path("dists").exists()


def test_fetch_converts_once_and_skips(cache, tmp_path, monkeypatch):
    archives = tmp_path / "archives"
    wheel = _fake_dists_wheel(archives)
    _pin(monkeypatch, "dists-pytorch", hashlib.sha256(wheel.read_bytes()).hexdigest())
    paths = weights.fetch(["dists"], verbose=False, archive_dir=archives)
    assert paths == {"dists": cache / "dists.safetensors"}
    loaded = weights.load("dists")
    assert torch.equal(loaded["alpha"], torch.full((1, 1475, 1, 1), 0.5))
    assert [r["present"] for r in weights.weights_status() if r["name"] == "dists"] == [True]
    # present -> skipped: a different archive is not even looked at
    wheel.unlink()
    mtime = os.stat(paths["dists"]).st_mtime_ns
    weights.fetch(["dists"], verbose=False, archive_dir=archives)
    assert os.stat(paths["dists"]).st_mtime_ns == mtime


def test_flax_pickle_conversion_layout():
    rng = np.random.default_rng(0)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    params = {"AlexNet_0": {f"Conv_{i}": {"kernel": rng.standard_normal(s).astype(np.float32),
                                          "bias": rng.standard_normal(s[-1]).astype(np.float32)}
                            for i, s in enumerate(shapes)},
              "NetLinLayer_0": {"Conv_0": {"kernel": np.zeros((1, 1, 64, 1), np.float32)}}}
    out = weights.WEIGHTS["alexnet"].convert(pickle.dumps(params))
    assert sorted(out) == sorted(f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias"))
    k = params["AlexNet_0"]["Conv_1"]["kernel"]
    assert out["features.3.weight"].shape == (192, 64, 5, 5)
    assert out["features.3.weight"][7, 2, 1, 4] == torch.tensor(k[1, 4, 2, 7])


def test_unpickler_refuses_other_globals():
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        weights.WEIGHTS["vgg16"].convert(pickle.dumps({"VGG16_0": os.getcwd}))
