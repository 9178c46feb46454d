"""Radiographs in: :func:`read_radiograph` (any common file → ``(H, W)`` float32 in [0, 1]) and
:func:`resize_radiograph` (→ the model's 128 × 128 input).

Conventions (``DCTNetLib.conventions``): bright = more attenuation (bone white, lungs dark), rows run
superior→inferior. Accepted files:

* DICOM CR/DX (read with pydicom; compressed transfer syntaxes pydicom cannot decode fall back to SimpleITK's
  GDCM): the modality LUT (rescale slope/intercept) is applied, then the values are min/max-normalised, and
  **MONOCHROME1** images (where high values are *dark*) are inverted. VOI windows are not applied.
* PNG, JPEG, TIFF, BMP (Pillow; SimpleITK as a fallback for TIFF variants Pillow cannot open). 8-bit images
  are divided by 255; 16-bit, 32-bit and float images are min/max-normalised. RGB is converted to grey with
  the ITU-R BT.601 luma weights; an alpha channel is ignored with a warning.

Rejected with :class:`~DCTNetLib.errors.InputError` (naming the problem and the file): missing files, FIFOs and
devices, files that are not images, images smaller than ``MIN_SIDE`` or larger than ``MAX_SIDE`` pixels on a side
or longer than ``MAX_ASPECT`` times their width (checked from the header, before decoding), DICOM files whose
pixel data would exceed ``MAX_PIXEL_BYTES`` (all frames) or that inflate beyond it (deflated transfer syntax),
DICOM CT / MR / SEG and other non-radiograph objects, NaN/inf pixels, and blank images (all pixels equal).
JPEG/TIFF EXIF orientation is applied; PALETTE COLOR DICOM goes through its colour table.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np

from ..conventions import IMAGE_SIZE
from ..errors import InputError
from .atomic import atomic_write_bytes, check_readable, display_path, utf8_alias
from .c_stderr import c_stderr_as_debug
from .detached_data import check_detached_data
from .nifti_header import check_nifti_data, check_nifti_header, is_nifti_name
from .film_gate import pa_polarity

__all__ = [
    "read_radiograph",
    "resize_radiograph",
    "load_radiograph",
    "pad_to_square",
    "has_dicom_prefix",
    "dcmread_checked",
    "mirror_symmetry",
    "view_pair_warnings",
    "MIN_SIDE",
    "MAX_SIDE",
]

log = logging.getLogger(__name__)

# Smallest accepted side: below 16 px an image carries no usable anatomy for a 128² input (and 1×1 "images"
# are usually placeholders or tracking pixels).
MIN_SIDE = 16
# Largest accepted side: detector panels are at most ~4300 px (43 cm at 0.1 mm); 8192 leaves ample room while
# refusing decompression bombs and mislabelled files before they are decoded.
MAX_SIDE = 8192
# Longest side over shortest: a 14 × 17 in chest film is 1.2, a stitched full-spine or long-leg film up to ~3.6. A
# 16 × 8192 strip, padded to a square and shrunk to 128², would leave the model a line of pixels.
MAX_ASPECT = 4.0
# Largest pixel data (all frames, as stored) a radiograph file may decode to, and the most a deflated DICOM file
# may inflate to: 8192² px × 16 bit (128 MiB) or × 8 bit RGB (192 MiB) fits; a 3 MB file inflating to 9.5 GB does not.
MAX_PIXEL_BYTES = 256 * 1024**2
# DICOM modalities that are not projection radiographs (cross-sections, segmentations, reports, plans).
NOT_RADIOGRAPH_MODALITIES = {"CT", "MR", "PT", "NM", "US", "SEG", "RTSTRUCT", "RTDOSE", "RTPLAN", "SR", "KO", "PR",
                             "REG", "OCT", "RWV", "ECG", "DOC"}
# ITU-R BT.601 luma weights for RGB → grey (also what Pillow's convert("L") uses).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
# Pixel value of the padding added to make an image square: 0 = no attenuation, like air around a DRR.
PAD_VALUE = 0.0

_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

# View-pair plausibility (view_pair_warnings). A PA chest film is close to left–right mirror-symmetric, a lateral is
# not: measured mirror_symmetry of the real PAs in shared/data/radiographs 0.78–0.93, of DRRs of three real CTs
# (LIDC-IDRI-0001, Lung-PET-CT-Dx A0002, TotalSegmentator example) PA 0.79–0.93 vs lateral 0.40–0.63, i.e. a PA
# exceeds its lateral by ≥ 0.24. A "lateral" more symmetric than the "PA" by over this margin means swapped views —
# but real laterals span 0.01–0.81 and a genuine AP was flagged by symmetry alone, so the "PA" must also look less
# like a PA than the "lateral" does (film_gate.pa_polarity: PAs ≥ +0.07, laterals −0.19…+0.40 in shared/data and
# the DRRs of the 13 real chest CTs).
SWAP_SYMMETRY_MARGIN = 0.1
# Two views whose 64² thumbnails differ by less than this everywhere (on [0, 1]) are the same image twice.
IDENTICAL_TOLERANCE = 1e-3
_THUMBNAIL = 64


def _check_size(rows: int, cols: int, path: Path) -> None:
    shown = display_path(path)
    if min(rows, cols) < MIN_SIDE:
        raise InputError(f"image is too small ({cols}×{rows} px, need at least {MIN_SIDE} px a side): {shown}")
    if max(rows, cols) > MAX_SIDE:
        raise InputError(f"image is too large ({cols}×{rows} px, at most {MAX_SIDE} px a side): {shown}")
    if max(rows, cols) > MAX_ASPECT * min(rows, cols):
        raise InputError(f"image has an absurd aspect ratio ({cols}×{rows} px, over {MAX_ASPECT:g}:1; a chest "
                         f"radiograph is nearly square): {shown}")


def _min_max(values: np.ndarray, path: Path) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"image contains NaN/inf pixels: {path}")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise InputError(f"image is blank (every pixel is {lo:g}): {path}")
    return (values - lo) / (hi - lo)


def _to_grey(values: np.ndarray, path: Path) -> np.ndarray:
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` → ``(H, W)`` float64 (alpha dropped with a warning)."""
    if values.ndim == 2:
        return values.astype(np.float64)
    if values.ndim == 3 and values.shape[2] in (2, 4):
        log.warning("ignoring the alpha channel of %s", path)
        values = values[..., :-1]
    if values.ndim == 3 and values.shape[2] == 1:
        return values[..., 0].astype(np.float64)
    if values.ndim == 3 and values.shape[2] == 3:
        return values.astype(np.float64) @ LUMA_WEIGHTS
    raise InputError(f"unsupported image layout {values.shape} (expected grey or RGB): {path}")


