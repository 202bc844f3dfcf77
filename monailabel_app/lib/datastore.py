"""Datastores whose ``final`` label is the study's report (a JSON label file beside the image).

MONAI Label treats a study with a ``final`` label as labelled; storing the user's corrected
report there keeps its labelled / unlabelled bookkeeping, its strategies and its datalist for
training unchanged. A report label is JSON ``{"report": "...", "findings": [...]}`` (plain
text is accepted and wrapped). Saving validates the report, keeps the previous version under
``labels/<tag>/.history/<id>/<n>.json``, writes the new file atomically (temp file + fsync +
rename) and updates ``datastore_v2.json`` under the datastore's file lock from a fresh read,
so that the server and its training / scoring subprocesses do not lose each other's updates.

- :class:`ReportLocalDatastore`: a local folder of studies (PNG, JPEG, DICOM, NIfTI, NRRD).
- :class:`ReportDICOMwebDatastore`: series of a DICOMweb server (Orthanc, dcm4chee, ...); a
  report is also written back as a DICOM SR (:mod:`medkit.core.sr`) that references the series.

No report text and no DICOM patient attribute is ever logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.errors import bad_request, check_id, check_tag, not_found
from lib.failpoints import failpoint
from lib.model_store import atomic_write_text
from medkit.core.files import atomic_write

logger = logging.getLogger(__name__)

MAX_REPORT_BYTES = 256 * 1024
REPORT_SUFFIXES = (".json", ".txt")
IMAGE_EXTENSIONS = ("*.png", "*.jpg", "*.jpeg", "*.dcm", "*.nii.gz", "*.nii", "*.nrrd")
# "borderline": the infer result's findings table (medkit.cxr.consistency), accepted as sent back
FINDING_STATUSES = {"positive", "borderline", "negative", "uncertain", "not_mentioned"}


def _no_constant(name: str):
    raise bad_request(f"report label holds {name}, which is not JSON (RFC 8259): use finite numbers")


def parse_report(path: str | Path) -> dict:
    """Validate an uploaded report label; returns ``{"report", ["findings"], ["knowledge"]}``."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise bad_request("report label is empty")
    if len(raw) > MAX_REPORT_BYTES:
        raise bad_request(f"report label is {len(raw)} bytes; at most {MAX_REPORT_BYTES} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("report label is not UTF-8 text: upload JSON {\"report\": \"...\"} or plain text") from None
    if path.name.endswith(".json") or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise bad_request(f"report label is not valid JSON ({e})") from None
        except RecursionError:
            raise bad_request("report label JSON is nested too deeply") from None
    else:
        obj = {"report": text}
    if not isinstance(obj, dict) or not isinstance(obj.get("report"), str) or not obj["report"].strip():
        raise bad_request("report label needs a non-empty string field 'report'")
    out = {"report": obj["report"].strip()}
    findings = obj.get("findings")
    if findings is not None:
        if not isinstance(findings, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str)
                                                     for f in findings):
            raise bad_request("'findings' must be a list of objects with a string 'name'")
        bad = [f.get("status") for f in findings if f.get("status") not in FINDING_STATUSES | {None}]
        if bad:
            raise bad_request(f"unknown finding status {bad[0]!r}; use one of {sorted(FINDING_STATUSES)}")
        for f in findings:
            p = f.get("probability")
            if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
                raise bad_request(f"finding {f['name'][:40]!r}: probability must be a number in 0..1, got {p!r}")
        out["findings"] = [{k: f[k] for k in ("name", "status", "probability") if k in f} for f in findings]
    if isinstance(obj.get("knowledge"), list):
        out["knowledge"] = [str(t) for t in obj["knowledge"]]
    return out


