"""All zoo LightningModules; importing this package registers every model.

Every module in this folder is imported and its ``__all__`` re-exported, so
``from zoo.models import GAN`` works. Heavy optional libraries (transformers, torch_geometric,
timm) are imported inside the models that need them, so listing models stays fast.
"""
from zoo._discover import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