def has_dicom_prefix(path: str | os.PathLike) -> bool:
    """True for a DICOM Part 10 file (``"DICM"`` after the 128-byte preamble); False when unreadable.

    Only regular files are opened (a FIFO would block forever).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() in _DICOM_SUFFIXES or has_dicom_prefix(path)


def _modality_lut():
    """pydicom's ``apply_modality_lut``: in ``pydicom.pixels`` from 3.0, in ``pydicom.pixel_data_handlers.util``
    before (Slicer 5.10 ships pydicom 2.4.4, which has no ``pydicom.pixels``)."""
    return _pixel_util("apply_modality_lut")


def _pixel_util(name: str):
    """A pixel helper of pydicom (``apply_modality_lut``, ``apply_color_lut``) wherever this version keeps it."""
    import importlib

    try:
        module = importlib.import_module("pydicom.pixels")
    except ImportError:  # pydicom < 3
        module = importlib.import_module("pydicom.pixel_data_handlers.util")
    return getattr(module, name)


_PYDICOM_ADVICE = re.compile(r"\s*(Use force=True to force reading|set 'force=True'[^.]*)\.?", re.IGNORECASE)


def dicom_error_reason(exc: BaseException) -> str:
    """pydicom's exception as a short reason in our words (without its "Use force=True" advice)."""
    from pydicom.errors import InvalidDicomError

    if isinstance(exc, InvalidDicomError):
        return "not a readable DICOM file (no DICOM header: the 'DICM' prefix or file meta information is missing)"
    if isinstance(exc, InputError):
        return str(exc)
    text = _PYDICOM_ADVICE.sub("", " ".join(str(exc).split())).strip() or type(exc).__name__
    return f"truncated or damaged: {text}"


