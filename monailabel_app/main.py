"""MedKit as a MONAI Label app: report generation, reports as labels, site training, active learning.

    monailabel start_server --app monailabel_app --studies monailabel_app/samples --host 127.0.0.1
    curl -X POST "http://127.0.0.1:8000/infer/medkit_cxr?image=nih_00000001_000&output=json"

Models are discovered from ``lib/configs`` by class (``--conf models all`` or a comma list of
file names). A study's ``final`` label is its report (``lib/datastore.py``). With
``--studies http(s)://.../dicom-web`` the studies are the CR / DX / CT series of a DICOMweb
server and every report is written back there as a DICOM SR (``medkit.core.sr``).
Options: ``--conf KEY VALUE``; the table is in ``monailabel_app/README.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
from typing import Dict

import lib.configs
from lib.datastore import IMAGE_EXTENSIONS, ReportDICOMwebDatastore, ReportLocalDatastore
from lib.errors import bad_request, check_id, install_error_handlers, not_found
from lib.security import AccessPolicy

import monailabel
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.class_utils import get_class_names
from monailabel.utils.others.generic import strtobool

from medkit.core import limits

logger = logging.getLogger(__name__)

UPLOAD_NAME = re.compile(r"^tmp[A-Za-z0-9_]+(\.[A-Za-z0-9]+)*$")  # what the /infer endpoint names an upload


def input_limits(conf: dict) -> limits.InputLimits:
    """``--conf max_image_pixels N`` etc. (:class:`medkit.core.limits.InputLimits`), defaults otherwise."""
    values = {}
    for f in dataclasses.fields(limits.InputLimits):
        if f.name in conf:
            try:
                values[f.name] = int(conf[f.name])
            except ValueError:
                raise ValueError(f"--conf {f.name} {conf[f.name]!r}: must be a positive integer") from None
    return limits.InputLimits(**values)


class MedKitApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from packages or local paths only
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        self.model_dir = os.path.join(app_dir, "model")
        configs = {c.split(".")[-2].lower(): c for c in get_class_names(lib.configs, "TaskConfig")}
        wanted = [m.strip() for m in conf.get("models", "all").split(",") if m.strip()]
        unknown = [m for m in wanted if m != "all" and m not in configs]
        if unknown or not wanted:
            raise ValueError(f"--conf models {conf.get('models')!r}: unknown model(s) {unknown}; "
                             f"available: all, {', '.join(sorted(configs))}")
        self.models: Dict[str, TaskConfig] = {}
        for name, path in sorted(configs.items()):
            if "all" in wanted or name in wanted:
                module, cls = path.rsplit(".", 1)
                task_config = getattr(__import__(module, fromlist=[cls]), cls)()
                try:
                    task_config.init(name, self.model_dir, conf, None)
                except ModuleNotFoundError as e:  # e.g. an install without the CT path
                    if name in wanted:
                        raise
                    logger.warning("model %s unavailable: %s", name, e)
                    continue
                self.models[name] = task_config
        logger.info("MedKit models: %s", list(self.models))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="MedKit",
                         description="Radiology report generation (MedKit: multi-level feature distillation "
                                     "with knowledge injection). Research use only; not a diagnostic device.",
                         version=monailabel.__version__)
        # Scoring runs on request (/scoring/<method>) or lazily in the uncertainty strategy.
        self._auto_update_scoring = strtobool(conf.get("auto_scoring", "false"))
        limits.configure(input_limits(conf))
        install_error_handlers(AccessPolicy.from_conf(conf))

    # ---- datastore ------------------------------------------------------------------------
    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return self.init_remote_datastore()
        exts = [e.strip() for e in self.conf.get("extensions", ",".join(IMAGE_EXTENSIONS)).split(",") if e.strip()]
        return ReportLocalDatastore(self.studies, extensions=exts, auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                    read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def _init_dicomweb_datastore(self) -> Datastore:
        # Like MONAILabelApp's, without downloading dcmqi (DICOM SEG tools) from GitHub at start-up.
        from dicomweb_client.session_utils import create_session_from_user_pass
        from monailabel.datastore.dicom import DICOMwebClientX

        self.studies = self.studies.rstrip("/")
        user = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
        password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
        session = create_session_from_user_pass(user, password) if user and password else None
        client = DICOMwebClientX(url=self.studies, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
        modalities = self.conf.get("dicomweb_modalities", "CR,DX,CT").split(",")
        cache = settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or settings.MONAI_LABEL_DATASTORE_CACHE_PATH or None
        return ReportDICOMwebDatastore(client, modalities, cache_path=cache)

    # ---- tasks ----------------------------------------------------------------------------
    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, task_config in self.models.items():
            task = task_config.infer()
            infers.update(task if isinstance(task, dict) else {name: task})
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        for name, task_config in self.models.items():
            task = task_config.trainer()
            if task:
                trainers[name] = task
        return trainers

    def init_strategies(self) -> Dict[str, Strategy]:
        strategies: Dict[str, Strategy] = {"random": Random(), "first": First()}
        for task_config in self.models.values():
            strategies.update(task_config.strategy() or {})
        return strategies

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        methods: Dict[str, ScoringMethod] = {}
        for task_config in self.models.values():
            methods.update(task_config.scoring_method() or {})
        return methods

    # ---- requests: 4xx with a message instead of monailabel's 500 --------------------------
    def _check_image(self, image) -> None:
        if not isinstance(image, str):
            return  # in-memory input from a pipeline
        if os.path.isabs(image):  # only an upload the /infer endpoint just wrote is a path
            tmp = os.path.realpath(tempfile.gettempdir())
            if os.path.dirname(os.path.realpath(image)) != tmp or not UPLOAD_NAME.match(os.path.basename(image)):
                raise bad_request("image must be a datastore image id (or a file upload), not a server path")
            return
        check_id(image)
        if not self.datastore().get_image_uri(image):
            raise not_found(f"image {image!r} not found in the datastore")

    def infer(self, request, datastore=None):
        from medkit.cxr.images import ImageInputError

        model = request.get("model")
        if model not in self._infers:
            raise not_found(f"unknown model {model!r}; available: {', '.join(sorted(self._infers))}")
        image = request.get("image")
        self._check_image(image)
        try:
            result = super().infer(request, datastore)
        except (ImageInputError, ValueError) as e:
            message = str(e)
            if isinstance(image, str) and os.path.isabs(image):
                message = message.replace(image, "uploaded file")
            elif isinstance(image, str):
                message = message.replace(self.datastore().get_image_uri(image) or image, image)
            raise bad_request(message) from None
        self._write_back_sr(request, result)
        return result

    def _write_back_sr(self, request, result) -> None:
        store = self.datastore()
        params = result.get("params") or {}
        image = request.get("image")
        if not isinstance(store, ReportDICOMwebDatastore) or not isinstance(image, str) or os.path.isabs(image):
            return
        if not strtobool(str(request.get("write_sr", self.conf.get("dicomweb_write_sr", "true")))):
            return
        if params.get("report"):
            params["sr"] = store.write_sr(image, params, final=False)

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise not_found(f"unknown strategy {strategy!r}; available: {', '.join(sorted(self._strategies))}")
        return super().next_sample(request)

    def scoring(self, request, datastore=None):
        method = request.get("method")
        if method not in self._scoring_methods:
            raise not_found(f"unknown scoring method {method!r}; available: {', '.join(sorted(self._scoring_methods))}")
        return super().scoring(request, datastore)

    def train(self, request):
        model = request.get("model")
        if model not in self._trainers:
            raise not_found(f"unknown train task {model!r}; available: {', '.join(sorted(self._trainers))}")
        return super().train(request)

    def bundle_path(self, model):
        # AsyncTask.run (POST /train/<model>, /batch/infer/<model>) asks this before it starts a
        # subprocess: the one place to refuse an unknown model with a 404 instead of a failed task.
        if model is not None and model not in self._trainers and model not in self._infers:
            raise not_found(f"unknown model {model!r}; available: {', '.join(sorted(self._trainers))}")
        return None
