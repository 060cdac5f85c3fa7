"""The list of verbs the ``cka-probe`` group offers; each module adds its command here."""

from __future__ import annotations

from .compare import compare
from .layers import layers
from .models import models
from .train import train

ALL: list = [compare, layers, models]
ALL.append(train)
