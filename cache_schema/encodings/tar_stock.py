"""Stock tar parsers over the same (name, data) member interface as ``ustar.iter_members``.

``tarfile`` in stream mode is the fallback for tar features the fast reader does not implement
(``ustar.Unsupported``); ``webdataset``'s tar iterator (tarfile underneath) is kept selectable
for measurements (bench/bench_loader.py ``--parser``). ``np_load`` is numpy's own .npy reader,
never unpickling.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import IO

import numpy as np


def tarfile_members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file, in order, by stock ``tarfile`` (stream mode)."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.isfile():
                yield info.name, tar.extractfile(info).read()


def webdataset_members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each file by ``webdataset.tariterators`` (no decoding: never unpickles)."""
    from webdataset.tariterators import tar_file_iterator

    for member in tar_file_iterator(stream):
        yield member["fname"], member["data"]


def np_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
