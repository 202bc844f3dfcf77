"""DICOM input checks both modalities share: is a file DICOM (its "DICM" preamble), and its header read
safely (no pixel data; a deflated file refused before pydicom inflates it past the limit
``max_decompressed_mb``; more pixels than ``max_image_pixels`` refused from the header).

    python -c "from medkit.core.dicom import read_dicom_header; print(read_dicom_header('medkit/data/samples/rsna_pneumonia_sample.dcm').Modality)"
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pydicom
from pydicom.filereader import read_file_meta_info

from medkit.core import limits

DEFLATE = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
#: Suffixes of DICOM files (a file without one is DICOM when it starts with the DICM preamble).
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` is a file starting with the DICOM preamble (128 bytes, then "DICM")."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def check_pixels(path: str | Path, pixels: int, error: type[ValueError] = ValueError) -> None:
    """Refuse an image that claims more than ``max_image_pixels`` (raised as ``error``)."""
    try:
        limits.current().check("max_image_pixels", pixels, f"{path}: the image claims {pixels:,} pixels")
    except limits.InputLimitError as e:
        raise error(str(e)) from None


def read_dicom_header(path: str | Path, error: type[ValueError] = ValueError):
    """A DICOM file's header (no pixel data), refused (``error``) before it is parsed when the file is
    deflated and inflates past ``max_decompressed_mb`` (streamed, nothing kept: pydicom inflates a
    deflated file whole, even for its header), or when it claims more than ``max_image_pixels``.
    A file that is not DICOM raises what pydicom raises (``InvalidDicomError``, ``OSError``...)."""
    path = Path(path)
    meta = read_file_meta_info(str(path))
    if str(getattr(meta, "TransferSyntaxUID", "")) == DEFLATE:
        cap = limits.current().max_decompressed_mb * 1024 * 1024
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        with path.open("rb") as f:
            # the deflated dataset follows the file meta group: preamble + "DICM", then the group
            # length element (12 bytes) and the group_length bytes it announces
            start = 132 if f.read(132)[128:] == b"DICM" else 0
            f.seek(start + 12 + int(getattr(meta, "FileMetaInformationGroupLength", 0) or 0))
            while total <= cap and (block := f.read(1 << 16)):
                total += len(inflater.decompress(block, cap + 1 - total))
                while inflater.unconsumed_tail and total <= cap:
                    total += len(inflater.decompress(inflater.unconsumed_tail, cap + 1 - total))
        if total > cap:
            raise error(f"{path}: deflated DICOM inflates to more than {cap // (1024 * 1024)} MiB, more "
                        "than the limit max_decompressed_mb (MONAI Label: --conf max_decompressed_mb N)")
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    pixels = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(ds.get("NumberOfFrames", 1) or 1)
    check_pixels(path, pixels * int(ds.get("SamplesPerPixel", 1) or 1), error)
    return ds
