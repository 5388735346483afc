"""Ignite: a small training loop for PyTorch with events and pip-installable plugins."""

from ._plugins import PluginError, PluginInactive
from .events import TrainingEvents
from .history import History
from .hookspecs import hookimpl
from .trainer import EventHandle, Preempted, Trainer

__all__ = [
    "EventHandle",
    "History",
    "PluginError",
    "PluginInactive",
    "Preempted",
    "Trainer",
    "TrainingEvents",
    "__version__",
    "hookimpl",
]

__version__ = "0.1.0"
