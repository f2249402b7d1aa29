"""All zoo LightningDataModules; importing this package registers every DataModule.

Every module in this folder is imported and its ``__all__`` re-exported, e.g.
``from zoo.datamodules import MNISTDataModule``.
"""
from zoo._discover import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
