"""DICOM query/retrieve (C-FIND, C-GET, C-MOVE) on the storage SCP's AE, against dcmtk's
``findscu``, ``getscu`` and ``movescu`` (and a ``storescp`` as the C-MOVE destination) over real
sockets, plus the identifier translation on its own.

The network: Township A1 (CART1) and Township A2 (CART2) under County A (COUNTYPACS) under the
Prefecture Center. CART1 sent two studies, CART2 one; each device sees its own site's studies
and those of the sites below it.

"Retrieved as stored": a retrieve sends the stored data set bytes unchanged, so what a
bit-preserving receiver writes after its own file meta is the stored object's data set, byte for
byte, and it decodes to the data set of the file that was sent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Iterator

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid
from pynetdicom.dsutils import decode, encode
from sqlalchemy import select

import telediag as telediag_package
from services import free_port, unavailable
from telediag.bench.dcmtk import find_dcmtk
from telediag.bootstrap import System
from telediag.config import Settings
from telediag.domain import NetworkError
from telediag.ingest import QueryService
from telediag.ingest.qr import STUDY_ROOT, Refused, move_contexts, parse_identifier, response_identifier
from telediag.network import add_device, device_by_ae_title
from telediag.network.services import set_device_destination
from telediag.store.tables import StoredObject

from conftest import SAMPLE_DATA, Network, register_network
from scp_fixtures import SCP_AE, RunningSCP
from test_dicom_scp import PROPOSE, dataset_bytes, transfer_syntax

TOOLS = ("findscu", "getscu", "movescu", "storescp", "storescu", "echoscu")
TRAILING_PADDING, PIXEL_DATA = 0xFFFCFFFC, 0x7FE00010


# -- the identifier, translated ----------------------------------------------------------------------
def test_identifier_becomes_a_match_and_the_returned_keys() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "P1"
    ds.PatientName = "WANG*"
    ds.StudyDate = "20240101-20240131"
    ds.StudyInstanceUID = ["1.2.3", "1.2.4"]
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.AccessionNumber = "*"
    ds.StudyDescription = ""
    query = parse_identifier(ds, STUDY_ROOT)
    assert query.level == "STUDY"
    assert query.match == {"PatientID": "P1", "PatientName": "WANG*", "StudyDate": "20240101-20240131",
                           "StudyInstanceUID": "1.2.3,1.2.4", "ModalitiesInStudy": "CT\\MR"}
    assert {keyword for _, _, keyword in query.returned} == {
        "PatientID", "PatientName", "StudyDate", "StudyInstanceUID", "ModalitiesInStudy", "AccessionNumber",
        "StudyDescription"}


@pytest.mark.parametrize("level", ["PATIENT", "", "FRAME"])
def test_a_level_the_model_does_not_have_is_refused(level: str) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    with pytest.raises(Refused) as refused:
        parse_identifier(ds, STUDY_ROOT)
    assert refused.value.status == 0xA900


def test_response_has_the_requested_keys_in_utf8_when_needed() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = ""
    ds.ModalitiesInStudy = ""
    ds.NumberOfStudyRelatedInstances = None
    ds.RetrieveAETitle = ""
    ds.ReferencedStudySequence = []
    ds.InstitutionName = ""  # not in the catalog: returned empty
    query = parse_identifier(ds, STUDY_ROOT)
    record = {"PatientName": "Wang^Fang=王^芳", "ModalitiesInStudy": ["CT", "MR"],
              "NumberOfStudyRelatedInstances": 3, "StudyInstanceUID": "1.2.3", "_key": "secret"}
    rsp = response_identifier(query, record, "TELEDIAG")
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert str(rsp.PatientName) == "Wang^Fang=王^芳" and list(rsp.ModalitiesInStudy) == ["CT", "MR"]
    assert rsp.NumberOfStudyRelatedInstances == 3 and rsp.RetrieveAETitle == "TELEDIAG"
    assert rsp.InstitutionName in ("", None) and len(rsp.ReferencedStudySequence) == 0
    assert "StudyInstanceUID" not in rsp  # only what was asked for
    wire = decode(BytesIO(encode(rsp, False, True)), False, True)  # as pynetdicom sends it
    assert str(wire.PatientName) == "Wang^Fang=王^芳"


def test_a_move_proposes_what_it_sends() -> None:
    contexts = move_contexts([
        {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "_transfer_syntax": "1.2.840.10008.1.2.1"},
        {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "_transfer_syntax": "1.2.840.10008.1.2.1"},
        {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4", "_transfer_syntax": "1.2.840.10008.1.2.4.90"},
    ])
    explicit, implicit, deflated = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"
    assert [(cx.abstract_syntax, cx.transfer_syntax) for cx in contexts] == [
        ("1.2.840.10008.5.1.4.1.1.2", [explicit]),                        # as stored
        ("1.2.840.10008.5.1.4.1.1.4", ["1.2.840.10008.1.2.4.90"]),        # as stored
        ("1.2.840.10008.5.1.4.1.1.2", [implicit, deflated]),              # else converted
        ("1.2.840.10008.5.1.4.1.1.4", [explicit, implicit, deflated]),    # else decompressed
    ]


# -- the served SCP, over dcmtk --------------------------------------------------------------------
@dataclass
class Sent:
    """The files of the three sample studies, as sent."""

    a: list[Path]       # CART1, QR-P1, 2024-01-05: a CT series of two and an MR series of one
    b: list[Path]       # CART1, QR-P2, 2024-03-20: one JPEG 2000 lossless MR
    c: list[Path]       # CART2, QR-P3, 2024-02-10: one CT

    @staticmethod
    def study(files: list[Path]) -> str:
        return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


@dataclass
class QR:
    """The SCP with query/retrieve (built by ``System.storage_scp``), its network and the dcmtk tools."""

    running: RunningSCP
    tools: dict[str, str]
    sent: Sent
    tmp: Path

    @property
    def network(self) -> Network:
        return self.running.network

    def run(self, tool: str, *args: str, calling: str = "CART1") -> subprocess.CompletedProcess:
        cmd = [self.tools[tool], "-aet", calling, "-aec", SCP_AE, *args, "127.0.0.1", str(self.running.port)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def find(self, *keys: str, model: str = "-S", calling: str = "CART1") -> list[Dataset]:
        """``findscu`` with ``-k`` for each of ``keys``; the responses, in order."""
        out = self.tmp / f"find-{time.monotonic_ns()}"
        out.mkdir()
        args = [model, "-X", "-od", str(out)] + [a for k in keys for a in ("-k", k)]
        result = self.run("findscu", *args, calling=calling)
        assert result.returncode == 0, result.stdout + result.stderr
        return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def stored(self, sop_instance_uid: str) -> bytes:
        with self.network.system.db.uow() as uow:
            row = uow.session.scalar(select(StoredObject).where(StoredObject.sop_instance_uid == sop_instance_uid))
        return self.network.system.store.get(row.key, row.sha256)


def _sample(source: Path, out: Path, study: str, series: str, number: int, patient: tuple[str, str],
            date: str) -> Path:
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = patient
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDate, ds.InstanceNumber = date, number
    path = out / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def _send(running: RunningSCP, paths: list[Path], calling: str) -> None:
    for path in paths:
        result = running.storescu("-R", PROPOSE[transfer_syntax(path)], path, calling=calling)
        assert result.returncode == 0 and "Status" not in result.stderr, result.stdout + result.stderr


@pytest.fixture(scope="session")
def qr_tools() -> dict[str, str]:
    tools = {tool: find_dcmtk(tool) for tool in TOOLS}
    missing = [tool for tool, path in tools.items() if not path]
    if missing:
        unavailable(f"dcmtk {', '.join(missing)} not installed (apt-get install dcmtk)")
    return tools  # type: ignore[return-value]


@pytest.fixture
def qr(tmp_path: Path, qr_tools: dict[str, str]) -> Iterator[QR]:
    samples = SAMPLE_DATA / "dicom"  # in every clone, with or without ../shared
    system = System(Settings(data_dir=tmp_path / "data", ae_title=SCP_AE, dicom_port=0))
    network = register_network(system)
    add_device(system.db, "county-pacs", "County A", "COUNTYPACS")
    scp = system.storage_scp(host="127.0.0.1")
    scp.start()
    try:
        files = tmp_path / "sent"
        files.mkdir()
        a, b, c = generate_uid(), generate_uid(), generate_uid()
        ct, mr = generate_uid(), generate_uid()
        wang = ("QR-P1", "Wang^Fang=王^芳")
        sent = Sent(
            a=[_sample(samples / "CT_small.dcm", files, a, ct, 1, wang, "20240105"),
               _sample(samples / "CT_small.dcm", files, a, ct, 2, wang, "20240105"),
               _sample(samples / "MR_small.dcm", files, a, mr, 1, wang, "20240105")],
            b=[_sample(samples / "MR_small_jp2klossless.dcm", files, b, generate_uid(), 1,
                       ("QR-P2", "Li^Na"), "20240320")],
            c=[_sample(samples / "CT_small.dcm", files, c, generate_uid(), 1, ("QR-P3", "Zhao^Lei"),
                       "20240210")])
        running = RunningSCP(scp, network, qr_tools["storescu"], qr_tools["echoscu"])
        _send(running, sent.a + sent.b, "CART1")
        _send(running, sent.c, "CART2")
        yield QR(running, qr_tools, sent, tmp_path)
    finally:
        scp.stop()
        system.close()


@dataclass
class Viewer:
    """A C-MOVE destination: where it listens, and the folder it writes what it receives to."""

    port: int
    received: Path


@pytest.fixture
def viewers(qr: QR) -> Iterator[Callable[..., Viewer]]:
    """Starts a dcmtk ``storescp`` (bit-preserving; any transfer syntax, or with ``plain`` only
    the uncompressed ones) as a device of County A registered as a C-MOVE destination."""
    running: list[subprocess.Popen] = []

    def start(ae_title: str, plain: bool = False) -> Viewer:
        received = qr.tmp / ae_title
        received.mkdir()
        port = free_port()
        accept = [] if plain else ["+xa"]
        proc = subprocess.Popen([qr.tools["storescp"], "-aet", ae_title, "+B", *accept, "-od", str(received),
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running.append(proc)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "storescp did not start"
                time.sleep(0.05)
        add_device(qr.network.system.db, ae_title.lower(), "County A", ae_title)
        set_device_destination(qr.network.system.db, ae_title.lower(), "127.0.0.1", port)
        return Viewer(port, received)

    try:
        yield start
    finally:
        for proc in running:
            proc.terminate()
            proc.wait(10)


def _uids(responses: list[Dataset], keyword: str) -> set[str]:
    return {str(r.get(keyword)) for r in responses}


def _received(folder: Path) -> dict[str, Path]:
    """The files a retrieve wrote, by SOP Instance UID."""
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
            for p in folder.iterdir() if p.is_file()}


def _audit(qr: QR) -> list[dict[str, Any]]:
    """The audit trail, newest first (reads are appended in batches: this round's first)."""
    qr.network.system.db.read_audit.sweep()
    with qr.network.system.db.uow() as uow:
        return uow.audit.entries()


def _assert_as_stored(qr: QR, received: dict[str, Path], sent: list[Path]) -> None:
    """Each sent file came back: its data set bytes are the stored object's, its data set the sent one's."""
    assert len(received) == len(sent)
    for path in sent:
        original = pydicom.dcmread(path)
        got = received[str(original.SOPInstanceUID)]
        assert dataset_bytes(got.read_bytes()) == dataset_bytes(qr.stored(original.SOPInstanceUID))
        back = pydicom.dcmread(got)
        syntax = original.file_meta.TransferSyntaxUID
        assert back.file_meta.TransferSyntaxUID == syntax
        # storescu drops trailing padding and writes encapsulated Pixel Data as OB where a file says OW
        skip = {TRAILING_PADDING, PIXEL_DATA}
        assert [e for e in back if e.tag not in skip] == [e for e in original if e.tag not in skip]
        if syntax.is_encapsulated:
            assert list(generate_frames(back.PixelData, number_of_frames=1)) == \
                list(generate_frames(original.PixelData, number_of_frames=1))
        else:
            assert back.PixelData == original.PixelData


# -- C-FIND ----------------------------------------------------------------------------------------
def test_find_study_by_patient_id_within_the_callers_sites(qr: QR) -> None:
    keys = ("QueryRetrieveLevel=STUDY", "PatientID=QR-P1", "StudyInstanceUID", "PatientName", "StudyDate",
            "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "RetrieveAETitle")
    (study,) = qr.find(*keys)
    assert study.StudyInstanceUID == Sent.study(qr.sent.a) and study.StudyDate == "20240105"
    assert str(study.PatientName) == "Wang^Fang=王^芳"
    assert sorted(study.ModalitiesInStudy) == ["CT", "MR"] and study.NumberOfStudyRelatedInstances == 3
    assert study.RetrieveAETitle == SCP_AE

    assert qr.find(*keys, calling="CART2") == []                   # another township: nothing
    assert len(qr.find(*keys, calling="COUNTYPACS")) == 1           # its county: its townships' studies
    assert _uids(qr.find("QueryRetrieveLevel=STUDY", "StudyInstanceUID", calling="CART2"),
                 "StudyInstanceUID") == {Sent.study(qr.sent.c)}
    assert _uids(qr.find("QueryRetrieveLevel=STUDY", "StudyInstanceUID", calling="COUNTYPACS"),
                 "StudyInstanceUID") == {Sent.study(s) for s in (qr.sent.a, qr.sent.b, qr.sent.c)}
    searches = [e for e in _audit(qr) if e["action"] == "search"]
    assert {e["username"] for e in searches} == {"device:cart-a1", "device:cart-a2", "device:county-pacs"}
    assert searches[-1]["detail"] == {"level": "STUDY", "keys": ["PatientID"]}  # the first, with its key
    assert all(e["address"] == "127.0.0.1" and e["case_id"] is None for e in searches)


def test_find_by_wildcard_name_date_range_and_uid_list(qr: QR) -> None:
    a, b = Sent.study(qr.sent.a), Sent.study(qr.sent.b)
    study = ("QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert _uids(qr.find(*study, "StudyDate=20240101-20240131"), "StudyInstanceUID") == {a}
    assert _uids(qr.find(*study, "StudyDate=20240201-"), "StudyInstanceUID") == {b}
    assert _uids(qr.find(*study, "StudyDate=-20241231"), "StudyInstanceUID") == {a, b}
    assert qr.find(*study, "StudyDate=20230101-20231231") == []
    assert _uids(qr.find(*study, "PatientName=wang*"), "StudyInstanceUID") == {a}
    assert _uids(qr.find(*study, "SpecificCharacterSet=ISO_IR 192", "PatientName=王^芳"), "StudyInstanceUID") == {a}
    assert _uids(qr.find(*study, "PatientID=QR-P?"), "StudyInstanceUID") == {a, b}
    assert _uids(qr.find("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={a}\\{b}"), "StudyInstanceUID") == {a, b}


def test_find_series_and_image_levels(qr: QR) -> None:
    a = Sent.study(qr.sent.a)
    series = qr.find("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={a}", "SeriesInstanceUID", "Modality",
                     "NumberOfSeriesRelatedInstances")
    assert sorted((s.Modality, s.NumberOfSeriesRelatedInstances) for s in series) == [("CT", 2), ("MR", 1)]
    assert {s.StudyInstanceUID for s in series} == {a}
    ct = next(s.SeriesInstanceUID for s in series if s.Modality == "CT")

    images = qr.find("QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={a}", f"SeriesInstanceUID={ct}",
                     "SOPInstanceUID", "SOPClassUID", "InstanceNumber")
    sent_ct = [pydicom.dcmread(p, stop_before_pixels=True) for p in qr.sent.a[:2]]
    assert [(i.SOPInstanceUID, i.InstanceNumber) for i in images] == [(d.SOPInstanceUID, d.InstanceNumber)
                                                                      for d in sent_ct]
    assert qr.find("QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={a}", f"SeriesInstanceUID={ct}",
                   "SOPInstanceUID", calling="CART2") == []


def test_find_patients_in_the_patient_root_model(qr: QR) -> None:
    patients = qr.find("QueryRetrieveLevel=PATIENT", "PatientID", "PatientName", "NumberOfPatientRelatedStudies",
                       "NumberOfPatientRelatedInstances", model="-P", calling="COUNTYPACS")
    assert sorted((p.PatientID, p.NumberOfPatientRelatedStudies, p.NumberOfPatientRelatedInstances)
                  for p in patients) == [("QR-P1", 1, 3), ("QR-P2", 1, 1), ("QR-P3", 1, 1)]
    studies = qr.find("QueryRetrieveLevel=STUDY", "PatientID=QR-P1", "StudyInstanceUID", model="-P")
    assert _uids(studies, "StudyInstanceUID") == {Sent.study(qr.sent.a)}


def test_find_refuses_what_the_model_has_not(qr: QR) -> None:
    for key in ("QueryRetrieveLevel=PATIENT", "StudyDate=May"):  # Study Root has no patient level
        result = qr.run("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", key)
        assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.stdout + result.stderr


def test_an_unregistered_calling_ae_is_refused(qr: QR) -> None:
    for tool, args in (("findscu", ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]),
                       ("getscu", ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=QR-P1",
                                   "-od", str(qr.tmp)]),
                       ("movescu", ["-S", "-aem", "CART1", "-k", "QueryRetrieveLevel=STUDY",
                                    "-k", "PatientID=QR-P1"])):
        result = qr.run(tool, *args, calling="INTRUDER")
        out = result.stdout + result.stderr
        assert result.returncode != 0 and "Association Rejected" in out, (tool, out)


# -- C-GET -----------------------------------------------------------------------------------------
def test_get_sends_a_study_back_as_stored(qr: QR) -> None:
    out = qr.tmp / "got-a"
    out.mkdir()
    a = Sent.study(qr.sent.a)
    result = qr.run("getscu", "-S", "+B", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={a}")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_as_stored(qr, _received(out), qr.sent.a)
    [got] = [e for e in _audit(qr) if e["action"] == "retrieve"]
    assert got["username"] == "device:cart-a1" and got["case_id"] is not None
    assert got["detail"]["instances"] == len(qr.sent.a) and got["detail"]["level"] == "STUDY"

    # a series; and the compressed study (JPEG 2000 lossless), for which getscu's one context per
    # SOP class was accepted uncompressed, decompressed
    series = pydicom.dcmread(qr.sent.a[2], stop_before_pixels=True).SeriesInstanceUID
    out_series, out_b = qr.tmp / "got-series", qr.tmp / "got-b"
    out_series.mkdir(), out_b.mkdir()
    result = qr.run("getscu", "-S", "+B", "-od", str(out_series), "-k", "QueryRetrieveLevel=SERIES",
                    "-k", f"StudyInstanceUID={a}", "-k", f"SeriesInstanceUID={series}")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_as_stored(qr, _received(out_series), qr.sent.a[2:])
    result = qr.run("getscu", "-P", "+B", "-od", str(out_b), "-k", "QueryRetrieveLevel=PATIENT",
                    "-k", "PatientID=QR-P2")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_decompressed(_received(out_b), qr.sent.b)


def _assert_decompressed(received: dict[str, Path], sent: list[Path]) -> None:
    """Each sent (compressed) file came back uncompressed: the same instance, the same pixels."""
    assert len(received) == len(sent)
    for path in sent:
        original = pydicom.dcmread(path)
        back = pydicom.dcmread(received[str(original.SOPInstanceUID)])
        assert not back.file_meta.TransferSyntaxUID.is_encapsulated
        assert (back.pixel_array == original.pixel_array).all()
        assert back.PatientID == original.PatientID and back.StudyInstanceUID == original.StudyInstanceUID


def test_get_from_another_township_sends_nothing(qr: QR) -> None:
    out = qr.tmp / "got-nothing"
    out.mkdir()
    result = qr.run("getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={Sent.study(qr.sent.a)}", calling="CART2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(out.iterdir()) == []


# -- C-MOVE ----------------------------------------------------------------------------------------
def test_move_sends_to_a_registered_destination(qr: QR, viewers: Callable[..., Viewer]) -> None:
    viewer = viewers("VIEWER")
    a = Sent.study(qr.sent.a)
    result = qr.run("movescu", "-S", "-aem", "VIEWER", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={a}", calling="COUNTYPACS")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_as_stored(qr, _received(viewer.received), qr.sent.a)
    [moved] = [e for e in _audit(qr) if e["action"] == "move"]
    assert moved["username"] == "device:county-pacs" and moved["detail"]["destination"] == "VIEWER"
    assert moved["detail"]["instances"] == len(qr.sent.a)

    # the compressed study goes in its stored transfer syntax too
    result = qr.run("movescu", "-S", "-aem", "VIEWER", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=QR-P2")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_as_stored(qr, _received(viewer.received), qr.sent.a + qr.sent.b)


def test_move_decompresses_for_a_destination_without_the_codec(qr: QR, viewers: Callable[..., Viewer]) -> None:
    plain = viewers("PLAIN", plain=True)
    result = qr.run("movescu", "-P", "-aem", "PLAIN", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=QR-P?")
    assert result.returncode == 0, result.stdout + result.stderr
    received = _received(plain.received)
    _assert_as_stored(qr, {uid: received[uid] for uid in received if uid in _sop_uids(qr.sent.a)}, qr.sent.a)
    _assert_decompressed({uid: received[uid] for uid in received if uid in _sop_uids(qr.sent.b)}, qr.sent.b)


def _sop_uids(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}


def test_move_only_to_registered_destinations_and_within_both_scopes(qr: QR,
                                                                     viewers: Callable[..., Viewer]) -> None:
    viewer = viewers("VIEWER")
    study = ("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={Sent.study(qr.sent.a)}")
    result = qr.run("movescu", "-S", "-aem", "NOBODY", *study)
    assert "MoveDestinationUnknown" in result.stdout + result.stderr
    result = qr.run("movescu", "-S", "-aem", "COUNTYPACS", *study)  # registered, but no DICOM address
    assert "MoveDestinationUnknown" in result.stdout + result.stderr

    # the county may see Township A1's study, a device of Township A2 may not: nothing is sent
    add_device(qr.network.system.db, "a2-viewer", "Township A2", "A2VIEWER")
    set_device_destination(qr.network.system.db, "a2-viewer", "127.0.0.1", viewer.port)
    result = qr.run("movescu", "-S", "-aem", "A2VIEWER", *study, calling="COUNTYPACS")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(viewer.received.iterdir()) == []


# -- registering a destination -------------------------------------------------------------------
def test_a_destination_is_registered_from_the_shell(tmp_path: Path) -> None:
    system = System(Settings(data_dir=tmp_path / "data"))
    try:
        network = register_network(system)
        add_device(system.db, "no-ae", "County A")
        queries = QueryService(system.db, system.store)
        cart = device_by_ae_title(system.db, network.ae_title)

        def telediag(*args: str) -> subprocess.CompletedProcess:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TELEDIAG_")}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(telediag_package.__file__).parents[1]),
                                                            env.get("PYTHONPATH")) if p)
            env["TELEDIAG_DATA_DIR"] = str(tmp_path / "data")
            return subprocess.run([sys.executable, "-m", "telediag.cli", "device", "set-destination", *args],
                                  env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

        assert queries.move(cart, "CART2") is None
        done = telediag("cart-a2", "10.0.0.5", "104")
        assert done.returncode == 0 and "receives C-MOVEs at 10.0.0.5:104" in done.stdout, done.stderr
        destination, _ = queries.move(cart, "cart2")
        assert (destination.ae_title, destination.host, destination.port) == ("CART2", "10.0.0.5", 104)

        refused = telediag("no-ae", "10.0.0.6", "104")
        assert refused.returncode == 2 and "has no AE title" in refused.stderr, refused.stderr
        for args, error in ((("cart-a2", "10.0.0.5", None), "needs a host and a port"),
                            (("cart-a2", "10.0.0.5", 70000), "needs a host and a port"),
                            (("nobody", "10.0.0.6", 104), "unknown device")):
            with pytest.raises(NetworkError, match=error):
                set_device_destination(system.db, *args)

        assert telediag("cart-a2", "none").returncode == 0
        assert queries.move(cart, "CART2") is None
    finally:
        system.close()
