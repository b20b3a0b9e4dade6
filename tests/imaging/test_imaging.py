"""telediag.imaging: decoding every sample, the display pipeline, frame-at-a-time access and
the header check.

The shared samples (one per modality and transfer syntax) run when ``../shared/data/dicom`` is
there; the copies in ``sample_data/dicom`` always run. Synthetic data sets cover what no sample
has: a ramp to check windowing against PS3.3's formula, a multi-frame RLE object with one
corrupt frame, broken headers.
"""

from __future__ import annotations

import copy
import io
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.datadict import keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.tag import Tag
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    UID,
    generate_uid,
)

from telediag.bench.refdata import project_root, shared_data_dir
from telediag.imaging import (
    Frames,
    ImageError,
    Severity,
    Window,
    check_header,
    decode_frames,
    load_dataset,
    modality_values,
    render,
    render_jpeg,
    render_png,
    thumbnail,
    window_presets,
)

SAMPLE_DIR = project_root() / "sample_data" / "dicom"
_SHARED = shared_data_dir()
SHARED_DIR = _SHARED / "dicom" if _SHARED is not None else None

# The files that are broken on purpose, or no image at all, and the finding each must give.
NOT_RENDERABLE = {
    "MR_truncated.dcm": "pixel_data_short",
    "badVR.dcm": "frames_invalid",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "unreadable",
    "no_meta.dcm": "unreadable",
    "test_ecg.dcm": "no_pixel_data",
    "waveform_ecg.dcm": "no_pixel_data",
}
MIN_STD = 5.0
"""A rendered preview whose gray levels vary less than this is taken as blank."""


def _sample_params() -> list:
    params = [pytest.param(p, id=f"sample_data/{p.name}") for p in sorted(SAMPLE_DIR.glob("*.dcm"))]
    if SHARED_DIR is not None and SHARED_DIR.is_dir():
        params += [pytest.param(p, id=f"shared/{p.name}") for p in sorted(SHARED_DIR.glob("*.dcm"))]
    else:
        params.append(pytest.param(None, id="shared", marks=pytest.mark.skip(
            reason="the shared DICOM samples (<shared data>/dicom) are not present")))
    return params


def _shared(name: str) -> bytes:
    if SHARED_DIR is None or not (SHARED_DIR / name).is_file():
        pytest.skip(f"the shared sample {name} is not present")
    return (SHARED_DIR / name).read_bytes()


