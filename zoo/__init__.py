"""Lightning Zoo: classic deep-learning architectures as LightningModules with matching DataModules.

``import zoo`` and ``zoo.list_models()`` read the static name table in ``zoo.registry`` and import no
torch; a class is imported when it is first used (``create_model``, ``from zoo.models import GAN``).

Example:
    >>> import zoo
    >>> model = zoo.create_model("cnn", num_classes=10)
    >>> "cnn" in zoo.list_models()
    True
"""
from zoo.registry import (
    create_datamodule,
    create_model,
    get_datamodule_entry,
    get_model_entry,
    list_datamodules,
    list_models,
    register_datamodule,
    register_model,
)

__version__ = "0.1.0"
__all__ = ["create_model", "create_datamodule", "get_model_entry", "get_datamodule_entry", "list_models",
           "list_datamodules", "register_model", "register_datamodule", "__version__"]