def _check_deflated_size(path: Path) -> None:
    """Refuse a Deflated-transfer-syntax file that claims or inflates to over :data:`MAX_PIXEL_BYTES` (a zip bomb).

    pydicom inflates the whole data set in memory even to read its header. So the first MiB is inflated and its
    header read: a claimed image over the limit is refused at once; otherwise the rest is inflated in 1 MiB pieces,
    kept nowhere, stopping as soon as the total passes the limit (a header that lies).
    """
    import io
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    with open(path, "rb") as handle:
        try:
            read_preamble(handle, False)
            meta = _read_file_meta_info(handle)
        except Exception:  # noqa: BLE001 — not DICOM or damaged: dcmread says so below
            return
        syntax = meta.get("TransferSyntaxUID")
        if syntax is None or not getattr(syntax, "is_deflated", False):
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            head = inflater.decompress(handle.read(1 << 20), 1 << 20)
            header = read_dataset(io.BytesIO(head), False, True, stop_when=lambda tag, vr, length: tag == 0x7FE00010)
            claimed = _claimed_pixel_bytes(header, path)
        except InputError:
            raise
        except Exception:  # noqa: BLE001 — a header over 1 MiB or damaged: the streamed count below decides
            claimed = 0
        if claimed > MAX_PIXEL_BYTES:
            raise InputError(f"deflated DICOM file claims {claimed / 1024**2:.0f} MiB of pixel data (over "
                             f"{MAX_PIXEL_BYTES // 1024**2} MiB; a decompression bomb?), refused before inflating it: "
                             f"{display_path(path)}")
        total = len(head)
        pending = inflater.unconsumed_tail
        while total <= MAX_PIXEL_BYTES:
            if not pending:
                pending = handle.read(1 << 20)
                if not pending:
                    return
            try:
                total += len(inflater.decompress(pending, 1 << 20))
            except zlib.error:
                return  # damaged: dcmread reports it
            pending = inflater.unconsumed_tail
        raise InputError(f"deflated DICOM file inflates to over {MAX_PIXEL_BYTES // 1024**2} MiB (a decompression "
                         f"bomb?), refused before reading it: {display_path(path)}")


def _claimed_pixel_bytes(ds, path: Path) -> int:
    """Bytes of pixel data the header promises: rows × columns × frames × samples × bits / 8."""
    keys = (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1), ("SamplesPerPixel", 1), ("BitsAllocated", 16))
    rows, cols, frames, samples, bits = (max(dicom_int(ds, key, default, path), 0) for key, default in keys)
    return rows * cols * max(frames, 1) * max(samples, 1) * bits // 8


@contextlib.contextmanager
def _pydicom_log_silenced():
    """pydicom's own log lines switched off (a warning for each odd value, an ERROR and a traceback for each pixel
    decoder that fails): the caller says what matters once, in one line of its own."""
    pydicom_log = logging.getLogger("pydicom")  # its modules' loggers are children: they take its level
    level = pydicom_log.level
    pydicom_log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        pydicom_log.setLevel(level)


def dcmread_checked(path: str | os.PathLike, **kwargs):
    """``pydicom.dcmread`` with our words: errors become one-line :class:`InputError` naming the file, pydicom's
    warnings one log line each naming the file, and deflated files are size-checked before they are inflated.

    Raises:
        InputError: ``"<reason>: <path>"`` (not DICOM, truncated or damaged, inflates too far).
    """
    import pydicom

    path = Path(path)
    _check_deflated_size(path)
    with _pydicom_log_silenced(), warnings.catch_warnings(record=True) as caught:  # it logs each warning too
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, **kwargs)
            ds.walk(lambda dataset, element: None)  # convert every value now, so its warnings are caught here
        except Exception as exc:  # pydicom raises many types for damaged files
            raise InputError(f"{dicom_error_reason(exc)}: {display_path(path)}") from exc
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        log.warning("%s: %s", display_path(path), message.split(" Please see <")[0])
    return ds


