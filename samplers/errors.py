"""The one exception type the samplers raise for bad input.

`SamplerError` subclasses `ValueError`, so callers that catch `ValueError` (the CLI
does) see it too. Messages name the bad value and say what to do instead.
"""


class SamplerError(ValueError):
    """Bad input to a schedule, a training helper or a sampler; the message names the fix."""


def unknown_name(kind: str, name: object, known) -> SamplerError:
    """`SamplerError` for a name that is not one of `known`, listing the known ones."""
    listed = ", ".join(repr(k) for k in known)
    return SamplerError(f"unknown {kind} {name!r}; choose one of {listed}")
