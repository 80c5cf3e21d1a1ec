"""Errors of the adapter registry, each with a message a user can act on."""


class AdapterError(Exception):
    """Base of adapter errors; `str(error)` is meant for the user."""


class AdapterNotFoundError(AdapterError):
    """No adapter (or no version) of that name is registered."""


class InvalidAdapterError(AdapterError):
    """The directory is not a usable PEFT LoRA adapter (or the name is not acceptable)."""


class TrainingDataError(InvalidAdapterError):
    """The training data file is missing, malformed or too small."""


class AdapterConflictError(AdapterError):
    """The change conflicts with the registry as it is now (409): the name is taken, the version
    is the one in force, or another operation changed the adapter first."""


class AdapterBusyError(AdapterConflictError):
    """The adapter version is answering requests, so it cannot be unloaded or removed now."""
