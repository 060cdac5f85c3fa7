"""The list of verbs the ``cka-probe`` group offers; each module adds its command here."""

from __future__ import annotations

ALL: list = []
