"""The list of verbs the ``cka-probe`` group offers; each module adds its command here."""

from __future__ import annotations

from .compare import compare
from .figure import figure
from .identify import identify
from .layers import layers
from .models import models
from .train import train
from .zoo import zoo

ALL: list = [compare, figure, identify, layers, models, zoo]
ALL.append(train)
