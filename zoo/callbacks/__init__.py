"""Zoo callbacks (image samplers and run-level helpers); every module's ``__all__`` is re-exported."""
from zoo._discover import import_submodules

__all__ = import_submodules(__name__, __path__, globals())
