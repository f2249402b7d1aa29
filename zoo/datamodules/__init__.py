"""All zoo LightningDataModules, imported lazily: ``from zoo.datamodules import MNISTDataModule`` imports
``images.py`` only. The public names are the ``__all__`` of every module here; the registered names are
``zoo.registry.DATAMODULES``.
"""
from zoo._discover import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, __path__)
