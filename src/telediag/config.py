"""Settings, read once from environment variables.

Every default gives the embedded mode (SQLite, a local folder as object store,
in-process workers) under one data directory, so a newcomer needs no server.
Production sets the URLs to PostgreSQL, a broker and S3/MinIO.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from telediag.domain.review import Deadlines


def _env(name: str) -> str | None:
    value = os.environ.get(f"TELEDIAG_{name}")
    return value if value not in (None, "") else None


@dataclass(frozen=True)
class Settings:
    """Where telediag keeps its state and how its parts reach each other."""

    data_dir: Path = field(default_factory=lambda: Path("telediag-data"))
    #: SQLAlchemy URL; None means SQLite inside ``data_dir``.
    database_url: str | None = None
    #: ``file://`` (local folder inside ``data_dir``) or ``s3://ACCESS:SECRET@HOST:PORT/BUCKET``.
    object_store_url: str | None = None
    #: ``stub://`` (in-process), ``redis://...`` or ``amqp://...``.
    broker_url: str = "stub://"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    ae_title: str = "TELEDIAG"
    #: Largest accepted HTTP upload body, in bytes.
    max_upload_bytes: int = 64 * 1024 * 1024
    #: Largest accepted DICOM object over the network, in bytes.
    max_dicom_bytes: int = 512 * 1024 * 1024
    #: Attempts before an analysis job goes to the dead-letter state.
    job_max_retries: int = 3
    #: Jobs queued but unfinished for this long are re-published (a broker that lost them
    #: without saying; a Redis restart or emptied queue is noticed within a sweep).
    job_stale_after_s: float = 600.0
    #: How long a worker's claim on a running job holds without renewal (renewed every third):
    #: a dead worker's jobs are published again within about this plus a sweep.
    job_lease_s: float = 20.0
    #: How often the sweeper looks for jobs to (re)publish.
    sweep_interval_s: float = 5.0
    #: A ``pending`` job younger than this is left to the process that committed it.
    job_pending_grace_s: float = 5.0
    #: Embedded mode: analysis processes (at a lower OS priority than the receiving process).
    analysis_processes: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) - 1))
    #: Embedded mode: a job starts once nothing was received for this long (a cart's backlog
    #: arrives back to back; analysing between its objects would slow the sender) ...
    analysis_quiet_s: float = 0.25
    #: ... or once it has waited this long, so no alarm waits longer behind a long burst.
    analysis_defer_max_s: float = 30.0
    #: Embedded mode (SQLite and a local folder): a received object is made durable by one
    #: flush of the ingest journal, its file and rows a checkpoint at a time (see
    #: ``telediag.store.journal``); false: each object waits for its own fsyncs.
    ingest_journal: bool = True
    #: How often the ingest journal's checkpoint runs (what a crash leaves to replay at start).
    journal_checkpoint_s: float = 1.0
    #: ``mqtt://HOST:PORT``: alarms are also published there (QoS 1); None: no MQTT.
    mqtt_url: str | None = None
    #: An unacknowledged critical alarm escalates to the center above the clinic after this ...
    escalate_county_s: float = 300.0
    #: ... and to the one above that (the prefecture, for a township) after this.
    escalate_prefecture_s: float = 900.0
    #: How often the push sweeper re-sends orphaned deliveries and checks escalations.
    push_sweep_interval_s: float = 1.0
    #: A due delivery untouched for this long is taken by the push sweeper (its message was lost).
    push_pending_grace_s: float = 5.0
    #: First retry of a failed push after this; each further one waits twice as long (to 10 min).
    push_retry_base_s: float = 2.0
    #: Attempts of one push before it is marked ``failed`` (about 37 min of retries at the defaults).
    push_max_attempts: int = 12
    #: A case unclaimed this long after it arrived (or after its priority rose) moves up to the
    #: next center: critical, urgent, routine.
    deadline_critical_s: float = 600.0
    deadline_urgent_s: float = 1800.0
    deadline_routine_s: float = 86400.0
    #: A reader's claim on a case holds this long; every draft save and re-claim renews it.
    claim_lease_s: float = 900.0
    #: An imaging study joins the readers' queue once no instance of it arrived for this long
    #: (a modality sends a study over several associations and minutes).
    study_quiet_s: float = 60.0
    #: How often the review sweeper moves cases whose deadline passed unclaimed.
    review_sweep_interval_s: float = 5.0
    #: A login (bearer token or page session) lasts this long.
    session_ttl_s: int = 8 * 3600
    #: Failed logins in a row that lock an account, and for how long.
    login_max_failures: int = 5
    login_lockout_s: int = 900
    #: Login attempts one address may make per minute (answered 429 beyond).
    login_rate_per_minute: int = 10
    #: Encrypts the readers' signing keys; embedded: generated once into ``data_dir/secret.key``.
    #: Every process of a distributed deployment must be given the same one.
    secret_key: str | None = None
    #: New readers' signing keys: ``ed25519``, or ``sm2`` (GB/T 32918, with SM3) where national
    #: cryptography is required. Each key keeps its own, so switching leaves old reports verifiable.
    signature_algorithm: str = "ed25519"
    #: The session cookie is sent only over HTTPS (browsers treat http://localhost as secure too).
    #: Set false only for a plain-HTTP deployment behind a network you trust.
    secure_cookies: bool = True

    @property
    def deadlines(self) -> Deadlines:
        return Deadlines(self.deadline_critical_s, self.deadline_urgent_s, self.deadline_routine_s)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'telediag.sqlite3').resolve()}"

    @property
    def journaled_ingest(self) -> bool:
        """Whether ingest uses the journal: asked for, and both the database and the objects
        on this machine's disk (elsewhere, a commit and an S3 put are each one round trip)."""
        return (self.ingest_journal and self.effective_database_url.startswith("sqlite")
                and self.effective_object_store_url.startswith("file:"))

    @property
    def effective_object_store_url(self) -> str:
        if self.object_store_url:
            return self.object_store_url
        return f"file://{(self.data_dir / 'objects').resolve()}"

    def secret(self) -> bytes:
        """The server's secret: ``secret_key``, else one generated once into ``data_dir``
        (readable by the owner only), so the embedded mode needs no setting."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process of this data directory made it a moment ago
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()

    def with_data_dir(self, data_dir: str | os.PathLike | None) -> "Settings":
        return self if data_dir is None else replace(self, data_dir=Path(data_dir))

    @classmethod
    def from_env(cls) -> "Settings":
        """Build settings from ``TELEDIAG_<FIELD NAME>`` variables (unset or empty ones keep
        their default), each converted to the type of its field's default."""
        values = {}
        for f in fields(cls):
            raw = _env(f.name.upper())
            if raw is not None:
                default = f.default_factory() if f.default is MISSING else f.default
                if isinstance(default, bool):  # bool("false") would be True
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                else:
                    values[f.name] = raw if default is None else type(default)(raw)
        return cls(**values)
