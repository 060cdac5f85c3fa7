"""The engine: models and images in, recorded layers and CKA tables out.

Feature extraction (:mod:`.features`), the feature cache (:mod:`.cache`), Grams spooled to disk
(:mod:`.spool`), the one estimation function (:mod:`.estimation`), the local and Ray executors
(:mod:`.executors`, :mod:`.ray_executor`), provenance records (:mod:`.provenance`) and atomic output
files (:mod:`._io`). The jobs in :mod:`cka_probe.jobs` use it; it knows nothing of them.

Names are imported when first used (PEP 562), so that ``import cka_probe.engine.estimation`` stays light.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "FeatureCache": "cache",
    "CKASettings": "estimation",
    "pair_tables": "estimation",
    "ExtractedFeatures": "features",
    "extract_features": "features",
    "resolve_device": "features",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
