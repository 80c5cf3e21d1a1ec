"""Errors of the adapter registry, each with a message a user can act on."""


class AdapterError(Exception):
    """Base of adapter errors; `str(error)` is meant for the user."""


class AdapterNotFoundError(AdapterError):
    """No adapter of that name is registered."""


class InvalidAdapterError(AdapterError):
    """The directory is not a usable PEFT LoRA adapter (or the name is not acceptable)."""