def _expected_frames(raw: bytes) -> np.ndarray:
    """pydicom's own decoding, in the colour model decode_frames promises (palette looked up)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(raw))
        arr = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    return arr


def _png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(image)


# --- every sample -------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the broken samples
@pytest.mark.parametrize("path", _sample_params())
def test_sample_decodes_like_pydicom_and_renders(path: Path) -> None:
    raw = path.read_bytes()
    if path.name == "JPGExtended.dcm" and not _gpl_jpeg_codec():
        # 12-bit JPEG Extended decodes only with libjpeg (GPL), an optional extra: without it
        # the refusal must say why rather than fail obscurely.
        with pytest.raises(ImageError, match="12-bit"):
            render_png(raw)
        return
    if path.name in NOT_RENDERABLE:
        codes = [f.code for f in check_header(raw) if f.severity is Severity.ERROR]
        assert codes and codes[0] == NOT_RENDERABLE[path.name]
        with pytest.raises(ImageError) as caught:
            render_png(raw)
        assert str(caught.value)
        return
    frames = decode_frames(raw)
    assert not [f for f in check_header(raw) if f.severity is Severity.ERROR]
    expected = _expected_frames(raw)
    if len(frames) == 1:
        expected = expected[np.newaxis]
    assert len(frames) == expected.shape[0]
    for index, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, expected[index])
    middle = len(frames) // 2
    png = _png(render_png(frames, middle))
    assert png.shape[:2] == (frames.rows, frames.columns)
    assert png.ndim == (3 if frames.is_color else 2)
    assert Image.open(io.BytesIO(render_png(frames, middle))).mode == ("RGB" if frames.is_color else "L")
    assert png.std() > MIN_STD, "the preview is blank"


def _gpl_jpeg_codec() -> bool:
    """Whether the optional pylibjpeg-libjpeg (GPL-3.0) plugin is installed."""
    from pydicom.pixels.decoders import JPEGExtended12BitDecoder

    return "pylibjpeg" in JPEGExtended12BitDecoder.available_plugins


def test_transfer_syntaxes_have_a_decoder() -> None:
    """The plugins for every transfer syntax of issue 9 are installed (GDCM, pylibjpeg with its
    OpenJPEG and RLE plugins, Pillow); 12-bit JPEG Extended additionally needs the optional
    GPL codec (``pip install telediag[gpl-codecs]``)."""
    for syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                   DeflatedExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit, JPEGExtended12Bit,
                   JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, JPEG2000):
        assert get_decoder(syntax).is_available, syntax.name


# --- display pipeline ---------------------------------------------------------------------


def _ramp_dataset(values: np.ndarray, *, rows: int = 1, sop_class: str = MRImageStorage,
                  modality: str = "MR") -> Dataset:
    """An uncompressed MONOCHROME2 image holding ``values`` (uint16), one frame per ``rows``."""
    values = values.astype(np.uint16).reshape(rows, -1)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = values.tobytes()
    return ds


def test_window_clips_a_ramp_as_ps33_linear() -> None:
    ramp = np.arange(1024)
    out = render(_ramp_dataset(ramp), window=(512, 256)).ravel().astype(int)
    low_edge, high_edge = 512 - 0.5 - 255 / 2, 512 - 0.5 + 255 / 2   # PS3.3 C.11.2.1.2.1
    assert (out[ramp <= low_edge] == 0).all()
    assert (out[ramp > high_edge] == 255).all()
    inside = (ramp > low_edge) & (ramp <= high_edge)
    assert np.all(np.diff(out[inside]) >= 0) and out[inside].min() <= 1 and out[inside].max() >= 254
    assert out[512] == 128  # ((512 - 511.5) / 255 + 0.5) * 255 rounded
    exact = render(_ramp_dataset(ramp), window=Window(512, 256, "LINEAR_EXACT")).ravel()
    assert exact[512 - 128] == 0 and exact[512 + 128] == 255


def test_header_presets_by_index_and_auto_window() -> None:
    ds = _ramp_dataset(np.arange(1024))
    ds.WindowCenter, ds.WindowWidth = [512, 100], [256, 50]
    ds.WindowCenterWidthExplanation = ["WIDE", "NARROW"]
    presets = window_presets(decode_frames(ds))
    assert [p.explanation for p in presets] == ["WIDE", "NARROW"]
    np.testing.assert_array_equal(render(ds), render(ds, window=(512, 256)))
    np.testing.assert_array_equal(render(ds, window=1), render(ds, window=(100, 50)))
    with pytest.raises(ImageError, match="preset 2"):
        render(ds, window=2)
    # Without a header window a percentile window spans the data; one hot pixel does not
    # squash the rest of the ramp into black.
    spiky = np.arange(1024)
    spiky[7] = 65000
    auto = render(_ramp_dataset(spiky)).ravel()
    assert auto[1023] == 255 and auto[10] < 5 and 100 < auto[512] < 155


def test_voi_lut_sequence_applies() -> None:
    ds = _ramp_dataset(np.arange(256))
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = [255 - i for i in range(256)]  # a table that inverts
    ds.VOILUTSequence = [item]
    out = render(ds).ravel()
    assert out[0] == 255 and out[255] == 0


def test_monochrome1_renders_inverted() -> None:
    raw = (SAMPLE_DIR / "CT_small.dcm").read_bytes()
    ds2 = load_dataset(raw)
    ds1 = copy.deepcopy(ds2)
    ds1.PhotometricInterpretation = "MONOCHROME1"
    for window in (None, (40, 400), "auto"):
        mono2 = render(ds2, window=window).astype(int)
        mono1 = render(ds1, window=window).astype(int)
        np.testing.assert_array_equal(mono1, 255 - mono2)


def test_ct_rescale_gives_hounsfield_units() -> None:
    raw = (SAMPLE_DIR / "CT_small.dcm").read_bytes()
    ds = load_dataset(raw)
    hu = modality_values(decode_frames(ds))
    np.testing.assert_allclose(hu, ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert hu.min() < -800  # air / lung: about -1000 HU, this sample's darkest is -896
    assert -100 < np.median(hu) < 100  # soft tissue
    # A narrow window at 0 HU splits the image by the sign of HU, not of the stored values
    # (all positive here), so the rescale is in force before the VOI.
    split = render(ds, window=Window(0, 2, "LINEAR_EXACT"))
    np.testing.assert_array_equal(split == 255, hu >= 1)
    np.testing.assert_array_equal(split == 0, hu <= -1)


def test_enhanced_functional_groups_rescale_and_window_per_frame() -> None:
    ds = _ramp_dataset(np.tile(np.arange(100, 356), 2), rows=2)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 1, 256, 2
    shared, frame0, frame1 = Dataset(), Dataset(), Dataset()
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 2, -100, "US"
    shared.PixelValueTransformationSequence = [transform]
    for item, (center, width) in ((frame0, (200, 100)), (frame1, (400, 100))):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        item.FrameVOILUTSequence = [voi]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [frame0, frame1]
    frames = decode_frames(ds)
    np.testing.assert_array_equal(modality_values(frames, 1).ravel(), np.arange(100, 356) * 2 - 100)
    np.testing.assert_array_equal(render(frames, 0), render(frames, 0, window=(200, 100)))
    np.testing.assert_array_equal(render(frames, 1), render(frames, 1, window=(400, 100)))
    assert not np.array_equal(render(frames, 0), render(frames, 1))


def test_colour_models_render_rgb() -> None:
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "examples_palette.dcm", "US1_J2KI.dcm"):
        raw = _shared(name)
        image = Image.open(io.BytesIO(render_jpeg(raw, size=(64, 64))))
        assert image.mode == "RGB" and max(image.size) == 64
    # The dcmtk test pattern is a colour image: its channels differ after YBR -> RGB.
    rgb = render(_shared("SC_rgb_jpeg_dcmtk.dcm")).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).mean() > 10


def test_sizes_and_thumbnail_keep_the_aspect_ratio() -> None:
    raw = (SAMPLE_DIR / "CT_small.dcm").read_bytes()
    assert Image.open(io.BytesIO(render_png(raw, size=256))).size == (256, 256)
    assert Image.open(io.BytesIO(render_png(raw, size=(64, 32)))).size == (32, 32)
    thumb = Image.open(io.BytesIO(thumbnail(raw, max_side=48)))
    assert thumb.size == (48, 48) and thumb.format == "PNG"
    assert Image.open(io.BytesIO(thumbnail(raw, fmt="jpeg"))).format == "JPEG"
    tall = _ramp_dataset(np.arange(400 * 100) % 997, rows=400)
    assert Image.open(io.BytesIO(thumbnail(tall, max_side=128))).size == (32, 128)
    with pytest.raises(ImageError):
        render_png(raw, size=0)


# --- one frame at a time ------------------------------------------------------------------


def _rle_multiframe(count: int = 8, side: int = 32) -> tuple[Dataset, np.ndarray]:
    """A multi-frame RLE image whose frame i is a gradient plus 100 * i."""
    stack = (np.add.outer(np.arange(side), np.arange(side))[np.newaxis] * 10
             + 100 * np.arange(count)[:, np.newaxis, np.newaxis]).astype(np.uint16)
    ds = _ramp_dataset(stack.ravel(), rows=count)
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = count
    ds.compress(RLELossless, stack)
    return ds, stack


class _CountingDecoder:
    """Records the frame index of every Decoder.as_array call (None would mean "all frames")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.indices: list[int | None] = []
        original = Decoder.as_array

        def counting(decoder: Decoder, src: Any, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
            self.indices.append(kwargs.get("index"))
            return original(decoder, src, **kwargs)

        monkeypatch.setattr(Decoder, "as_array", counting)


def test_one_frame_renders_without_decoding_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    ds, stack = _rle_multiframe()
    frames = list(generate_frames(ds.PixelData, number_of_frames=8))
    frames[3] = b"\x01\x00\x00\x00" + b"\x00" * 60 + b"garbage"  # an RLE header with no segment
    ds.PixelData = encapsulate(frames)
    counter = _CountingDecoder(monkeypatch)
    decoded = decode_frames(ds)
    np.testing.assert_array_equal(decoded[5], stack[5])
    assert _png(render_png(decoded, 6)).shape == (32, 32)
    assert counter.indices == [5, 6]
    with pytest.raises(ImageError, match="frame 3"):
        decoded[3]
    assert len(thumbnail(decoded)) > 0  # the middle frame, 4
    assert counter.indices[-1] == 4


def test_corrupt_rle_that_panics_the_rust_decoder_is_an_image_error() -> None:
    """pylibjpeg-rle panics (a BaseException) on a segment that runs past the frame."""
    ds = _ramp_dataset(np.arange(4))
    first, second = b"\x03\x01\x02\x03\x04", b"\x81\x05"  # the second: 128 x 0x05 for 4 bytes
    header = struct.pack("<16L", 2, 64, 64 + len(first), *[0] * 13)
    ds.PixelData = encapsulate([header + first + second])
    ds.file_meta.TransferSyntaxUID = RLELossless
    with pytest.raises(ImageError, match="frame 0"):
        render(ds)


def test_real_cine_renders_its_last_frame_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _shared("examples_ybr_color.dcm")
    counter = _CountingDecoder(monkeypatch)
    frames = decode_frames(raw)
    assert len(frames) == 30
    assert _png(render_png(frames, 29)).shape == (240, 320, 3)
    assert _png(render_png(frames, -1)).shape == (240, 320, 3)
    assert counter.indices == [29, 29]
    with pytest.raises(ImageError, match="30 frame"):
        frames[30]


# --- header check and bad input -----------------------------------------------------------


def _codes(data: object) -> dict[str, Severity]:
    findings = check_header(data)  # type: ignore[arg-type]
    assert all(f.code and f.text and isinstance(f.severity, Severity) for f in findings)
    return {f.code: f.severity for f in findings}


def _set_invalid(ds: Dataset, keyword: str, vr: str, value: bytes) -> None:
    """Put an invalid value in ``ds`` as it arrives from a sender's file: raw, converted on
    access (pydicom refuses to set one through its attributes)."""
    tag = Tag(keyword_dict[keyword])
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the invalid values
def test_header_findings_on_broken_headers() -> None:
    def broken(change) -> Dataset:  # type: ignore[no-untyped-def]
        ds = _ramp_dataset(np.arange(64), rows=8)
        change(ds)
        return ds

    assert _codes(broken(lambda ds: None)) == {}
    assert _codes(broken(lambda ds: delattr(ds, "PixelData"))) == {"no_pixel_data": Severity.ERROR}
    assert "zero_dimensions" in _codes(broken(lambda ds: setattr(ds, "Rows", 0)))
    assert "bits_stored_invalid" in _codes(broken(lambda ds: setattr(ds, "BitsStored", 20)))
    assert "pixel_data_short" in _codes(broken(lambda ds: setattr(ds, "NumberOfFrames", 3)))
    assert "pixel_data_long" in _codes(broken(lambda ds: setattr(ds, "Columns", 4)))
    assert "photometric_unknown" in _codes(broken(lambda ds: setattr(ds, "PhotometricInterpretation", "HSV")))
    assert "samples_inconsistent" in _codes(broken(lambda ds: setattr(ds, "PhotometricInterpretation", "RGB")))
    assert _codes(broken(lambda ds: delattr(ds, "Modality"))) == {"modality_missing": Severity.WARNING}
    assert "frames_invalid" in _codes(broken(lambda ds: _set_invalid(ds, "NumberOfFrames", "IS", b"1A")))
    codes = _codes(broken(lambda ds: _set_invalid(ds, "RescaleSlope", "DS", b"1o0 ")))
    assert codes.get("rescale_slope_invalid") is Severity.ERROR


def test_wrong_modality_is_a_warning_and_still_renders() -> None:
    ds = _ramp_dataset(np.arange(256), sop_class=CTImageStorage, modality="MR")
    findings = check_header(ds)
    assert [(f.code, f.severity) for f in findings] == [("modality_mismatch", Severity.WARNING)]
    assert "CT Image Storage" in findings[0].text and "MR" in findings[0].text
    assert render(ds).shape == (1, 256)


def test_decode_error_carries_the_findings() -> None:
    ds = _ramp_dataset(np.arange(64), rows=8)
    ds.Rows = 0
    with pytest.raises(ImageError, match="0 rows") as caught:
        decode_frames(ds)
    assert any(f.code == "zero_dimensions" for f in caught.value.findings)


def test_encapsulated_frame_count_mismatch() -> None:
    ds, _ = _rle_multiframe(count=4)
    ds.NumberOfFrames = 6
    assert _codes(ds) == {"frames_inconsistent": Severity.ERROR}


def test_bare_data_set_without_file_meta_decodes() -> None:
    ds = load_dataset((SAMPLE_DIR / "CT_small.dcm").read_bytes())
    buffer = io.BytesIO()
    bare = copy.deepcopy(ds)
    del bare.file_meta
    bare.preamble = None
    pydicom.dcmwrite(buffer, bare, enforce_file_format=False, implicit_vr=False, little_endian=True)
    raw = buffer.getvalue()
    assert raw[128:132] != b"DICM"
    assert _codes(raw) == {"no_file_meta": Severity.WARNING}
    np.testing.assert_array_equal(decode_frames(raw)[0], ds.pixel_array)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "MR_truncated.dcm"])
def test_cut_or_garbled_files_give_image_error_only(name: str) -> None:
    raw = (SAMPLE_DIR / name).read_bytes()
    cuts = {0, 5, 128, 132, 200, 700, len(raw) // 2, len(raw) - 64, len(raw) - 1}
    variants = [raw[:cut] for cut in sorted(cuts)] + [b"\x00" * 300, b"DICM" * 100]
    rng = np.random.default_rng(9)
    for _ in range(40):
        garbled = bytearray(raw)
        for pos in rng.integers(132, 1500, size=3):
            garbled[pos] = int(rng.integers(256))
        variants.append(bytes(garbled))
    for data in variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert isinstance(check_header(data), list)
            try:
                frames = decode_frames(data)
                render_png(frames, len(frames) // 2)
            except ImageError as exc:
                assert str(exc)


def test_frames_is_the_public_type() -> None:
    assert isinstance(decode_frames((SAMPLE_DIR / "MR_small_RLE.dcm").read_bytes()), Frames)
    with pytest.raises(ImageError, match="unknown window"):
        render((SAMPLE_DIR / "CT_small.dcm").read_bytes(), window="bright")
