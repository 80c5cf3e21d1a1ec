"""Errors of the offline evaluations, each with a message a user can act on."""


class EvalError(Exception):
    """Base of evaluation errors; `str(error)` is meant for the user."""


class ScorerError(EvalError):
    """A metric that cannot be used: unknown name, an unreadable schema, a scorer that does not
    import or does not return a number."""


class AdviceError(EvalError):
    """Advice that cannot start: too few examples, mixed formats, an unusable adapter or
    collection, answers beyond the context. Raised before any request is sent."""
