"""The model registry in the S3 object store: immutable versions, an atomic ``production`` pointer, decisions.

Layout under ``s3://<bucket>/<prefix>/``::

    models/<version>/model/...       the model directory's files (weights, config, labels, metrics.json, ...)
    models/<version>/index/...       the saved FAISS index directory's files
    models/<version>/metrics.json    the evaluation metrics the promotion was decided on
    models/<version>/MANIFEST.json   every file above with its size and sha256, written LAST
    production.json                  {"version", "history" (previous versions, newest first), "switched_at",
                                     "decision_id"}: the one object that says which model serves
    decisions/<decision id>.json     every gate decision with its reasons (id = UTC time + version)

A version id is ``<UTC time>-<content hash>`` (``20250101T020000000000Z-3f2a9c1b0d4e``): the hash covers every
file's path and sha256, so publishing the same content again finds the existing complete version and uploads nothing.
Crash safety comes from ordering, not from transactions: a version counts only once its MANIFEST exists and every
file it lists is present with the listed size, so a publish cut off by a dead store leaves an incomplete version
that every reader ignores and the next publish of the same content overwrites. The pointer is switched with a
single PUT (S3 PUTs are atomic) only after the target version was re-listed and verified complete, so it always
names a complete version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from landmark.errors import LandmarkError
from landmark.platform.storage import ObjectNotFoundError, ObjectStore

MANIFEST = "MANIFEST.json"
METRICS = "metrics.json"
POINTER = "production.json"
MANIFEST_FORMAT = "landmark-registry-version/1"
MODEL_PART = "model"
INDEX_PART = "index"
# Files that identify a model / index directory (landmark.models.model_dir, landmark.retrieval.index), checked on publish.
MODEL_REQUIRED = ("config.json", "weights.pt")
INDEX_REQUIRED = ("meta.json",)
HASH_LENGTH = 12
_VERSION = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{12}$")
_CHUNK = 1 << 20

UploadHook = Callable[[str], None]


class RegistryError(LandmarkError, ValueError):
    """A registry operation that cannot be done: unknown or incomplete version, no rollback target, bad files."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: path relative to the version root (posix), size in bytes, sha256 hex."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class VersionInfo:
    """What a listing says about one version."""

    version: str
    complete: bool
    files: int
    bytes: int


