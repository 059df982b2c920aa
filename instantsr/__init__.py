"""instantsr: one-step diffusion image super-resolution."""

__version__ = "0.1.0"

# Public API, imported on first use so that `import instantsr` (and `instantsr --help`) stays instant.
_LAZY = {"Upscaler": "instantsr.pipeline", "load_model": "instantsr.pipeline"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'instantsr' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
