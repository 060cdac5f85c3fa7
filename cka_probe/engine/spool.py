"""Per-batch Grams of flattened layers kept on disk, so that a run over many batches holds one batch at a time.

With ``--pool flatten`` and more images than one forward batch, the minibatch estimator (Nguyen, Raghu &
Kornblith 2021) sums one term per batch, and each term needs the two models' Grams of that batch together.
One model runs over all batches before the next (each model runs once, and its Grams are cached), so its
Grams of every batch must wait somewhere: held in memory they are ``L n b`` float64 numbers per model (``L``
layers, ``n`` images in batches of ``b``: 0.5 GB at ``L = 50``, ``n = 10,000``, ``b = 128``). A
:class:`GramSpool` writes each batch's Grams of every layer to one safetensors file as the forward pass
goes, and :class:`SpooledGrams` reads them back one batch at a time, so memory stays ``O(L b^2)`` per model
whatever ``n`` (the batch being read; the disk holds the rest).

A spool lives in a directory of its own: inside the feature cache's directory when there is one (its files
then become the cache entry's data files, see :mod:`cka_probe.engine.cache`), else in a temporary directory
removed when the spool is garbage collected. Sent to another process (a Ray worker's result), spooled Grams
travel by value, as a list of tensors: a temporary directory on one node is not seen from another. The files
of a cache entry travel by reference when the receiver sees them too (:attr:`GramSpool.shared`: Ray started on
this machine, where the driver reads the workers' cache entries batch by batch as well).

Every batch file's SHA-256 is taken from the bytes written and checked against the bytes read, each time a batch
is read: a file changed between the writing and the reading (another job rewriting a cache entry) is one line,
never other numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from .._files import remove_stale_temp_files, temp_prefix
from ..errors import ArgumentError, ShapeError, SpooledGramsError

__all__ = ["GramSpool", "SpooledGrams"]


class GramSpool:
    """The Grams of flattened layers, one safetensors file per forward batch (every layer's Gram of that batch).

    Args:
        directory: where the batch files go; ``None``: a new temporary directory, removed with the spool.
        files: existing batch files, in batch order (a cache entry's), instead of writing new ones.
        layers: the layer names of ``files``, in forward order.
        sizes: the batch sizes of ``files``.
        digests: the hex SHA-256 of ``files``, checked whenever one is read.
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        *,
        files: Sequence[str | os.PathLike] = (),
        layers: Sequence[str] = (),
        sizes: Sequence[int] = (),
        digests: Sequence[str] = (),
    ) -> None:
        if directory is None and not files:
            directory = tempfile.mkdtemp(prefix="cka-probe-grams-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
        else:
            self._cleanup = None
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.files = [Path(f) for f in files]
        self.layers = list(layers)
        self.sizes = [int(s) for s in sizes]
        self.digests = [str(d) for d in digests]
        if len(self.digests) != len(self.files):
            raise ArgumentError("a spool of existing files needs the SHA-256 of each")
        self._loaded: tuple[int, dict[str, torch.Tensor]] | None = None
        # Sent to another process, spooled Grams travel by value unless this is set: for the files of a cache
        # entry when the receiver sees the same file system (Ray on this machine).
        self.shared = False

    @classmethod
    def inside(cls, parent: str | os.PathLike) -> GramSpool:
        """A spool in a new directory under ``parent`` (the feature cache's, so its files can be moved into it).

        Named as cka-probe's temporary files are (``.spool.<host>-<pid>.<random>.tmp``): the spools that killed
        processes left there are removed first (:func:`~cka_probe._files.remove_stale_temp_files`)."""
        Path(parent).mkdir(parents=True, exist_ok=True)
        target = Path(parent) / "spool"
        remove_stale_temp_files(target)
        directory = tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=parent)
        spool = cls(directory)
        spool._cleanup = weakref.finalize(spool, shutil.rmtree, directory, ignore_errors=True)  # until moved
        return spool

    def append(self, grams: Mapping[str, Sequence[torch.Tensor]]) -> None:
        """Write one batch: ``grams`` maps each layer to the Grams recorded since the last batch (one each, as
        :meth:`~cka_probe.capture.FeatureRecorder.take_grams` gives them after one forward pass)."""
        if self.directory is None:
            raise ArgumentError("this spool reads a cache entry's files; write Grams to a new GramSpool")
        layers = list(grams)
        if not self.layers:
            self.layers = layers
        if layers != self.layers or any(len(grams[name]) != 1 for name in layers):
            raise ShapeError("each batch must hold one Gram of every layer, in the first batch's order")
        path = self.directory / f"batch{len(self.files)}.safetensors"
        tensors = {name: grams[name][0].detach().to("cpu", torch.float64).contiguous() for name in layers}
        try:
            # one metadata key: safetensors writes several in an order that changes from process to process, and
            # the same Grams must give the same bytes (another job recomputing this entry leaves it as it was)
            data = save(tensors, metadata={"layers": json.dumps(layers)})
            path.write_bytes(data)
        except (OSError, SafetensorError) as exc:  # a full disk, most likely
            path.unlink(missing_ok=True)
            detail = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise SpooledGramsError(
                f"cannot write the Grams of batch {len(self.files)} to {self.directory} ({detail}); free space "
                "there, or point --cache-dir (or TMPDIR, without a cache) to a larger disk"
            ) from exc
        self.files.append(path)
        self.sizes.append(int(grams[layers[0]][0].shape[0]))
        self.digests.append(hashlib.sha256(data).hexdigest())

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        """Every layer's Gram of batch ``k``, from the file's bytes once their SHA-256 matches the one written (the
        last batch read is kept, so reading layer after layer costs one file read per batch)."""
        if self._loaded is None or self._loaded[0] != k:
            self._loaded = None  # drop the previous batch before reading the next
            try:
                data = self.files[k].read_bytes()
                if hashlib.sha256(data).hexdigest() != self.digests[k]:
                    raise SpooledGramsError(
                        f"{self.files[k]} is not the file written for batch {k}: it changed during the run; run "
                        "again (with --no-cache if it is a cache entry that another job rewrites)"
                    )
                grams = load(data)
                missing = [name for name in self.layers if name not in grams]
            except (OSError, SafetensorError) as exc:
                raise SpooledGramsError(
                    f"cannot read the Grams of batch {k} from {self.files[k]} ({exc}); it was removed or changed "
                    "during the run: run again (with --no-cache if it is a cache entry that another job removes)"
                ) from exc
            if missing:
                raise SpooledGramsError(
                    f"{self.files[k]} holds no Gram of layer {missing[0]}; it changed during the run: run again"
                )
            self._loaded = (k, grams)
        return self._loaded[1]

    def layer(self, name: str, device: torch.device | str = "cpu") -> SpooledGrams:
        """The Grams of one layer, batch by batch."""
        return SpooledGrams(self, name, torch.device(device))

    def features(self, device: torch.device | str = "cpu") -> dict[str, SpooledGrams]:
        """Every layer's Grams, in forward order: what :class:`~cka_probe.engine.features.ExtractedFeatures`
        holds for a flattened run."""
        return {name: self.layer(name, device) for name in self.layers}

    def move_files(self, targets: Sequence[Path]) -> None:
        """Rename the batch files to ``targets`` (in the same file system) and remove the spool's own directory."""
        for source, target in zip(self.files, targets, strict=True):
            os.replace(source, target)
        self.files = list(targets)
        self._loaded = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            if self._cleanup is not None:
                self._cleanup.detach()
            self.directory = None


class SpooledGrams(Sequence[torch.Tensor]):
    """One layer's per-batch ``(b_k, b_k)`` float64 Grams in a :class:`GramSpool`, read when indexed.

    Behaves as the list of Grams it stands for (``len``, indexing, iteration), read batch by batch; ``sizes``
    gives the batch sizes without reading anything. Pickled, it becomes that list, or, for a spool marked
    :attr:`GramSpool.shared`, a reference to the same files.
    """

    def __init__(self, spool: GramSpool, name: str, device: torch.device) -> None:
        self.spool = spool
        self.name = name
        self.device = device

    @property
    def sizes(self) -> list[int]:
        return list(self.spool.sizes)

    def __len__(self) -> int:
        return len(self.spool.files)

    def __getitem__(self, k):  # noqa: ANN001 - an int (a slice gives a list)
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(f"batch {k} of {len(self)}")
        return self.spool.batch(k % len(self))[self.name].to(self.device)

    def to(self, device: torch.device | str) -> SpooledGrams:
        """The same Grams, read onto ``device``."""
        return SpooledGrams(self.spool, self.name, torch.device(device))

    def __reduce__(self):
        if self.spool.shared:  # the files of a cache entry that the receiving process sees too: by reference
            spool = self.spool
            return _spooled, (spool.files, spool.layers, spool.sizes, spool.digests, self.name, str(self.device))
        return list, (list(self),)


def _spooled(
    files: list[Path], layers: list[str], sizes: list[int], digests: list[str], name: str, device: str
) -> SpooledGrams:
    """A :class:`SpooledGrams` sent by reference (:attr:`GramSpool.shared`), read from the same files here."""
    return GramSpool(files=files, layers=layers, sizes=sizes, digests=digests).layer(name, device)