class ReportStoreMixin:
    """Report labels on top of :class:`LocalDatastore` (mixed in before it)."""

    # ---- datastore file: fresh read + write under one lock ---------------------------------
    def _reload_unlocked(self) -> None:
        if os.path.exists(self._datastore_config_path):
            with open(self._datastore_config_path) as fp:
                self._datastore = LocalDatastoreModel.model_validate_json(fp.read())
            self._datastore.base_path = self._datastore_path
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

    def _update_datastore_file(self, lock=True):
        def write():
            atomic_write_text(Path(self._datastore_config_path),
                              json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str))
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    def update_images_info(self, infos: Dict[str, Dict[str, Any]]) -> None:
        """Merge ``{image_id: info}`` into the image infos in one locked read-modify-write."""
        with FileLock(self._lock_file):
            self._reload_unlocked()
            for image_id, info in infos.items():
                obj = self._datastore.objects.get(image_id)
                if obj:
                    obj.image.info.update(info)
            self._update_datastore_file(lock=False)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        if image_id not in self._datastore.objects:
            raise not_found(f"image {image_id!r} not found in the datastore")
        self.update_images_info({image_id: info})

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        with FileLock(self._lock_file):
            self._reload_unlocked()
            label = self._datastore.label(label_id, label_tag)
            if label is None:
                raise not_found(f"no {label_tag!r} label for {label_id!r}")
            label.info.update(info)
            self._update_datastore_file(lock=False)

    # ---- reports ---------------------------------------------------------------------------
    def has_image(self, image_id: str) -> bool:
        return image_id in self._datastore.objects

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        check_id(image_id)
        tag = check_tag(label_tag or DefaultLabelTag.FINAL.value)
        if not self.has_image(image_id):
            raise not_found(f"image {image_id!r} not found in the datastore")
        is_report = str(label_filename).endswith(REPORT_SUFFIXES)
        if not is_report:
            if tag == DefaultLabelTag.FINAL.value:
                raise bad_request("the final label of a study is its report: upload a .json file "
                                  "{\"report\": \"...\", \"findings\": [...]} or a .txt file")
            self.check_label_map(image_id, label_filename, tag)
            return super().save_label(image_id, label_filename, tag, label_info)  # e.g. a segmentation
        report = parse_report(label_filename)
        return self.save_report(image_id, report, tag, label_info)

    def check_label_map(self, image_id: str, label_filename: str, tag: str) -> None:
        """A segmentation label (e.g. a CT study's ``organs`` mask) is stored only when it is a
        readable integer label map on the study image's own grid; an ``organs`` mask holds MedKit's
        segment values (0 background, organs 1..8 and the threshold segments lungs 9, bone 10, body 11,
        as in the label volume ``/infer/medkit_ct`` returns; training reads the organ values only)."""
        from lib.transforms import is_ct_study
        from medkit.ct.config import SEGMENT_LABELS
        from medkit.ct.images import VolumeInputError, check_label_map, volume_size

        uri = self.get_image_uri(image_id)
        try:
            size = volume_size(uri) if uri and is_ct_study(uri) else None
            if uri and size is None:
                raise bad_request(f"{image_id} is a 2D image: its only label is the report (tag 'final')")
            check_label_map(label_filename, size, max_value=max(SEGMENT_LABELS.values()) if tag == "organs" else 255)
        except VolumeInputError as e:
            raise bad_request(str(e).replace(str(label_filename), "uploaded label")) from None

    def save_report(self, image_id: str, report: dict, tag: str = "final", info: Optional[dict] = None) -> str:
        """Store ``report`` as the ``tag`` label of ``image_id``; the previous version is kept."""
        label_dir = Path(self._datastore.label_path(tag))
        dest = label_dir / f"{image_id}.json"
        history = label_dir / ".history" / image_id
        with FileLock(self._lock_file):
            self._reload_unlocked()
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                raise not_found(f"image {image_id!r} not found in the datastore")
            version = 1
            if dest.exists():  # keep it: history/<its version>.json (idempotent if a save was cut short)
                raw = dest.read_bytes()
                try:
                    previous = int(json.loads(raw).get("version", 0))
                except (ValueError, TypeError, AttributeError):
                    previous = 0
                previous = previous or len(list(history.glob("*.json"))) + 1
                atomic_write(history / f"{previous}.json", raw)
                version = previous + 1
                failpoint("save_report.after_history")
            body = {**report, "image": image_id, "tag": tag, "version": version,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            atomic_write_text(dest, json.dumps(body, indent=2) + "\n")
            failpoint("save_report.after_label")
            label_info = {k: v for k, v in (info or {}).items() if k not in ("report", "findings", "knowledge")}
            label_info.update({"ts": int(time.time()), "name": dest.name, "version": version})
            obj.labels[tag] = DataModel(info=label_info, ext=".json")
            self._update_datastore_file(lock=False)
        logger.info("saved %s label of %s (version %d)", tag, image_id, version)
        return image_id

    def read_report(self, image_id: str, tag: str = "final") -> dict | None:
        uri = LocalDatastore.get_label_uri(self, image_id, tag)
        if not uri or not uri.endswith(".json") or not os.path.exists(uri):
            return None
        return json.loads(Path(uri).read_text())

    def _list_files(self, path, patterns):
        # Report labels are JSON; images never are (datastore_v2.json lives beside the images).
        if Path(path).resolve().is_relative_to(Path(self._datastore.label_path(None)).resolve()):
            patterns = [*patterns, "*.json"]
        return super()._list_files(path, patterns)


class ReportLocalDatastore(ReportStoreMixin, LocalDatastore):
    """A local study folder; uploads are checked to be images MedKit can read."""

    def __init__(self, path: str, extensions=IMAGE_EXTENSIONS, auto_reload=True, read_only=False):
        super().__init__(path, extensions=list(extensions), auto_reload=auto_reload, read_only=read_only)

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        from medkit.cxr.images import load_cxr

        name = Path(image_filename).name.lower()
        if image_id:
            check_id(image_id)
        if not any(name.endswith(e.lstrip("*")) for e in self._extensions):
            raise bad_request(f"unsupported image type {Path(name).suffix!r}; the datastore takes "
                              + ", ".join(e.lstrip("*") for e in self._extensions))
        try:
            if name.endswith((".nii.gz", ".nii", ".nrrd")):
                import SimpleITK as sitk

                from medkit.ct.images import check_volume_file

                check_volume_file(image_filename)  # sizes, attached data, spacing: before ITK reads it
                r = sitk.ImageFileReader()
                r.SetFileName(str(image_filename))
                r.ReadImageInformation()
            else:
                load_cxr(image_filename)
        except ValueError as e:  # medkit's ImageInputError / VolumeInputError: the message names the problem
            raise bad_request(str(e).replace(str(image_filename), "uploaded file")) from None
        except RuntimeError as e:  # SimpleITK
            raise bad_request(f"uploaded file is not a readable volume ({str(e).splitlines()[0][:200]})") from None
        if image_id and image_id in self._datastore.objects:
            return self._same_image(image_id, image_filename)
        return super().add_image(image_id, image_filename, image_info)

    def _same_image(self, image_id: str, image_filename: str) -> str:
        """An id already in the datastore is never replaced (its report would lose its image):
        the same bytes again are a no-op, anything else is 409."""
        import filecmp

        existing = self.get_image_uri(image_id)
        if existing and os.path.isfile(existing) and filecmp.cmp(existing, image_filename, shallow=False):
            return image_id
        raise HTTPException(status_code=409, detail=f"image {image_id!r} already exists with other content; "
                                                    "upload it under a new id (a stored image is never replaced)")


class ReportDICOMwebDatastore(ReportStoreMixin, DICOMWebDatastore):
    """Series of a DICOMweb server, cached locally as DICOM files (no NIfTI conversion).

    Image ids are SeriesInstanceUIDs of the configured modalities. Labels (reports) live in
    the local cache's ``labels/final``; a report is also stored on the server as a DICOM SR.
    """

    def __init__(self, client, modalities=("CR", "DX", "CT"), cache_path: Optional[str] = None):
        super().__init__(client, search_filter={}, cache_path=cache_path, fetch_by_frame=False,
                         convert_to_nifti=False)
        self._modalities = {m.strip().upper() for m in modalities if m.strip()}

    def list_images(self) -> List[str]:
        from pydicom.dataset import Dataset

        series = []
        for raw in self._client.search_for_series(fields=["Modality"]):
            ds = Dataset.from_json(raw)
            if str(ds.get("Modality", "")).upper() in self._modalities:
                series.append(str(ds.SeriesInstanceUID))
        return sorted(series)

    def has_image(self, image_id: str) -> bool:
        return image_id in self._datastore.objects or image_id in self.list_images()

    def get_image_uri(self, image_id: str) -> str:
        check_id(image_id)
        if image_id not in self._datastore.objects and image_id not in self.list_images():
            return ""
        uri = super().get_image_uri(image_id)  # downloads the series once into the cache
        if image_id not in self._datastore.objects:
            with FileLock(self._lock_file):
                self._reload_unlocked()
                self._datastore.objects.setdefault(image_id, ImageLabelModel(
                    image=DataModel(ext="", info={"ts": int(time.time()), "name": image_id})))
                self._update_datastore_file(lock=False)
        return uri

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        return LocalDatastore.get_label_uri(self, label_id, label_tag)

    def get_labeled_images(self, label_tag=None, labels=None) -> List[str]:
        listed = set(self.list_images())
        return [k for k in LocalDatastore.get_labeled_images(self) if k in listed]

    def get_unlabeled_images(self, label_tag=None, labels=None) -> List[str]:
        labeled = set(LocalDatastore.get_labeled_images(self))
        return [s for s in self.list_images() if s not in labeled]

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        return LocalDatastore.datalist(self, full_path)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        check_id(image_id)
        if image_id not in self._datastore.objects and not self.get_image_uri(image_id):
            raise not_found(f"series {image_id!r} not found on the DICOMweb server")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def save_report(self, image_id: str, report: dict, tag: str = "final", info: Optional[dict] = None) -> str:
        label_id = super().save_report(image_id, report, tag, info)
        if tag == DefaultLabelTag.FINAL.value:
            uids = self.write_sr(image_id, report, final=True)
            self.update_label_info(image_id, tag, {"sr": uids})
        return label_id

    def write_sr(self, image_id: str, result: dict, final: bool) -> dict:
        """Store ``result`` on the DICOMweb server as an SR referencing the series; returns its UIDs."""
        from fastapi import HTTPException

        from lib.transforms import study_files
        from medkit.core.sr import SRInputError, build_report_sr

        try:
            sr = build_report_sr(result, study_files(self.get_image_uri(image_id)), final=final)
        except (SRInputError, ValueError) as e:
            raise bad_request(f"cannot build a DICOM SR for {image_id}: {e}") from None
        try:
            self._client.store_instances([sr])
        except Exception as e:  # requests / dicomweb-client errors: the archive refused or is down
            raise HTTPException(status_code=502, detail=f"DICOMweb server refused the SR: {e}") from None
        logger.info("stored %s SR for series %s", "final" if final else "draft", image_id)
        return {"StudyInstanceUID": str(sr.StudyInstanceUID), "SeriesInstanceUID": str(sr.SeriesInstanceUID),
                "SOPInstanceUID": str(sr.SOPInstanceUID)}