def dicom_int(ds, keyword: str, default: int, path: Path) -> int:
    """An integer DICOM attribute (``default`` when absent or empty); a non-number is an :class:`InputError`."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"DICOM attribute {keyword} is not a number ({str(value)[:40]!r}): "
                         f"{display_path(path)}") from exc


def _check_radiograph_header(ds, path: Path) -> tuple[int, int]:
    """From the header alone: the object is a radiograph of a sane size. Returns ``(rows, frames)``."""
    modality = str(ds.get("Modality", "")).upper()
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"DICOM file holds no image (modality {modality or '?'}): {display_path(path)}")
    if modality in NOT_RADIOGRAPH_MODALITIES:
        raise InputError(f"DICOM file is a {modality} image, not a radiograph (CR, DX …): {display_path(path)}")
    rows, cols = dicom_int(ds, "Rows", 0, path), dicom_int(ds, "Columns", 0, path)
    _check_size(rows, cols, path)
    frames = dicom_int(ds, "NumberOfFrames", 1, path)
    if frames < 1:
        raise InputError(f"DICOM attribute NumberOfFrames {frames} is not a positive frame count: "
                         f"{display_path(path)}")
    nbytes = _claimed_pixel_bytes(ds, path)
    if nbytes > MAX_PIXEL_BYTES:
        raise InputError(f"DICOM file would decode to {nbytes / 1024**2:.0f} MiB ({frames} frame(s) of "
                         f"{cols}×{rows}; at most {MAX_PIXEL_BYTES // 1024**2} MiB), refused before decoding: "
                         f"{display_path(path)}")
    return rows, frames


def _read_dicom(path: Path) -> np.ndarray:
    apply_modality_lut, apply_color_lut = _modality_lut(), _pixel_util("apply_color_lut")
    ds = dcmread_checked(path)
    _, frames = _check_radiograph_header(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        with _pydicom_log_silenced():
            pixels = ds.pixel_array
        if frames > 1:
            log.warning("%s has %d frames; using the first", display_path(path), frames)
            pixels = pixels[0]
        if photometric.startswith("MONOCHROME"):
            pixels = apply_modality_lut(pixels, ds)
        elif photometric == "PALETTE COLOR":  # stored values index a colour table: look them up, then luma
            pixels = apply_color_lut(pixels, ds)
    except InputError:
        raise
    except Exception as exc:  # no decoder for this transfer syntax: GDCM (inside SimpleITK) has more
        _check_pixel_data_length(ds, path)
        log.debug("pydicom cannot decode %s (%s); trying SimpleITK", display_path(path), exc)
        try:
            with c_stderr_as_debug(log, f"decoding {display_path(path)}"):  # GDCM's codecs print there
                pixels = _read_with_sitk(path)  # SimpleITK applies rescale slope/intercept itself
        except InputError as sitk_exc:
            raise InputError(f"cannot decode the {_transfer_syntax_name(ds)}pixel data of DICOM file (damaged, or a "
                             f"compression neither pydicom nor GDCM reads; {_decoder_reason(exc)}): "
                             f"{display_path(path)}") from sitk_exc
    values = _min_max(_to_grey(np.asarray(pixels), path), path)
    if photometric == "MONOCHROME1":  # high stored values are displayed dark: invert so bone is bright
        values = 1.0 - values
    return values


def _transfer_syntax_name(ds) -> str:
    """``"JPEG 2000 Image Compression "`` for a compressed file (with a trailing space), ``""`` otherwise."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return ""
    return f"{str(syntax.name).split(' (')[0]} "


_ALL_PLUGINS_FAILED = re.compile(r"^.*exceptions were raised by all available plugins:\s*", re.IGNORECASE)


def _decoder_reason(exc: BaseException) -> str:
    """pydicom's decoding error in short: ``"pillow: broken data stream …"`` rather than its whole preamble."""
    return _ALL_PLUGINS_FAILED.sub("", " ".join(str(exc).split())).strip() or type(exc).__name__


