"""Errors raised by cka-probe.

Every error is one line that names the problem and, where there is one, the fix.
The command line turns any :class:`CKAProbeError` into that line and exit code 2.
"""

from __future__ import annotations

__all__ = ["CKAProbeError", "ShapeError", "LayerSelectionError", "NonFiniteFeatureError"]


class CKAProbeError(ValueError):
    """Base class of every error cka-probe raises on bad input."""


class ShapeError(CKAProbeError):
    """Features whose shapes cannot be compared (different n, wrong rank, too few samples)."""


class LayerSelectionError(CKAProbeError):
    """A layer name or pattern that selects nothing, or a layout that cannot be decided."""


class NonFiniteFeatureError(CKAProbeError):
    """A layer whose features contain NaN or infinity."""
