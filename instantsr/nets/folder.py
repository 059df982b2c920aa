"""Save and load a module as a diffusers-layout folder (`config.json` + `diffusion_pytorch_model.safetensors`)
without importing diffusers.

Importing diffusers pulls in its whole model registry (peft, transformers, scipy: 3-5 s on a laptop CPU), which an
upscale with our own UNet and the pixel-unshuffle codec never uses: a 64x48 photo took four times as long as
`import torch`. `ConditionalUNet` and `PixelUnshuffleCodec` are therefore plain torch modules on this base; the
folders they write are the ones diffusers' `ModelMixin` writes and reads (`_class_name` in config.json, the
weights under the same name), so folders written before this change load unchanged.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import torch
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


class FrozenConfig(dict):
    """The constructor arguments of a module, read as `config.name` or `config["name"]` (as diffusers' own).
    Changing it changes nothing: build a new model instead."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def register_to_config(init):
    """Decorate `__init__` of a `FolderModule` so that its arguments (defaults filled in) become `self.config`."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        self.__dict__["config"] = FrozenConfig(list(bound.arguments.items())[1:])

    return wrapper


class FolderModule(nn.Module):
    """`save_pretrained`, `from_pretrained`, `from_config`, `load_config`, `device` and `dtype` as diffusers'
    `ModelMixin` + `ConfigMixin` have them, for a module whose `__init__` is wrapped in `register_to_config`."""

    config: FrozenConfig

    @property
    def device(self) -> torch.device:
        return next(self._tensors()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(t for t in self._tensors() if t.is_floating_point()).dtype

    def _tensors(self):
        yield from self.parameters()
        yield from self.buffers()

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **self.config}
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = self.state_dict()
        if state:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, folder / WEIGHTS_NAME, metadata={"format": "pt"})

    @classmethod
    def load_config(cls, folder: str | Path) -> dict:
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise OSError(f"no {CONFIG_NAME} in {folder}")
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"{path}: not a JSON object")
        return config

    @classmethod
    def from_config(cls, config: dict) -> "FolderModule":
        # keys this class does not take (`_class_name`, `_diffusers_version`, a newer version's) are left out
        known = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in config.items() if k in known and k != "self"})

    @classmethod
    def from_pretrained(cls, folder: str | Path, **_ignored) -> "FolderModule":
        """The module saved in `folder`; keyword arguments diffusers takes (`local_files_only`, ...) are ignored:
        nothing is ever downloaded."""
        model = cls.from_config(cls.load_config(folder))
        if model.state_dict():
            path = Path(folder) / WEIGHTS_NAME
            if not path.is_file():
                raise OSError(f"no {WEIGHTS_NAME} in {folder}")
            from safetensors.torch import load_file

            model.load_state_dict(load_file(path))  # strict: a missing, extra or misshapen tensor is an error
        return model
