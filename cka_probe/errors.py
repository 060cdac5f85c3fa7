"""Errors raised by cka-probe.

Every error is one line that names the problem and, where there is one, the fix.
The command line turns any :class:`CKAProbeError` into that line and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "CKAProbeError",
    "ShapeError",
    "LayerSelectionError",
    "NonFiniteFeatureError",
    "ConfigError",
    "ModelMismatchError",
    "StageError",
    "CheckpointError",
    "DataNotFoundError",
    "OutputExistsError",
    "UnknownModelError",
    "WeightsUnavailableError",
    "CheckpointMismatchError",
    "NotEnoughImagesError",
    "UnreadableImageError",
    "CaptureError",
    "OutputNameError",
    "FlattenWidthError",
    "IdentifyError",
    "SpooledGramsError",
    "KernelError",
    "PrecisionError",
    "DeviceError",
    "UnsafeCheckpointError",
    "ArgumentError",
]


class CKAProbeError(ValueError):
    """Base class of every error cka-probe raises on bad input."""


class ShapeError(CKAProbeError):
    """Features whose shapes cannot be compared (different n, wrong rank, too few samples)."""


class LayerSelectionError(CKAProbeError):
    """A layer name or pattern that selects nothing, or a layout that cannot be decided."""


class NonFiniteFeatureError(CKAProbeError):
    """A layer whose features contain NaN or infinity."""


# One-for-All distillation and training (cka_probe.ofa).


class ConfigError(CKAProbeError):
    """A configuration (training recipe, figure or zoo job file) with an unknown key or a value that cannot be used."""


class ModelMismatchError(CKAProbeError):
    """A teacher and a student that cannot be paired (e.g. different numbers of classes)."""


class StageError(LayerSelectionError):
    """A stage index that the model does not have (stages are numbered 1 to 4)."""


class CheckpointError(CKAProbeError):
    """A checkpoint that cannot be read or that belongs to another model or run."""


class DataNotFoundError(CKAProbeError):
    """A data set path that does not exist or does not hold the expected files."""


class OutputExistsError(CKAProbeError):
    """An output (file, or folder holding a run) that exists already, when overwriting (or resuming) was not asked."""


# Models and probe data (cka_probe.models, cka_probe.data).


class UnknownModelError(CKAProbeError):
    """A model name that is neither a cka-probe alias nor a timm model (the message suggests close names)."""


class WeightsUnavailableError(CKAProbeError):
    """Pretrained weights that cannot be had: not cached and the hub offline or unreachable, or none published."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint saved from another architecture: tensor shapes differ or no parameter name is shared."""


class NotEnoughImagesError(CKAProbeError):
    """A probe set asked for more images than its source holds (after skipping unreadable ones)."""


class UnreadableImageError(CKAProbeError):
    """An image file that cannot be decoded (the message names it)."""


class CaptureError(CKAProbeError):
    """A forward that cannot be recorded: a hooked layer run outside the model's own forward, or batches that run different layers."""


# Outputs and the feature cache (cka_probe.engine: cache, _io; zoo outputs in cka_probe.jobs; cka_probe._files).


class OutputNameError(CKAProbeError):
    """An output name that would leave its output folder, or two outputs that would get the same file name."""


# Flattened features and the layer-identification check (cka_probe.capture pool="flatten", cka_probe.jobs.identify).


class FlattenWidthError(CaptureError):
    """A layer whose flattened width changes between batches (the input size changed) under ``pool="flatten"``."""


class IdentifyError(CKAProbeError):
    """Networks that the layer-identification check cannot pair: fewer than two, different architectures or layers."""


class SpooledGramsError(CKAProbeError):
    """Grams waiting on disk (:mod:`cka_probe.engine.spool`) that cannot be read back: their file was removed or
    changed during the run."""


# Math (cka_probe.math).


class KernelError(CKAProbeError):
    """An unknown kernel, a non-positive RBF bandwidth, or a kernel choice that the given input cannot serve."""


class PrecisionError(CKAProbeError):
    """A precision that the all-pairs engine does not offer (it computes in float64 or float32)."""


# Devices, distributed training and training checkpoints (cka_probe._device, cka_probe.ofa).


class DeviceError(CKAProbeError):
    """A device string torch does not know, or a device (or number of devices) this machine does not have."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickled Python objects are outside the allowlist of harmless globals."""


# Arguments of the Python API (cka_probe.models, cka_probe.data, cka_probe.ofa, cka_probe.plots).


class ArgumentError(CKAProbeError):
    """A function argument outside its choices or range that no option or config key reaches (the command line
    and the configs check their values first); the message names the argument and the values it takes."""