def _check_pixel_data_length(ds, path: Path) -> None:
    """Raise when uncompressed pixel data is shorter than Rows × Columns × Samples × Frames × BitsAllocated."""
    if not getattr(ds.file_meta, "TransferSyntaxUID", None) or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    expected = (dicom_int(ds, "Rows", 0, path) * dicom_int(ds, "Columns", 0, path)
                * dicom_int(ds, "SamplesPerPixel", 1, path) * dicom_int(ds, "NumberOfFrames", 1, path)
                * dicom_int(ds, "BitsAllocated", 16, path) + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise InputError(f"DICOM file is truncated: {actual} of {expected} pixel-data bytes present: "
                         f"{display_path(path)}")


_ITK_ERROR_PREFIX = re.compile(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\):\s*")


def itk_reason(exc: BaseException) -> str:
    """The reason line of an ITK exception (its first lines are a ``file.cxx:123:`` location), without the
    ``ITK ERROR: GDCMImageIO(0x55…):`` prefix that names an object's address."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return _ITK_ERROR_PREFIX.sub("", lines[-1]) if lines else type(exc).__name__


@contextlib.contextmanager
def image_header(path: Path, failure: str):
    """A SimpleITK ``ImageFileReader`` for ``path`` with only its header read (``Execute()`` decodes the voxels).

    The file is opened under a UTF-8 alias when its name is not UTF-8 (:func:`~DCTNetLib.io.atomic.utf8_alias`),
    and ITK's own "WARNING: In …" lines are switched off: our checks report problems in one line.

    Raises:
        InputError: ``"<failure>: <path> (<ITK's reason>)"`` when the header cannot be read.
    """
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    with utf8_alias(path) as name:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(f"{failure}: {display_path(path)} ({itk_reason(exc)})") from exc
        yield reader


def _read_with_sitk(path: Path) -> np.ndarray:
    """Read an image SimpleITK knows (TIFF variants, NIfTI, compressed DICOM), checking its header size first."""
    check_detached_data(path, "radiograph")  # before ITK opens a data file the header names
    with image_header(path, "not an image file, or an unsupported format") as reader:
        size = reader.GetSize()
        if len(size) > 2 and any(side > 1 for side in size[2:]):
            raise InputError(f"radiograph must be a 2D image, found a {len(size)}D volume of size {size} (a CT?): "
                             f"{display_path(path)}")
        _check_size(size[1], size[0], path)  # before decoding: a 20000² NIfTI header is refused here
        if is_nifti_name(path):
            layout = check_nifti_header(path, "radiograph")
            if layout is not None:
                check_nifti_data(path, layout, "radiograph")
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"cannot decode image (truncated or damaged?): {display_path(path)}") from exc
    import SimpleITK as sitk

    pixels = sitk.GetArrayFromImage(image)
    if pixels.ndim == 3 and image.GetNumberOfComponentsPerPixel() == 1:
        pixels = pixels[0]  # a single-frame 3D (1, H, W) image
    return pixels


def _exif_upright(image, path: Path):
    """The image as it is meant to be seen: its EXIF orientation (a phone photo of a film) applied."""
    from PIL import ImageOps

    orientation = image.getexif().get(0x0112, 1)  # EXIF Orientation tag
    if orientation in (None, 1):
        return image
    log.info("%s: applying its EXIF orientation %s", display_path(path), orientation)
    return ImageOps.exif_transpose(image)


def _read_pillow(path: Path) -> np.ndarray:
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the size is checked below, with a clearer message than Pillow's
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:  # header claims > 2 × Image.MAX_IMAGE_PIXELS
        raise InputError(f"image is too large (its header claims over {2 * Image.MAX_IMAGE_PIXELS} pixels; at most "
                         f"{MAX_SIDE} px a side): {path}") from exc
    except (UnidentifiedImageError, OSError, ValueError):
        pixels = _read_with_sitk(path)
        _check_size(pixels.shape[0], pixels.shape[1], path)
        return _min_max(_to_grey(pixels, path), path)
    with image:
        _check_size(image.height, image.width, path)  # before decoding a possibly huge image
        if getattr(image, "n_frames", 1) > 1:
            log.warning("%s has %d frames; using the first", display_path(path), image.n_frames)
        try:
            image = _exif_upright(image, path)
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"cannot decode image (truncated or damaged?): {display_path(path)} ({exc})") from exc
        mode = image.mode
        try:
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode = image.mode
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
                mode = "RGB"
            elif mode == "PA":
                image = image.convert("RGBA")
                mode = "RGBA"
            pixels = np.asarray(image)
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt image data
            raise InputError(f"cannot decode image (truncated or damaged?): {path} ({exc})") from exc
    grey = _to_grey(pixels, path)
    if pixels.dtype == np.uint8 or mode == "1":  # 8-bit (or bilevel): the file's own grey scale
        scale = 1.0 if mode == "1" else 255.0
        if not np.ptp(grey) > 0:
            raise InputError(f"image is blank (every pixel is {grey.flat[0]:g}): {path}")
        return grey / scale
    return _min_max(grey, path)  # 16-bit, 32-bit integer or float


def read_radiograph(path: str | os.PathLike) -> np.ndarray:
    """Read a radiograph as ``(H, W)`` float32 in [0, 1], bright = attenuation.

    Args:
        path: DICOM (CR/DX), PNG, JPEG, TIFF or BMP file.

    Returns:
        ``(H, W)`` float32 array in [0, 1].

    Raises:
        InputError: missing file, not an image, absurd size, NaN/inf or blank image; the message names the file.
    """
    path = check_readable(path, "radiograph")
    if not path.is_file():
        raise InputError(f"radiograph is not a file: {display_path(path)}")
    values = _read_dicom(path) if _is_dicom(path) else _read_pillow(path)
    if values.ndim != 2:
        raise InputError(f"radiograph must be a 2D image, got shape {values.shape}: {path}")
    _check_size(values.shape[0], values.shape[1], path)
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def pad_to_square(img: np.ndarray, value: float = PAD_VALUE) -> np.ndarray:
    """Centre an ``(H, W)`` image on a square canvas of side ``max(H, W)`` filled with ``value``."""
    rows, cols = img.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    out = np.full((side, side), value, dtype=np.float32)
    out[top:top + rows, left:left + cols] = img
    return out


def resize_radiograph(img: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Centre-pad to square (with 0 = no attenuation), then resize to ``size`` × ``size``.

    Shrinking uses an exact area average (Pillow ``BOX`` filter: every output pixel is the mean of the input
    area it covers, so no aliasing); enlarging uses bilinear interpolation.

    Args:
        img: ``(H, W)`` values in [0, 1] (as from :func:`read_radiograph`).
        size: output side in pixels. Defaults to 128 (DCT-Net §3.1).

    Returns:
        ``(size, size)`` float32 in [0, 1].
    """
    from PIL import Image

    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"img must be an (H, W) array, got shape {img.shape}")
    if int(size) < 1:
        raise ValueError(f"size must be positive, got {size}")
    square = pad_to_square(img)
    if square.shape[0] == size:
        return np.clip(square, 0.0, 1.0)
    resample = Image.Resampling.BOX if square.shape[0] > size else Image.Resampling.BILINEAR
    resized = Image.fromarray(square, mode="F").resize((int(size), int(size)), resample=resample)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def mirror_symmetry(img: np.ndarray) -> float:
    """Pearson correlation of an ``(H, W)`` image with its left–right mirror image (1 = perfectly symmetric)."""
    thumb = resize_radiograph(np.asarray(img, dtype=np.float32), _THUMBNAIL).astype(np.float64)
    centred = thumb - thumb.mean()
    mirrored = centred[:, ::-1]
    norm = float(np.sqrt((centred ** 2).sum() * (mirrored ** 2).sum()))
    return float((centred * mirrored).sum() / norm) if norm > 0 else 1.0