@dataclass(frozen=True)
class ProductionPointer:
    """The ``production`` pointer: the serving version and the versions before it (newest first)."""

    version: str
    history: tuple[str, ...] = ()
    switched_at: str = ""
    decision_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "history": list(self.history),
            "switched_at": self.switched_at,
            "decision_id": self.decision_id,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ProductionPointer:
        """Parse the pointer object; raises :class:`RegistryError` naming ``source`` when it is malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise RegistryError(f"{source} is not a production pointer (needs a 'version' string): {data!r}")
        history = data.get("history", [])
        if not isinstance(history, list) or not all(isinstance(v, str) for v in history):
            raise RegistryError(f"{source}: 'history' must be a list of version ids, got {history!r}")
        decision = data.get("decision_id")
        return cls(
            version=data["version"],
            history=tuple(history),
            switched_at=str(data.get("switched_at", "")),
            decision_id=decision if isinstance(decision, str) else None,
        )


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers


def utc_now() -> datetime:
    """The current time in UTC (one place, so callers can pass a fixed time instead)."""
    return datetime.now(UTC)


def check_version_id(version: str) -> str:
    """Return ``version`` when it looks like ``20250101T020000000000Z-3f2a9c1b0d4e``, else raise RegistryError."""
    if not _VERSION.match(version):
        raise RegistryError(
            f"not a registry version id (expected like 20250101T020000000000Z-3f2a9c1b0d4e): {version!r}"
        )
    return version


def content_hash(entries: Iterable[FileEntry]) -> str:
    """Short sha256 over the sorted (path, sha256) pairs: equal content gives an equal hash."""
    canonical = json.dumps(sorted((e.path, e.sha256) for e in entries), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def version_id(entries: Iterable[FileEntry], when: datetime) -> str:
    """``<UTC time, microseconds>-<content hash>``; ids sort by publication time."""
    return f"{when.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{content_hash(entries)}"


def decision_id(version: str, when: datetime) -> str:
    """``<UTC time with microseconds>-<version>``: decisions sort by time."""
    return f"{when.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{version}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_relative(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"unsafe path in a registry manifest: {path!r}")
    return path


def directory_entries(root: Path, part: str, required: Iterable[str]) -> dict[str, Path]:
    """Every regular file under ``root`` keyed by ``<part>/<relative posix path>``.

    Raises:
        RegistryError: ``root`` is not a directory, or lacks one of the ``required`` files.
    """
    root = Path(root)
    if not root.is_dir():
        raise RegistryError(f"{part} directory not found: {root}")
    missing = [name for name in required if not (root / name).is_file()]
    if missing:
        raise RegistryError(f"{root} is not a complete {part} directory: missing {', '.join(missing)}")
    return {
        f"{part}/{path.relative_to(root).as_posix()}": path
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def manifest_document(version: str, entries: Iterable[FileEntry], created_at: datetime) -> dict[str, Any]:
    """The MANIFEST.json content of a version."""
    items = sorted(entries, key=lambda e: e.path)
    return {
        "format": MANIFEST_FORMAT,
        "version": version,
        "content_hash": content_hash(items),
        "created_at": created_at.astimezone(UTC).isoformat(),
        "total_bytes": sum(e.size for e in items),
        "files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in items],
    }


def parse_manifest(data: bytes, source: str) -> list[FileEntry]:
    """The file entries of a MANIFEST.json; raises RegistryError naming ``source`` when it is malformed."""
    try:
        document = json.loads(data)
        if document.get("format") != MANIFEST_FORMAT:
            raise RegistryError(f"{source}: unknown manifest format {document.get('format')!r}")
        return [
            FileEntry(_safe_relative(str(f["path"])), int(f["size"]), str(f["sha256"]))
            for f in document["files"]
        ]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError(f"{source} is not a valid registry manifest: {exc}") from exc


@dataclass(frozen=True)
class PreparedVersion:
    """A candidate's local files, hashed: what :meth:`Registry.publish_prepared` uploads.

    Attributes:
        files: version-relative path (``model/...``, ``index/...``) -> local file.
        metrics_bytes: the metrics.json content.
        entries: size and sha256 of every file, metrics.json included.
        digest: the content hash (the suffix of the version id).
    """

    files: dict[str, Path]
    metrics_bytes: bytes
    entries: list[FileEntry]
    digest: str


def prepare_version(model_dir: Path, index_dir: Path, metrics: Mapping[str, Any]) -> PreparedVersion:
    """Collect and hash a candidate's files (no upload).

    Raises:
        RegistryError: a missing directory, or one lacking the files that identify a model / an index.
    """
    files = {
        **directory_entries(model_dir, MODEL_PART, MODEL_REQUIRED),
        **directory_entries(index_dir, INDEX_PART, INDEX_REQUIRED),
    }
    metrics_bytes = _dumps(metrics)
    entries = [FileEntry(rel, path.stat().st_size, sha256_file(path)) for rel, path in files.items()]
    entries.append(FileEntry(METRICS, len(metrics_bytes), sha256_bytes(metrics_bytes)))
    return PreparedVersion(files, metrics_bytes, entries, content_hash(entries))


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------------------------------------------------------
# The registry


@dataclass
class Registry:
    """The model registry under ``prefix`` of one bucket.

    Args:
        store: the object store (its errors, e.g. an unreachable endpoint, propagate as StorageError).
        prefix: key prefix (``promote.prefix``), without leading or trailing slash.
        now: clock (UTC); tests pass a fixed one.
    """

    store: ObjectStore
    prefix: str = "registry"
    now: Callable[[], datetime] = field(default=utc_now, repr=False)

    # --- keys --------------------------------------------------------------------------------------------------
    def version_prefix(self, version: str) -> str:
        return f"{self.prefix}/models/{check_version_id(version)}/"

    @property
    def pointer_key(self) -> str:
        return f"{self.prefix}/{POINTER}"

    def uri(self, version: str) -> str:
        """``s3://bucket/<prefix>/models/<version>/``."""
        return self.store.uri(self.version_prefix(version))

    # --- versions ----------------------------------------------------------------------------------------------
    def _listing(self) -> dict[str, dict[str, int]]:
        """One listing of every version: version -> {path in the version: size}, versions in id order."""
        listed: dict[str, dict[str, int]] = {}
        root = f"{self.prefix}/models/"
        for obj in self.store.list(root):
            version, _, rest = obj.key[len(root) :].partition("/")
            if _VERSION.match(version) and rest:
                listed.setdefault(version, {})[rest] = obj.size
        return dict(sorted(listed.items()))

    def _infos(self, listed: Mapping[str, Mapping[str, int]]) -> list[VersionInfo]:
        return [
            VersionInfo(
                version,
                MANIFEST in sizes and self._manifest_matches(version, sizes),
                len(sizes),
                sum(sizes.values()),
            )
            for version, sizes in listed.items()
        ]

    def list_versions(self) -> list[VersionInfo]:
        """Every version under the prefix (complete or not), oldest first; completeness from one listing."""
        return self._infos(self._listing())

    def manifest(self, version: str) -> list[FileEntry]:
        """The file entries of a version's MANIFEST.

        Raises:
            ObjectNotFoundError: the version has no MANIFEST (unknown or incomplete).
        """
        key = self.version_prefix(version) + MANIFEST
        return parse_manifest(self.store.get_bytes(key), self.store.uri(key))

    def _manifest_matches(self, version: str, sizes: Mapping[str, int]) -> bool:
        try:
            entries = self.manifest(version)
        except (ObjectNotFoundError, RegistryError):
            return False
        return all(sizes.get(e.path) == e.size for e in entries)

    def is_complete(self, version: str) -> bool:
        """True when the MANIFEST exists and a fresh listing shows every listed file with its size."""
        prefix = self.version_prefix(version)
        sizes = {obj.key[len(prefix) :]: obj.size for obj in self.store.list(prefix)}
        return MANIFEST in sizes and self._manifest_matches(version, sizes)

    def require_complete(self, version: str) -> None:
        """Raise RegistryError unless :meth:`is_complete`."""
        if not self.is_complete(version):
            raise RegistryError(f"registry version {version} at {self.uri(version)} is missing or incomplete")

    def find_by_hash(self, digest: str) -> list[VersionInfo]:
        """Versions whose id ends with the content hash ``digest``."""
        listed = self._listing()
        return self._infos({v: sizes for v, sizes in listed.items() if v.endswith(f"-{digest}")})

    def publish(
        self,
        model_dir: Path,
        index_dir: Path,
        metrics: Mapping[str, Any],
        *,
        version: str | None = None,
        on_uploaded: UploadHook | None = None,
    ) -> str:
        """Upload a model directory, its index directory and metrics as a new immutable version.

        Files go up one by one; the MANIFEST (sizes + sha256) goes last and makes the version complete.
        Idempotent: when a complete version with the same content exists, nothing is uploaded and its id is
        returned; an incomplete one with the same content (an earlier publish cut off) is overwritten.

        Args:
            model_dir: the model directory (needs config.json and weights.pt).
            index_dir: the saved index directory (needs meta.json).
            metrics: the evaluation metrics, stored as the version's metrics.json.
            version: the id to use (default: ``<now>-<content hash>``); must end with the content hash.
            on_uploaded: called with each uploaded key, MANIFEST included (progress, or a test stopping the store).

        Returns:
            The complete version's id.

        Raises:
            RegistryError: a missing or incomplete input directory, or a bad version id.
            StorageError: the store failed; the version stays incomplete and is ignored by readers.
        """
        prepared = prepare_version(model_dir, index_dir, metrics)
        return self.publish_prepared(prepared, version=version, on_uploaded=on_uploaded)

    def version_for(self, prepared: PreparedVersion) -> str:
        """The id a publish of ``prepared`` uses: an existing complete version with the same content, else an
        incomplete one with the same content (a cut-off publish, to be overwritten), else a new id."""
        same = self.find_by_hash(prepared.digest)
        done = [v for v in same if v.complete]
        if done:
            return done[-1].version
        return same[-1].version if same else version_id(prepared.entries, self.now())

    def publish_prepared(
        self, prepared: PreparedVersion, *, version: str | None = None, on_uploaded: UploadHook | None = None
    ) -> str:
        """:meth:`publish` for files already hashed by :func:`prepare_version`."""
        if version is None:
            version = self.version_for(prepared)
        elif not check_version_id(version).endswith(f"-{prepared.digest}"):
            raise RegistryError(f"version {version} does not end with the content hash {prepared.digest}")
        if self.is_complete(version):
            return version
        self.store.ensure_bucket()
        base = self.version_prefix(version)
        for rel, path in prepared.files.items():
            self._upload(base + rel, path.read_bytes(), on_uploaded)
        self._upload(base + METRICS, prepared.metrics_bytes, on_uploaded, "application/json")
        manifest = _dumps(manifest_document(version, prepared.entries, self.now()))
        self._upload(base + MANIFEST, manifest, on_uploaded, "application/json")
        return version

    def _upload(
        self, key: str, data: bytes, hook: UploadHook | None, content_type: str = "application/octet-stream"
    ) -> None:
        self.store.put_bytes(key, data, content_type)
        if hook is not None:
            hook(key)

    def metrics(self, version: str) -> dict[str, Any]:
        """The evaluation metrics stored with a complete version."""
        self.require_complete(version)
        key = self.version_prefix(version) + METRICS
        data = json.loads(self.store.get_bytes(key))
        if not isinstance(data, dict):
            raise RegistryError(f"{self.store.uri(key)} is not a JSON object")
        return data

    def download(self, version: str, dest: Path) -> Path:
        """Download a complete version into ``dest`` (``model/``, ``index/``, metrics.json, MANIFEST.json).

        Every file is checked against the MANIFEST's size and sha256; files land in a temporary sibling
        directory renamed into place at the end (replacing an older ``dest``), so ``dest`` is never half written.

        Raises:
            RegistryError: the version is incomplete, or a file's size or checksum differs from the MANIFEST.
        """
        from landmark.data.atomic import atomic_directory

        self.require_complete(version)
        base = self.version_prefix(version)
        manifest_bytes = self.store.get_bytes(base + MANIFEST)
        entries = parse_manifest(manifest_bytes, self.store.uri(base + MANIFEST))
        with atomic_directory(dest) as tmp:
            for entry in entries:
                data = self.store.get_bytes(base + entry.path)
                if len(data) != entry.size or sha256_bytes(data) != entry.sha256:
                    raise RegistryError(
                        f"{self.store.uri(base + entry.path)}: size {len(data)} / sha256 {sha256_bytes(data)[:12]} "
                        f"differ from the manifest ({entry.size} / {entry.sha256[:12]}): refusing a corrupt download"
                    )
                target = tmp / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (tmp / MANIFEST).write_bytes(manifest_bytes)
        return Path(dest)

    # --- the production pointer --------------------------------------------------------------------------------
    def production(self) -> ProductionPointer | None:
        """The current pointer, or None when nothing was ever promoted."""
        try:
            data = self.store.get_bytes(self.pointer_key)
        except ObjectNotFoundError:
            return None
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.store.uri(self.pointer_key)} is not valid JSON: {exc}") from exc
        return ProductionPointer.from_dict(parsed, self.store.uri(self.pointer_key))

    def switch(
        self, version: str, *, decision: str | None = None, keep_history: int = 0
    ) -> ProductionPointer:
        """Point ``production`` at a complete version with one PUT; the previous version joins the history.

        Args:
            version: the target version (re-listed and verified complete first).
            decision: the id of the decision that caused the switch.
            keep_history: how many previous versions the pointer remembers for rollback (0 = all).

        Returns:
            The new pointer (the current one, unchanged, when ``version`` already serves).
        """
        self.require_complete(version)
        current = self.production()
        if current is not None and current.version == version:
            return current
        history = () if current is None else (current.version, *current.history)
        history = tuple(v for v in history if v != version)
        if keep_history:
            history = history[:keep_history]
        return self._put_pointer(ProductionPointer(version, history, self.now().isoformat(), decision))

    def rollback(self, *, decision: str | None = None) -> ProductionPointer:
        """Point ``production`` back at the previous version of its history (which is then dropped from it).

        Raises:
            RegistryError: nothing is in production, the history is empty, or the previous version is incomplete.
        """
        current = self.production()
        if current is None:
            raise RegistryError(
                f"nothing to roll back: no production model under {self.store.uri(self.prefix)}/"
            )
        if not current.history:
            raise RegistryError(
                f"cannot roll back: production version {current.version} has no previous version in its history"
            )
        target = current.history[0]
        self.require_complete(target)
        return self._put_pointer(
            ProductionPointer(target, current.history[1:], self.now().isoformat(), decision)
        )

    def _put_pointer(self, pointer: ProductionPointer) -> ProductionPointer:
        self.store.put_bytes(self.pointer_key, _dumps(pointer.to_dict()), "application/json")
        return pointer

    # --- the decision log --------------------------------------------------------------------------------------
    def record_decision(
        self, record: Mapping[str, Any], version: str, *, when: datetime | None = None
    ) -> str:
        """Store one decision (its reasons, metrics, inputs) under ``decisions/<id>.json``; returns the id."""
        ident = decision_id(version, when or self.now())
        self.store.put_bytes(
            f"{self.prefix}/decisions/{ident}.json", _dumps({"id": ident, **record}), "application/json"
        )
        return ident

    def decisions(self, last: int = 10) -> list[dict[str, Any]]:
        """The ``last`` recorded decisions, oldest first."""
        keys = [obj.key for obj in self.store.list(f"{self.prefix}/decisions/") if obj.key.endswith(".json")]
        return [json.loads(self.store.get_bytes(key)) for key in keys[-last:]] if last > 0 else []

    # --- retention ---------------------------------------------------------------------------------------------
    def prune(self, keep: int) -> list[str]:
        """Delete complete versions beyond retention; returns the deleted ids.

        Kept: production, its rollback history, and the ``keep`` newest complete versions (``keep`` 0 keeps all).
        Incomplete versions are left alone (one may be a publish in progress). A deleted version loses its
        MANIFEST first, so a prune cut off half way leaves an incomplete version, never a corrupt complete one.
        """
        if keep <= 0:
            return []
        pointer = self.production()
        protected = set() if pointer is None else {pointer.version, *pointer.history}
        complete = [v.version for v in self.list_versions() if v.complete]
        protected.update(complete[-keep:])
        deleted = []
        for version in complete:
            if version in protected:
                continue
            base = self.version_prefix(version)
            _delete_object(self.store, base + MANIFEST)
            for obj in self.store.list(base):
                _delete_object(self.store, obj.key)
            deleted.append(version)
        return deleted


def _delete_object(store: ObjectStore, key: str) -> None:
    """Delete one object. ObjectStore has no delete method yet, so this goes through its client and error
    mapping; it belongs in landmark.platform.storage (TODO: move it there as ``ObjectStore.delete``)."""
    store._call(f"delete {store.uri(key)}", store._client.remove_object, store.bucket, key)
