"""The readers' working day as use cases: queue, claim, read, report, sign, amend, audit.

Every method takes the caller (a :class:`~telediag.domain.Principal`) and the address the
request came from, checks what the caller's role and site allow, does its work in one unit
of work and writes the audit entry in that same transaction, so no action happens without
its trace and no trace is left of an action that did not happen.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Literal

import numpy as np
from pydicom import dcmread

from telediag import imaging
from telediag.analysis import THUMBNAIL_SIDE, load_recording, preview_keys
from telediag.domain import (QUALIFICATIONS, AlarmEventsRecorded, AuditBreak, CaseNotVisible, InvalidReport, CaseRef,
                             ClaimConflict, DeviceIdentity, IngestOutcome, MediaType, NotPermitted, Principal,
                             PushChannel, ReportImmutable, ReportState, ReportVersion, Role, SiteLevel,
                             audit_hash, canonical_json, report_content, report_digest, utc_seconds)
from telediag.ecg import MEASUREMENT_KEYS, Recording
from telediag.ecg.readers.wfdb import RangeRead, WfdbLayout, read_wfdb_window, wfdb_layout
from telediag.messagebus import MessageBus
from telediag.network import KeyVault
from telediag.review import statements as catalogue
from telediag.review.dicom_report import ENCAPSULATED_PDF_STORAGE, encapsulated_report
from telediag.store import Database, ObjectRef, ObjectStore, ObjectStoreError
from telediag.store.review import CaseScope

log = logging.getLogger(__name__)

#: Decoded recordings kept per process for the viewer: short ECGs; a WFDB record is read by range
#: instead (a 24-hour 3-lead Holter would be ~500 MB as float64).
_DECODED_KEPT = 4
#: WFDB records read by range kept per process: a header's layout and the files' keys, a few KB each.
_RANGED_KEPT = 256
#: Overview envelopes of records read by range kept per process (at most 5000 bins of min and max:
#: 80 KB), so the overview strip is computed once per record, lead and width.
_ENVELOPES_KEPT = 64
#: Samples (of all leads together) the overview's pass over a record read by range takes at a time:
#: a few MB whatever the record's length, in few reads (62 for a 24-hour 3-lead Holter).
_OVERVIEW_CHUNK_VALUES = 1 << 20
#: Parsed images kept per process for the viewer's frames and windows (each holds its pixel data).
_IMAGES_KEPT = 4
#: Header summaries of images kept per process (a few hundred bytes each; objects never change).
_IMAGE_FACTS_KEPT = 4096
#: Modalities of objects in an imaging study that are no images: reports, structured and key-object
#: documents, presentation states.
_NOT_IMAGES = frozenset({"DOC", "SR", "KO", "PR"})

#: What stores a Part 10 object into its study as a device: the ingest use case's ``ingest_dicom``.
StudyArchive = Callable[[DeviceIdentity, bytes], IngestOutcome]


@dataclass(frozen=True)
class _RangedRecord:
    """A WFDB record in the object store that the viewer reads window by window: its header's
    layout (fs, leads, n_samples, duration_s, as a Recording has them) and a ranged read per
    signal file."""

    layout: WfdbLayout
    files: dict[str, RangeRead]

    def window(self, start: int, stop: int, leads: list[int] | None = None) -> np.ndarray:
        return read_wfdb_window(self.layout, self.files, start, stop, leads)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _who(p: Principal) -> dict[str, Any]:
    return {"username": p.username if p.is_user else f"device:{p.username}",
            "role": p.role.value if p.role else "device", "user_id": p.user_id}


def audit(uow, p: Principal, action: str, address: str | None, case_id: int | None = None, **detail: Any) -> None:
    """Append who did ``action`` (on ``case_id``) to the audit trail, in the caller's unit of work,
    so the entry commits with the action or not at all."""
    uow.audit.append(**_who(p), action=action, case_id=case_id, detail=detail, address=address)


def audit_read(db: Database, p: Principal, action: str, address: str | None, case_id: int | None = None,
               **detail: Any) -> None:
    """Audit a search or a read, which changes nothing: appended with others in the next batch
    (``store.read_audit``), not in a commit of its own."""
    db.read_audit.record(**_who(p), action=action, case_id=case_id, detail=detail, address=address)


@dataclass
class ReviewService:
    """The review stage's use cases over the database, the object store and the readers' keys.

    A signed version (and each amendment) is pushed to the case's clinic like an alarm: a
    ``report`` event and its outbox deliveries over ``channels`` commit with the signature, and
    ``bus`` gets them after the commit so they go out at once (without a bus the push
    sweeper sends them). Its PDF goes back into the case's study as an Encapsulated PDF
    instance through ``archive`` (the ingest use case, given by ``bootstrap``), so a PACS that
    pulls the study gets the report; without one, reports stay out of the studies."""

    db: Database
    store: ObjectStore
    vault: KeyVault
    claim_lease_s: float = 900.0
    #: An imaging study enters the queue after this long without a new instance.
    study_quiet_s: float = 60.0
    bus: MessageBus | None = None
    channels: tuple[PushChannel, ...] = ()
    archive: StudyArchive | None = None
    _decoded: OrderedDict[int, Recording] = field(default_factory=OrderedDict, init=False, repr=False)
    _ranged: OrderedDict[int, _RangedRecord] = field(default_factory=OrderedDict, init=False, repr=False)
    _envelopes: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=OrderedDict, init=False, repr=False)
    _images: OrderedDict[int, imaging.Frames] = field(default_factory=OrderedDict, init=False, repr=False)
    _image_facts: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict, init=False, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # -- who sees what -------------------------------------------------------------------------
    @staticmethod
    def scope(p: Principal) -> CaseScope:
        """A township's people and devices see their site's cases; a county's readers and
        administrators the cases routed to it now or before; the prefecture, for quality
        control, the whole network."""
        if not p.is_user or p.role is Role.CLINIC:
            return CaseScope(own_site=p.site_id)
        if p.site_level == SiteLevel.PREFECTURE.value:
            return CaseScope()
        return CaseScope(center=p.site_id)

    def _visible(self, p: Principal, ref: CaseRef | None, case_id: int) -> CaseRef:
        if ref is not None:
            s = self.scope(p)
            if s.own_site is not None:
                ok = ref.site_id == s.own_site
            elif s.center is not None:
                ok = ref.route_site_id == s.center or s.center in ref.earlier_routes
            else:
                ok = True
            if ok:
                return ref
        raise CaseNotVisible(f"no case {case_id} for this caller")

    @staticmethod
    def _reader(p: Principal, kind: str | None = None) -> None:
        if not p.is_user or p.role is not Role.READER:
            raise NotPermitted("only readers read cases")
        if kind is not None and kind not in p.qualified:
            raise NotPermitted(f"not qualified to read {kind} cases")

    # -- lists -----------------------------------------------------------------------------------
    def queue(self, p: Principal, limit: int = 50) -> dict[str, Any]:
        """The reader's center's open cases in reading order (severity, deadline, arrival), of
        the kinds the reader is qualified for; an imaging study once it stopped arriving."""
        self._reader(p)
        settled = _now() - timedelta(seconds=self.study_quiet_s)
        with self.db.uow() as uow:
            items, total = uow.queue.items(CaseScope(center=p.site_id), open_only=True, routed_to=p.site_id,
                                           kinds=p.qualified, limit=limit, settled_before=settled)
        return {"items": items, "total": total}

    def cases(self, p: Principal, limit: int = 100, open_only: bool = False) -> dict[str, Any]:
        """What the caller may see, newest first (the clinic page, quality control)."""
        with self.db.uow() as uow:
            items, total = uow.queue.items(self.scope(p), open_only=open_only, limit=limit)
        return {"items": items, "total": total}

    # -- one case ----------------------------------------------------------------------------------
    def case(self, p: Principal, case_id: int, address: str | None = None) -> dict[str, Any]:
        """The case with its objects and analyses, alarms, review state, latest report and the
        patient's earlier cases; the view is audited."""
        with self.db.uow() as uow:
            ref = self._visible(p, uow.queue.ref(case_id), case_id)
            view = uow.cases.view(case_id)
            items, _ = uow.queue.items(CaseScope(own_site=ref.site_id), open_only=False, limit=1,
                                       case_ids=(case_id,))
            report = uow.reports.latest(case_id)
            previous = uow.queue.previous(case_id, ref.patient_id) if ref.patient_id else []
            audit(uow, p, "view", address, case_id)
            uow.commit()
        item = items[0]
        if ref.kind == "imaging":
            for obj in view["objects"]:
                if obj["analysis"] is None and _is_image(obj):
                    obj["analysis"] = self._imaging_facts(obj)
        view.update({k: item[k] for k in ("site_name", "patient", "alarms")})
        view["review"] = {k: item[k] for k in ("routed_to", "routed_to_name", "review_state", "claimed_by",
                                               "claim_until", "deadline_at")}
        view["report"] = report.as_json() if report else None
        view["previous"] = previous
        return view

    def _recording(self, p: Principal, case_id: int, object_id: int
                   ) -> tuple[Recording | _RangedRecord, dict[str, Any]]:
        """The ECG of one of the case's objects and its analysis. A WFDB record is read by range,
        window by window, so a 24-hour Holter (120 MB stored, 500 MB decoded) costs a window's
        bytes; anything else (a 10-s ECG in one file, a WFDB record that cannot be read by
        range) is decoded whole, and the last few decoded are kept, so paging decodes it once."""
        with self.db.uow() as uow:
            self._visible(p, uow.queue.ref(case_id), case_id)
            found = uow.queue.object_ref(case_id, object_id)
            result = uow.results.for_object(object_id) if found else None
        if found is None:
            raise CaseNotVisible(f"case {case_id} has no object {object_id}")
        with self._cache_lock:
            rec = self._ranged.get(object_id) or self._decoded.get(object_id)
        if rec is None:
            rec = self._ranged_record(*found) or load_recording(self.store, *found)
            kept, limit = ((self._ranged, _RANGED_KEPT) if isinstance(rec, _RangedRecord)
                           else (self._decoded, _DECODED_KEPT))
            with self._cache_lock:
                kept[object_id] = rec
                while len(kept) > limit:
                    kept.popitem(last=False)
        return rec, result or {}

    def _ranged_record(self, obj: ObjectRef, siblings: tuple[ObjectRef, ...]) -> _RangedRecord | None:
        """A WFDB header object as a record read by range, or None for any other object and for
        a record only the full reader reads. The header is read whole and checked against its
        sha256; the signal files' ranges cannot be (see ``ObjectStore.get_range``)."""
        if obj.media_type != MediaType.WFDB_HEADER:
            return None
        layout = wfdb_layout(self.store.get(obj.key, obj.sha256))
        if layout is None:
            return None
        return _RangedRecord(layout, {item.key.rsplit("/", 1)[-1]: partial(self.store.get_range, item.key)
                                      for item in siblings})

    def waveform(self, p: Principal, case_id: int, object_id: int, start_s: float = 0.0,
                 seconds: float = 10.0) -> dict[str, Any]:
        """One window of the ECG for the viewer, with the beats, rhythm episodes and alarms in it."""
        rec, result = self._recording(p, case_id, object_id)
        info = rec.layout if isinstance(rec, _RangedRecord) else rec
        seconds = min(max(seconds, 0.5), 60.0)
        start_s = min(max(start_s, 0.0), max(info.duration_s - seconds, 0.0))
        a, b = int(start_s * info.fs), min(int((start_s + seconds) * info.fs), info.n_samples)
        window = np.round(rec.window(a, b) if isinstance(rec, _RangedRecord) else rec.signals[a:b], 4)
        qrs, labels = result.get("qrs") or [], result.get("beats") or []
        beats = [{"t": round(q / info.fs, 4), "label": labels[i] if i < len(labels) else "Q"}
                 for i, q in enumerate(qrs) if a <= q < b]
        end_s = b / info.fs

        def overlapping(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [i for i in items if float(i.get("start_s") or 0) < end_s and float(i.get("end_s") or 0) >= start_s]

        return {"fs": info.fs, "leads": list(info.leads), "start_s": a / info.fs, "seconds": (b - a) / info.fs,
                "duration_s": info.duration_s, "units": "mV",
                "signals": {lead: window[:, i].tolist() for i, lead in enumerate(info.leads)}, "beats": beats,
                "episodes": [{"label": e["label"], "start_s": e["start_s"], "end_s": e["end_s"]}
                             for e in overlapping(result.get("rhythm") or [])],
                "alarms": [{k: x.get(k) for k in ("type", "severity", "start_s", "end_s", "text", "text_zh")}
                           for x in overlapping(result.get("alarms") or [])]}

    def overview(self, p: Principal, case_id: int, object_id: int, points: int = 1000,
                 lead: str | None = None) -> dict[str, Any]:
        """An envelope (min and max per bin) of one lead over the whole recording: the overview
        strip a long recording is paged from. A record read by range is passed over in chunks
        of bounded size, once: its envelope is kept."""
        rec, _ = self._recording(p, case_id, object_id)
        info = rec.layout if isinstance(rec, _RangedRecord) else rec
        index = info.leads.index(lead) if lead in info.leads else (info.leads.index("II") if "II" in info.leads else 0)
        n = info.n_samples
        bins = max(1, min(int(points), 5000, n))
        if isinstance(rec, _RangedRecord):
            key = (object_id, index, bins)
            with self._cache_lock:
                envelope = self._envelopes.get(key)
            if envelope is None:
                step = max(1, _OVERVIEW_CHUNK_VALUES // len(info.leads))
                envelope = _envelope(((a, rec.window(a, min(a + step, n), [index])[:, 0])
                                      for a in range(0, n, step)), n, bins)
                with self._cache_lock:
                    self._envelopes[key] = envelope
                    while len(self._envelopes) > _ENVELOPES_KEPT:
                        self._envelopes.popitem(last=False)
        else:
            envelope = _envelope([(0, rec.signals[:, index])], n, bins)
        lo, hi = envelope
        return {"duration_s": info.duration_s, "lead": info.leads[index], "min": lo.tolist(), "max": hi.tolist()}

    # -- images ----------------------------------------------------------------------------------------
    def preview(self, p: Principal, case_id: int, object_id: int, frame: int = 0,
                window: tuple[float, float] | None = None, size: int | None = None,
                fmt: Literal["png", "jpeg"] = "png") -> bytes:
        """Frame ``frame`` of one of the case's images rendered for the viewer: in the header's
        window, or in ``window`` (center, width in modality units: HU for CT) applied to the
        full-depth pixels, fitted into ``size`` pixels if given. An object with nothing to
        render (an ECG, a report, a broken image, a frame it does not have) is not found."""
        with self.db.uow() as uow:
            self._visible(p, uow.queue.ref(case_id), case_id)
            found = uow.queue.object_ref(case_id, object_id)
            rendered = found is not None and _rendered(uow.results.for_object(object_id))
        if found is None:
            raise CaseNotVisible(f"case {case_id} has no object {object_id}")
        if rendered and (frame, window, size, fmt) == (0, None, None, "png"):
            kept = self._kept(preview_keys(found[0].sha256)[0])
            if kept is not None:
                return kept
        frames = self._frames(found[0])
        render = imaging.render_jpeg if fmt == "jpeg" else imaging.render_png
        try:
            return render(frames, frame, window=window, size=size)
        except imaging.ImageError as exc:
            raise CaseNotVisible(f"object {object_id} has no image to show: {exc}") from exc

    def thumbnail(self, p: Principal, case_id: int, size: int = THUMBNAIL_SIDE,
                  fmt: Literal["png", "jpeg"] = "png") -> bytes:
        """The study thumbnail: the middle frame of the case's first image."""
        with self.db.uow() as uow:
            self._visible(p, uow.queue.ref(case_id), case_id)
            image = self._first_image(uow, case_id)
            rendered = image is not None and _rendered(uow.results.for_object(image.id))
        if image is None:
            raise CaseNotVisible(f"case {case_id} has no image")
        if rendered and (size, fmt) == (THUMBNAIL_SIDE, "png"):
            kept = self._kept(preview_keys(image.sha256)[1])
            if kept is not None:
                return kept
        try:
            return imaging.thumbnail(self._frames(image), size, fmt=fmt)
        except imaging.ImageError as exc:
            raise CaseNotVisible(f"the first image of case {case_id} cannot be shown: {exc}") from exc

    @staticmethod
    def _first_image(uow, case_id: int) -> ObjectRef | None:
        view = uow.cases.view(case_id)
        if view is None or view["kind"] != "imaging":
            return None
        first = next((o for o in view["objects"] if _is_image(o)), None)
        return None if first is None else ObjectRef(first["object_id"], case_id, first["key"], first["sha256"],
                                                     first["media_type"], None)

    def _kept(self, key: str) -> bytes | None:
        """A picture a worker rendered, or None when it cannot be read (then it is drawn now)."""
        try:
            return self.store.get(key)
        except ObjectStoreError:
            log.warning("rendered picture %s cannot be read; drawing it again", key)
            return None

    def _frames(self, obj: ObjectRef) -> imaging.Frames:
        """The parsed image (frames decode on demand); the last few are kept, so scrolling
        through a multi-frame object or changing its window reads and parses it once."""
        with self._cache_lock:
            frames = self._images.get(obj.id)
        if frames is None:
            try:
                frames = imaging.decode_frames(self.store.get(obj.key, obj.sha256))
            except imaging.ImageError as exc:
                raise CaseNotVisible(f"object {obj.id} has no image to show: {exc}") from exc
            with self._cache_lock:
                self._images[obj.id] = frames
                while len(self._images) > _IMAGES_KEPT:
                    self._images.popitem(last=False)
        return frames

    def _imaging_facts(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """An image's header summary and quality findings for the case view (``{"imaging": ...}``),
        computed on first sight and kept (an object's bytes never change); None while the
        object store cannot be read."""
        with self._cache_lock:
            facts = self._image_facts.get(obj["object_id"])
        if facts is None:
            try:
                data = self.store.get(obj["key"], obj["sha256"])
            except ObjectStoreError:
                log.warning("could not read image object %s for its header check", obj["object_id"], exc_info=True)
                return None
            facts = {"imaging": imaging.describe(data, obj.get("modality"))}
            with self._cache_lock:
                self._image_facts[obj["object_id"]] = facts
                while len(self._image_facts) > _IMAGE_FACTS_KEPT:
                    self._image_facts.popitem(last=False)
        return facts

    # -- claims --------------------------------------------------------------------------------------
    def claim(self, p: Principal, case_id: int, address: str | None = None) -> dict[str, Any]:
        """Take the case (a lease); a reader holds one case at a time."""
        now = _now()
        with self.db.uow() as uow:
            ref = self._visible(p, uow.queue.ref(case_id), case_id)
            self._reader(p, ref.kind)
            if ref.route_site_id != p.site_id:
                raise NotPermitted(f"case {case_id} is in another center's queue")
            if not uow.queue.claim(case_id, p.user_id, p.site_id, self.claim_lease_s, now):
                holder = uow.queue.items(CaseScope(), open_only=False, limit=1, case_ids=(case_id,))[0][0]
                raise ClaimConflict(f"case {case_id} is claimed by {holder['claimed_by'] or 'another reader'}",
                                    claimed_by=holder["claimed_by"])
            audit(uow, p, "claim", address, case_id)
            uow.commit()
            until = uow.queue.ref(case_id).claim_until
        return {"case_id": case_id, "claimed_by": p.username, "claim_until": until.isoformat() if until else None}

    def release(self, p: Principal, case_id: int, address: str | None = None) -> dict[str, Any]:
        with self.db.uow() as uow:
            self._visible(p, uow.queue.ref(case_id), case_id)
            self._reader(p)
            if not uow.queue.release(case_id, p.user_id):
                raise ClaimConflict(f"you do not hold case {case_id}")
            audit(uow, p, "release", address, case_id)
            uow.commit()
        return {"case_id": case_id, "claimed_by": None}

    def _held(self, uow, p: Principal, case_id: int) -> CaseRef:
        ref = self._visible(p, uow.queue.ref(case_id), case_id)
        self._reader(p, ref.kind)
        if not uow.queue.holds(case_id, p.user_id, _now()):
            raise ClaimConflict(f"claim case {case_id} first (it is not held by you)")
        return ref

    def consult(self, p: Principal, case_id: int, address: str | None = None) -> dict[str, Any]:
        """Ask the center above for a consultation: the case moves to its queue."""
        with self.db.uow() as uow:
            ref = self._held(uow, p, case_id)
            to = uow.queue.route_up(case_id, ref.route_site_id, "consult", _now())
            if to is None:
                raise NotPermitted("there is no center above this one")
            audit(uow, p, "consult", address, case_id, routed_to=to)
            uow.commit()
            name = uow.sites.name(to)
        return {"case_id": case_id, "routed_to": to, "routed_to_name": name}

    def escalate_overdue(self) -> list[int]:
        """Move up one center every case whose deadline passed unclaimed, and every open case of
        a kind its center has no active reader qualified for (the review sweeper): an imaging
        case in a county whose readers read ECGs only would otherwise wait out its deadline in
        a queue nobody there is shown. The conditional update makes concurrent sweepers take
        each case once."""
        moved = []
        with self.db.uow() as uow:
            for case_id, site_id in uow.queue.overdue(_now()):
                to = uow.queue.route_up(case_id, site_id, "deadline", _now(), only_if_overdue=True)
                if to is not None:
                    uow.audit.append(username="system", role="system", action="escalate", case_id=case_id,
                                     detail={"from": site_id, "to": to, "reason": "deadline"})
                    moved.append(case_id)
            for case_id, site_id in list(self._unreadable(uow)):
                to = uow.queue.route_up(case_id, site_id, "no_reader", _now())
                if to is not None:
                    uow.audit.append(username="system", role="system", action="escalate", case_id=case_id,
                                     detail={"from": site_id, "to": to, "reason": "no_qualified_reader"})
                    moved.append(case_id)
            uow.commit()
        if moved:
            log.info("moved %d case(s) up to the next center", len(moved))
        return moved

    @staticmethod
    def _unreadable(uow, limit: int = 100) -> Iterator[tuple[int, int]]:
        """(case, its center) of open cases in the queue of a center with a center above it but
        no active reader qualified for the case's kind."""
        readers = {(u.site_id, kind) for u in uow.users.list() if u.active and u.role is Role.READER
                   for kind in u.qualified}
        for site in uow.sites.list():
            if site.parent_id is None or site.level == SiteLevel.TOWNSHIP:
                continue
            for kind in QUALIFICATIONS:
                if (site.id, kind) not in readers:
                    items, _ = uow.queue.items(CaseScope(center=site.id), open_only=True, routed_to=site.id,
                                               kinds=(kind,), limit=limit)
                    yield from ((item["case_id"], site.id) for item in items)

    # -- reports -------------------------------------------------------------------------------------
    def report(self, p: Principal, case_id: int) -> dict[str, Any]:
        """The latest version, or (before any) a proposal pre-filled from the automated analysis."""
        reads = p.is_user and p.role is not Role.CLINIC
        with self.db.uow() as uow:
            self._visible(p, uow.queue.ref(case_id), case_id)
            latest = uow.reports.latest(case_id, signed_only=not reads)
            if latest is not None:
                by, at = uow.alarms.report_acknowledgement(case_id, latest.version)
                return {**latest.as_json(), "acknowledged_by": by, "acknowledged_at": utc_seconds(at) if at else None}
            if not reads:
                raise CaseNotVisible(f"case {case_id} has no signed report yet")
            result = uow.queue.first_analysis(case_id)
        return {"version": 0, "state": "proposed", "statements": catalogue.propose(result or {}), "findings": "",
                "conclusion": "", "measurements": _measurements(result), "author": None, "replaces": None,
                "reason": None, "signed_by": None, "signed_at": None, "sha256": None, "signature": None,
                "acknowledged_by": None, "acknowledged_at": None}

    def save_draft(self, p: Principal, case_id: int, statements: list[str], conclusion: str,
                   measurements: dict[str, Any] | None = None, address: str | None = None,
                   findings: str = "") -> dict[str, Any]:
        """Write the draft: an ECG report's coded statements and conclusion, an imaging report's
        free-text findings and impression (its ``conclusion``)."""
        _check_statements(statements)
        with self.db.uow() as uow:
            ref = self._held(uow, p, case_id)
            _check_kind(ref.kind, statements, findings)
            if measurements is None:
                measurements = _measurements(uow.queue.first_analysis(case_id))
            draft = uow.reports.save_draft(case_id, p.user_id, statements, findings, conclusion, measurements)
            uow.queue.renew(case_id, p.user_id, self.claim_lease_s, _now())
            audit(uow, p, "edit", address, case_id, version=draft.version, statements=list(statements))
            uow.commit()
        return draft.as_json()

    def sign(self, p: Principal, case_id: int, address: str | None = None) -> dict[str, Any]:
        """Seal the draft with the reader's key; the case is reported and its claim ends."""
        with self.db.uow() as uow:
            ref = self._held(uow, p, case_id)
            draft = uow.reports.latest(case_id)
            if draft is None:
                raise ReportImmutable("no draft to sign: save one first")
            if draft.state is ReportState.SIGNED:
                raise ReportImmutable(f"version {draft.version} is already signed; amend it instead")
            signed, pushed = self._seal(uow, p, ref, draft)
            audit(uow, p, "sign", address, case_id, version=draft.version, sha256=signed["sha256"])
            uow.commit()
        self._announce(pushed)
        self._file(case_id, draft.version)
        return signed

    def amend(self, p: Principal, case_id: int, statements: list[str], conclusion: str, reason: str,
              measurements: dict[str, Any] | None = None, address: str | None = None,
              findings: str = "") -> dict[str, Any]:
        """A signed correction: a new version pointing at the one it replaces."""
        _check_statements(statements)
        if not reason.strip():
            raise InvalidReport("an amendment needs a reason")
        with self.db.uow() as uow:
            ref = self._held(uow, p, case_id)
            _check_kind(ref.kind, statements, findings)
            last = uow.reports.latest(case_id)
            if last is None or last.state is not ReportState.SIGNED:
                raise ReportImmutable("nothing signed to amend: sign the draft instead")
            draft = uow.reports.add_amendment(case_id, p.user_id, last.version, statements, findings, conclusion,
                                              measurements if measurements is not None else last.measurements,
                                              reason.strip())
            signed, pushed = self._seal(uow, p, ref, draft)
            audit(uow, p, "amend", address, case_id, version=draft.version, replaces=last.version,
                        sha256=signed["sha256"])
            uow.commit()
        self._announce(pushed)
        self._file(case_id, draft.version)
        return signed

    def _seal(self, uow, p: Principal, ref: CaseRef, draft: ReportVersion
              ) -> tuple[dict[str, Any], AlarmEventsRecorded]:
        """Sign and seal the version, and write its ``report`` event and deliveries to the clinic
        in the same transaction; returns what the caller gets and what to announce after commit."""
        at = _now().replace(microsecond=0)
        content = report_content(case_id=ref.id, version=draft.version, replaces=draft.replaces, site_id=ref.site_id,
                                 patient_key=ref.patient_key, statements=list(draft.statements),
                                 findings=draft.findings, conclusion=draft.conclusion,
                                 measurements=draft.measurements, signed_by=p.username, signed_at=at)
        digest = report_digest(content)
        key = uow.users.key(p.user_id)
        if key is None:
            raise NotPermitted("this reader has no signing key")
        signature = self.vault.sign(key, digest)
        if not uow.reports.sign(draft.id, p.user_id, at, digest.hex(), key.algorithm, signature,
                                canonical_json(content).decode()):
            raise ReportImmutable(f"version {draft.version} was signed meanwhile")
        uow.queue.mark_reported(ref.id)
        events, deliveries = uow.alarms.record_report(ref.id, {
            "version": draft.version, "replaces": draft.replaces, "sha256": digest.hex(), "signed_by": p.username,
            "signed_at": content["signed_at"], "pdf": f"/api/v1/cases/{ref.id}/report.pdf"}, self.channels)
        return ({"version": draft.version, "sha256": digest.hex(), "signature": signature, "signed_by": p.username,
                 "signed_at": content["signed_at"], "algorithm": key.algorithm, "public_key": key.public_key},
                AlarmEventsRecorded(tuple(events), tuple(deliveries)))

    def _announce(self, recorded: AlarmEventsRecorded) -> None:
        """After the commit: the deliveries go out now and the streams wake (the push sweeper
        sends them should this process die first, or when there is no bus)."""
        if self.bus is not None and recorded.event_ids:
            self.bus.handle(recorded)

    def acknowledge_report(self, p: Principal, case_id: int, version: int | None = None,
                           address: str | None = None) -> dict[str, Any]:
        """The clinic (its people or its devices) confirms it received the latest signed version
        (``version``, when given, must be that one): who and when are recorded on the version,
        audited, and pushed as a ``report_ack`` event to the clinic and the centers above it.
        A second acknowledgement changes nothing."""
        if p.is_user and p.role is not Role.CLINIC:
            raise NotPermitted("only the clinic that sent the case acknowledges its report")
        by = p.username if p.is_user else f"device:{p.username}"
        with self.db.uow() as uow:
            self._visible(p, uow.queue.ref(case_id), case_id)
            signed = uow.reports.latest(case_id, signed_only=True)
            if signed is None:
                raise CaseNotVisible(f"case {case_id} has no signed report")
            if version is not None and version != signed.version:
                raise ReportImmutable(f"version {version} is not the latest: acknowledge signed version "
                                      f"{signed.version}")
            ack_by, ack_at, events, deliveries = uow.alarms.acknowledge_report(case_id, signed.version, by,
                                                                              self.channels)
            if events:
                audit(uow, p, "acknowledge", address, case_id, version=signed.version, sha256=signed.sha256)
                uow.commit()
        self._announce(AlarmEventsRecorded(tuple(events), tuple(deliveries)))
        return {"case_id": case_id, "version": signed.version, "sha256": signed.sha256, "acknowledged_by": ack_by,
                "acknowledged_at": utc_seconds(ack_at) if ack_at else None}

    # -- the PDF and its DICOM copy ----------------------------------------------------------------------
    def _file(self, case_id: int, version: int) -> None:
        """After the commit: the PDF into the object store, and then into the case's study."""
        if self.render_pdf(case_id, version) is not None:
            self.archive_report(case_id, version)

    def render_pdf(self, case_id: int, version: int) -> str | None:
        """Render a signed version to PDF and keep it in the object store (its key), or None
        when rendering failed (logged; the download renders again). An imaging report shows
        the study thumbnail."""
        from telediag.review.pdf import render_report_pdf

        try:
            with self.db.uow() as uow:
                doc, found = uow.queue.report_document(case_id, version)
                doc["document"]["findings"] = uow.reports.get(case_id, version).findings
                image = self._first_image(uow, case_id)
            recording = load_recording(self.store, *found) if found else None
            data = render_report_pdf(_document(doc), recording, self._pdf_image(image))
            key = f"reports/{case_id}/v{version}.pdf"
            self.store.put(key, data, "application/pdf")
            with self.db.uow() as uow:
                uow.reports.set_pdf(doc["report_id"], key)
                uow.commit()
            return key
        except Exception:
            log.exception("could not render the PDF of case %s version %s", case_id, version)
            return None

    def _pdf_image(self, image: ObjectRef | None) -> bytes | None:
        """The study thumbnail a report page shows, or None (the report is printed without it)."""
        if image is None:
            return None
        try:
            return imaging.thumbnail(self._frames(image), _PDF_IMAGE_PX)
        except (CaseNotVisible, imaging.ImageError) as exc:
            log.warning("the report of case %s is printed without its image: %s", image.case_id, exc)
            return None

    def archive_report(self, case_id: int, version: int) -> int | None:
        """Store a signed version's PDF into the case's study as an Encapsulated PDF instance
        through ``archive``, as the device that sent the study, so that it joins the same case
        (no analysis job: it is no ECG). Returns the object's id, or None when there is no
        archive, the case is no DICOM study (a WFDB record, a vendor ECG file) or storing
        failed (logged). Storing the same version again is a re-send: its UIDs and bytes are
        the same."""
        if self.archive is None:
            return None
        from telediag.review.pdf import report_title

        try:
            with self.db.uow() as uow:
                origin = uow.reports.study_origin(case_id)
                report = uow.reports.get(case_id, version)
                kind = uow.queue.ref(case_id).kind
            if origin is None or report is None or report.pdf_key is None or report.signed_at is None:
                log.debug("case %s version %s is not filed into a study", case_id, version)
                return None
            device, first = origin
            source = dcmread(io.BytesIO(self.store.get(first.key, first.sha256)), stop_before_pixels=True)
            data = encapsulated_report(source, self.store.get(report.pdf_key), case_id=case_id, version=version,
                                       signed_at=report.signed_at, title=report_title(kind), exam_kind=kind)
            return self.archive(device, data).object_id
        except Exception:
            log.exception("could not store the report of case %s version %s into its study", case_id, version)
            return None

    def report_pdf(self, p: Principal, case_id: int, address: str | None = None) -> bytes:
        """The latest signed version's PDF (rendered now if it was not yet); the download is audited."""
        with self.db.uow() as uow:
            self._visible(p, uow.queue.ref(case_id), case_id)
            signed = uow.reports.latest(case_id, signed_only=True)
            if signed is None:
                raise CaseNotVisible(f"case {case_id} has no signed report")
            audit(uow, p, "download", address, case_id, version=signed.version)
            uow.commit()
        key = signed.pdf_key or self.render_pdf(case_id, signed.version)
        if key is None:
            raise RuntimeError("the report PDF could not be rendered")
        return self.store.get(key)

    # -- audit ----------------------------------------------------------------------------------------
    def managed_sites(self, p: Principal) -> set[int] | None:
        """The sites an administrator manages: the network's all (None), a center's its subtree."""
        if not p.is_user or not p.role.is_admin:
            raise NotPermitted("administrators only")
        if p.role is Role.NETWORK_ADMIN:
            return None
        with self.db.uow() as uow:
            return uow.sites.subtree(p.site_id)

    def record_admin(self, p: Principal, action: str, address: str | None, **detail: Any) -> None:
        """Put an administrator's change (a user, a device, a key) in the trail."""
        with self.db.uow() as uow:
            audit(uow, p, action, address, **detail)
            uow.commit()

    def audit_entries(self, p: Principal, case_id: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Administrators read the trail: a center's of the cases routed to it, the network's all."""
        if not p.is_user or not p.role.is_admin:
            raise NotPermitted("only administrators read the audit trail")
        with self.db.uow() as uow:
            if p.role is Role.CENTER_ADMIN and p.site_level != SiteLevel.PREFECTURE.value:
                if case_id is None:
                    raise NotPermitted("a center's administrator reads the trail one case at a time (case_id)")
                self._visible(p, uow.queue.ref(case_id), case_id)
            return uow.audit.entries(case_id, limit)


def verify_audit(db: Database) -> AuditBreak | None:
    """Recompute the chain; the first entry whose link or hash does not hold, or None."""
    from telediag.domain import AUDIT_GENESIS

    prev, expected_id = AUDIT_GENESIS, 1
    with db.uow() as uow:
        for content, prev_hash, stored in uow.audit.chain():
            if content["id"] != expected_id:
                return AuditBreak(expected_id, f"entry {expected_id} is missing")
            if prev_hash != prev:
                return AuditBreak(content["id"], "its link to the previous entry does not match")
            if audit_hash(prev, content) != stored:
                return AuditBreak(content["id"], "its content does not match its hash")
            prev, expected_id = stored, expected_id + 1
        last_id, last_hash = uow.audit.head()
    if last_id != expected_id - 1 or last_hash != prev:
        return AuditBreak(expected_id, "entries after this one were removed")
    return None


def _check_statements(codes: list[str]) -> None:
    unknown = catalogue.unknown_codes(codes)
    if unknown:
        raise InvalidReport(f"unknown statement code(s): {', '.join(unknown)}")


def _check_kind(kind: str, statements: list[str], findings: str) -> None:
    """The coded statements are ECG statements; an image is described in free text."""
    if kind == "imaging" and statements:
        raise InvalidReport("an imaging report has no coded statements: write findings and an impression")
    if kind != "imaging" and findings.strip():
        raise InvalidReport("an ECG report has no free-text findings: use statements and the conclusion")


def _envelope(chunks: Iterable[tuple[int, np.ndarray]], n: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max (rounded to 3 decimals) of each of ``bins`` equal bins of a signal of ``n``
    samples given as consecutive (first sample, samples) chunks, so a long record needs only
    a chunk in memory at a time; NaN in a bin makes its min and max NaN, as for the whole."""
    edges = np.linspace(0, n, bins + 1).astype(int)
    lo, hi = np.full(bins, np.inf), np.full(bins, -np.inf)
    for at, x in chunks:
        first = int(np.searchsorted(edges, at, side="right")) - 1
        last = int(np.searchsorted(edges, at + x.size - 1, side="right"))
        starts = np.maximum(edges[first:last], at) - at
        lo[first:last] = np.minimum(lo[first:last], np.minimum.reduceat(x, starts))
        hi[first:last] = np.maximum(hi[first:last], np.maximum.reduceat(x, starts))
    return np.round(lo, 3), np.round(hi, 3)


#: Pixels of the study thumbnail a report page prints (about 130 dpi over its 100 mm).
_PDF_IMAGE_PX = 512


def _rendered(result: dict[str, Any] | None) -> bool:
    """Whether an image's worker kept its preview and thumbnail (see ``analysis.render_previews``)."""
    return bool(result and result.get("preview"))


def _is_image(obj: dict[str, Any]) -> bool:
    """An object of an imaging case that is an image (not the report filed back into the study)."""
    return (obj["media_type"] == MediaType.DICOM and obj.get("sop_class_uid") != ENCAPSULATED_PDF_STORAGE
            and (obj.get("modality") or "").upper() not in _NOT_IMAGES)


#: Measurement keys a report carries, from the analysis result.
_REPORT_MEASUREMENTS = ("heart_rate_bpm",) + tuple(k for k in MEASUREMENT_KEYS if k != "heart_rate_bpm")


def _measurements(result: dict[str, Any] | None) -> dict[str, Any]:
    """The automated measurements a report starts from (rate for every ECG, intervals for 12-lead)."""
    if not result:
        return {}
    ours = dict(result.get("measurements") or {})
    values = {"heart_rate_bpm": result.get("heart_rate_bpm"), **ours}
    return {k: values[k] for k in _REPORT_MEASUREMENTS if values.get(k) is not None}


def _document(doc: dict[str, Any]):
    from telediag.review.pdf import ReportDocument

    return ReportDocument(**{**doc["document"], "statements": tuple(catalogue.statement(c)
                                                                   for c in doc["document"]["statements"])})