def view_pair_warnings(pa: np.ndarray, lat: np.ndarray) -> list[str]:
    """Reasons to doubt a PA/lateral pair (empty when it looks right): identical views, or views that look swapped.

    Both are legal inputs, so callers warn rather than refuse (see :data:`SWAP_SYMMETRY_MARGIN` for the rule: the
    "lateral" is more symmetric *and* has the stronger PA polarity).

    Args:
        pa, lat: ``(H, W)`` images in [0, 1], any size.

    Returns:
        human-readable warnings.
    """
    pa_thumb = resize_radiograph(np.asarray(pa, dtype=np.float32), _THUMBNAIL)
    lat_thumb = resize_radiograph(np.asarray(lat, dtype=np.float32), _THUMBNAIL)
    if float(np.abs(pa_thumb - lat_thumb).max()) < IDENTICAL_TOLERANCE:
        return ["the PA and lateral radiographs are identical (the same image given twice?)"]
    pa_sym, lat_sym = mirror_symmetry(pa_thumb), mirror_symmetry(lat_thumb)
    if lat_sym - pa_sym > SWAP_SYMMETRY_MARGIN and pa_polarity(pa_thumb) < pa_polarity(lat_thumb):
        return [f"the PA and lateral radiographs look swapped: the lateral is left-right symmetric "
                f"({lat_sym:.2f}) and the PA is not ({pa_sym:.2f})"]
    return []


def load_radiograph(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """:func:`read_radiograph` then :func:`resize_radiograph`: a model-ready ``(size, size)`` image."""
    return resize_radiograph(read_radiograph(path), size)


def write_png(path: str | os.PathLike, image: np.ndarray, overwrite: bool = True) -> Path:
    """An 8-bit greyscale PNG of a ``(H, W)`` image in [0, 1] (clipped), written atomically; ``overwrite=False``
    never replaces a file. :func:`read_radiograph` reads it back within 1/255."""
    from PIL import Image  # Pillow: only writers and the non-DICOM readers need it

    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue(), overwrite)
