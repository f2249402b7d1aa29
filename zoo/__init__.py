"""Lightning Zoo: classic deep-learning architectures as LightningModules with matching DataModules.

The registry functions import (and so register) every model and DataModule on first use, which
keeps ``import zoo`` and ``train.py --list`` fast.

Example:
    >>> import zoo
    >>> model = zoo.create_model("cnn", num_classes=10)
    >>> "cnn" in zoo.list_models()
    True
"""
from zoo.registry import (
    create_datamodule,
    create_model,
    get_model_entry,
    list_datamodules,
    list_models,
    register_datamodule,
    register_model,
)

__version__ = "0.1.0"
__all__ = ["create_model", "create_datamodule", "get_model_entry", "list_models", "list_datamodules",
           "register_model", "register_datamodule", "__version__"]
