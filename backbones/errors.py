"""Errors of the backbones package.

`backbones` must not import `detect`, so it has its own error type; the `detect` CLI turns it into a
one-line UserError. A BackboneError is always bad input (an unknown name or option, a weights file
that does not fit), never a bug of ours.
"""


class BackboneError(ValueError):
    """Bad input to the backbones package; the message names the file or name and the problem."""
