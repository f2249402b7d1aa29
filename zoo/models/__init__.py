"""All zoo LightningModules, imported lazily: ``from zoo.models import GAN`` imports ``gan.py`` only.

The public names are the ``__all__`` of every module in this folder; which model a name registers is
``zoo.registry.MODELS``.
"""
from zoo._discover import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, __path__)
