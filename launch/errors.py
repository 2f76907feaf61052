"""The launch layer's own errors; each message says what is wrong and how to fix it."""


class UsageError(ValueError):
    """Bad input found before any long work; the message says how to fix it."""


class Irreproducible(RuntimeError):
    """`eval` of a finished run gave other numbers than its results.json."""
