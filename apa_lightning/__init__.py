"""Applied deep learning experiments as Lightning modules, launched and composed by Hydra."""

__version__ = "0.1.0"
