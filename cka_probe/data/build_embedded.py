"""Build the embedded probe set: a class-balanced Fashion-MNIST test subset shipped inside the package.

Run ``python -m cka_probe.data.build_embedded`` (Debian: ``apt-get install dataset-fashion-mnist`` first).
It reads the test split's IDX files, keeps the first ``per_class`` images of each class in file order
(50 by default, so 500 images), and writes ``fashion_mnist_probe.npz`` (uint8 ``images`` (N, 28, 28),
uint8 ``labels`` (N,), int32 test-split ``indices`` (N,), in ascending index order) and
``fashion_mnist_probe.LICENSE.txt`` (Fashion-MNIST is (c) 2017 Zalando SE, MIT licence).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, CKAProbeError
from ._fashion_mnist import CLASS_NAMES, DEBIAN_FASHION_MNIST, EMBEDDED_FILE, read_fashion_mnist

__all__ = ["LICENSE_TEXT", "build_embedded", "main"]

LICENSE_TEXT = """\
fashion_mnist_probe.npz: {n} images of the Fashion-MNIST test split (the first {per_class} of each of its
10 classes, in file order), with their labels and test-split indices, made by
`python -m cka_probe.data.build_embedded` from the IDX files of Debian's dataset-fashion-mnist package.

Fashion-MNIST: https://github.com/zalandoresearch/fashion-mnist
Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms. arXiv:1708.07747, 2017.

The MIT License (MIT)
Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE
OR OTHER DEALINGS IN THE SOFTWARE.
"""


def build_embedded(
    source: str | os.PathLike = DEBIAN_FASHION_MNIST,
    out_dir: str | os.PathLike = Path(__file__).parent,
    per_class: int = 50,
) -> Path:
    """Write the embedded probe set and its licence file.

    Args:
        source: Folder of the Fashion-MNIST IDX files (plain or gzipped).
        out_dir: Where to write ``fashion_mnist_probe.npz`` and ``fashion_mnist_probe.LICENSE.txt``.
        per_class: Images kept per class.

    Returns:
        Path of the ``.npz`` written.

    Raises:
        ArgumentError: ``per_class`` is below 1 or above what a class holds.
    """
    images, labels = read_fashion_mnist(source, "test")
    chosen: list[int] = []
    for label in range(len(CLASS_NAMES)):
        members = np.flatnonzero(labels == label)
        if not 1 <= per_class <= len(members):
            raise ArgumentError(
                f"per_class (--per-class) {per_class} is outside 1..{len(members)} (images of class {label}); "
                "give a count in that range"
            )
        chosen.extend(members[:per_class].tolist())
    chosen.sort()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / EMBEDDED_FILE
    np.savez_compressed(
        target,
        images=images[chosen].astype(np.uint8),
        labels=labels[chosen].astype(np.uint8),
        indices=np.asarray(chosen, dtype=np.int32),
    )
    licence = target.with_name(target.stem + ".LICENSE.txt")
    licence.write_text(LICENSE_TEXT.format(n=len(chosen), per_class=per_class))
    return target


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m cka_probe.data.build_embedded [--source DIR] [--out-dir DIR] [--per-class K]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(DEBIAN_FASHION_MNIST), help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent), help="where to write the files")
    parser.add_argument("--per-class", type=int, default=50, help="images kept per class")
    args = parser.parse_args(argv)
    try:
        target = build_embedded(args.source, args.out_dir, args.per_class)
    except CKAProbeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
