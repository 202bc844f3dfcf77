"""Request errors as 4xx responses with a message that names the problem.

monailabel 0.8.5 registers no exception handlers: an app exception (unknown model, unknown
strategy, malformed ``params`` JSON, a missing image) becomes a bare "500 Internal Server
Error". MedKit code raises :class:`fastapi.HTTPException` (handled by FastAPI everywhere), and
:func:`install_error_handlers` maps monailabel's own exceptions onto 4xx codes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys

from fastapi import HTTPException

logger = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")  # file-name ids and DICOM UIDs
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,31}$")


def bad_request(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


def not_found(message: str) -> HTTPException:
    return HTTPException(status_code=404, detail=message)


def check_id(value, what: str = "image id") -> str:
    """A datastore id: no path separators, no '..', bounded length (ids name files on disk)."""
    if not isinstance(value, str) or not ID_PATTERN.match(value) or ".." in value:
        raise bad_request(f"invalid {what} {str(value)[:80]!r}: use letters, digits, '.', '_' or '-' "
                          "(no path separators, no '..', at most 128 characters)")
    return value


def check_tag(value) -> str:
    if not isinstance(value, str) or not TAG_PATTERN.match(value):
        raise bad_request(f"invalid label tag {str(value)[:40]!r}: use letters, digits, '_' or '-'")
    return value


def json_object(text, what: str) -> dict:
    """A form field that must hold a JSON object: parsed, or a 400 naming ``what``."""
    if text in (None, ""):
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad_request(f"malformed JSON in {what}: {e}") from None
    except RecursionError:
        raise bad_request(f"{what}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object {{...}}, got {type(value).__name__}")
    return value


def install_error_handlers(policy) -> bool:
    """Register 4xx handlers, the request guard and the request checks on the running MONAI Label
    FastAPI app (server process only); ``policy`` is a :class:`lib.security.AccessPolicy`.

    The app instance is created during the server's lifespan start-up, after Starlette built
    its middleware stack from the handlers it knew then; clearing ``middleware_stack`` makes
    Starlette rebuild it, with these handlers, on the next request.
    """
    if "monailabel.app" not in sys.modules:
        return False  # a training / scoring subprocess, or a script: no HTTP server
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse
    from monailabel.app import app as api
    from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

    status_of = {MONAILabelError.INVALID_INPUT: 400, MONAILabelError.APP_INIT_ERROR: 404,
                 MONAILabelError.APP_ERROR: 404}

    async def on_monailabel(request, exc: MONAILabelException):
        code = status_of.get(exc.error, 500)
        if code == 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc.msg)
        return JSONResponse(status_code=code, content={"detail": exc.msg, "error": exc.error.value})

    async def on_bad_json(request, exc: json.JSONDecodeError):
        return JSONResponse(status_code=400, content={"detail": f"malformed JSON in the request: {exc}"})

    async def on_deep_json(request, exc: RecursionError):  # json.loads of [[[[...]]]] in a request body
        return JSONResponse(status_code=400, content={"detail": "JSON in the request is nested too deeply"})

    async def on_http(request, exc: HTTPException):
        # monailabel answers a request without an image (or file) with a 500; it is the client's error
        code = exc.status_code
        if code == 500 and str(exc.detail).startswith("Neither Image"):
            code, exc.detail = 400, "no input: give an image id (?image=ID) or upload a file (form field 'file')"
        return JSONResponse(status_code=code, content={"detail": exc.detail}, headers=getattr(exc, "headers", None))

    from lib.security import RequestGuard, install_log_filters

    install_log_filters()
    _check_train_params_before_launch()
    _check_infer_request()
    _check_scoring_method()
    _check_datastore_requests()
    _safe_session_archives(policy.max_bytes)

    api.add_exception_handler(MONAILabelException, on_monailabel)
    api.add_exception_handler(json.JSONDecodeError, on_bad_json)
    api.add_exception_handler(RecursionError, on_deep_json)
    api.add_exception_handler(HTTPException, on_http)
    api.middleware_stack = None  # Starlette refuses add_middleware once the stack is built; rebuilt on the next request
    # MONAI Label's CORS middleware answers every origin, with credentials: only the allowed ones
    api.user_middleware = [m for m in api.user_middleware if m.cls is not CORSMiddleware]
    if policy.cors_origins:
        api.add_middleware(CORSMiddleware, allow_origins=sorted(policy.cors_origins), allow_credentials=True,
                           allow_methods=["GET", "POST", "PUT", "DELETE", "HEAD"], allow_headers=["*"])
    api.user_middleware = [m for m in api.user_middleware if m.cls is not RequestGuard]
    api.add_middleware(RequestGuard, policy=policy)  # outermost: it sees every request first
    return True


def _wrap(module, name: str, make) -> None:
    """Replace ``module.name`` (a MONAI Label endpoint function, looked up at call time by its
    route, which keeps its RBAC dependency) by ``make(original)``, once."""
    original = getattr(module, name)
    if getattr(original, "medkit_checked", False):
        return
    wrapper = functools.wraps(original)(make(original))
    wrapper.medkit_checked = True
    setattr(module, name, wrapper)


def _check_train_params_before_launch() -> None:
    """``POST /train/<model>`` and ``POST /train/`` (every model) start a subprocess and answer
    200 before the trainer reads its params; bad params, too few reported studies or (CT)
    nothing to learn are a 400 naming the problem (and the model) instead of a failed task."""
    import monailabel.endpoints.train as train_endpoint
    from monailabel.interfaces.utils.app import app_instance

    def preflight(model, params) -> None:
        instance = app_instance()
        trainer = instance._trainers.get(model)
        if trainer is not None and hasattr(trainer, "options"):
            if params is not None and not isinstance(params, dict):
                raise bad_request(f"training params must be a JSON object, got {type(params).__name__}")
            try:
                opts = trainer.options({**trainer.config(), **(params or {})})
                trainer.preflight(instance.datastore(), opts)
            except ValueError as e:
                raise bad_request(str(e)) from None

    def make_run_model(original):
        def run_model(model, params=None, run_sync=False, enqueue=False):
            preflight(model, params)
            return original(model, params, run_sync, enqueue)
        return run_model

    def make_run(original):
        def run(params=None, run_sync=False):
            if params is not None and not isinstance(params, dict):
                raise bad_request(f"training params must be a JSON object, got {type(params).__name__}")
            problems = []  # every model's, so that one answer says all that stops the run
            for model in app_instance()._trainers:
                try:
                    preflight(model, (params or {}).get(model))
                except HTTPException as e:
                    problems.append(f"{model}: {e.detail}")
            if problems:
                raise bad_request("; ".join(problems))
            return original(params, run_sync)
        return run

    _wrap(train_endpoint, "run_model", make_run_model)
    _wrap(train_endpoint, "run", make_run)


# infer request keys that MONAI Label itself reads and MedKit honours; everything else a model
# accepts is its task's ``request_params`` (``image``, ``model``, ``label`` ... never: a param
# must not replace the request's own input)
COMMON_INFER_PARAMS = frozenset({"device"})


def _check_device(value) -> None:
    import torch

    allowed = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
                         if torch.cuda.is_available() else [])
    if value not in allowed:  # "cpu:1" .. "cpu:4" would each load one more model copy
        raise bad_request(f"device {str(value)[:40]!r} is not a device of this server; use one of {allowed}")


def _check_infer_request() -> None:
    """Before MONAI Label's ``run_inference`` merges ``params`` into the request: a JSON object
    (a list is a TypeError there, answered 500), only the keys the model accepts (a param named
    ``image`` would make the server read a file the client names), a real device, and an
    ``output`` the model can give (a chest X-ray has no label image; DICOM SEG is not written)."""
    import monailabel.endpoints.infer as infer_endpoint
    from monailabel.interfaces.utils.app import app_instance

    def make(original):
        def run_inference(background_tasks, model, image="", session_id="", params="{}", file=None, label=None,
                          output=None):
            parsed = json_object(params, "params")
            task = app_instance()._infers.get(model)
            if task is not None:
                accepted = COMMON_INFER_PARAMS | set(getattr(task, "request_params", ()))
                unknown = sorted(set(parsed) - accepted)
                if unknown:
                    raise bad_request(f"unknown infer param(s) {[k[:40] for k in unknown[:5]]} for {model}; "
                                      f"accepted: {', '.join(sorted(accepted))}")
                if "device" in parsed:
                    _check_device(parsed["device"])
                kind = getattr(output, "value", output)
                if kind == "dicom_seg":
                    raise bad_request("output=dicom_seg is not supported by MedKit; use output=image (NIfTI label) "
                                      "or output=all")
                if kind == "image" and getattr(task, "dimension", 3) == 2:
                    raise bad_request(f"output=image: {model} returns no label image (a report and findings); "
                                      "use output=json")
            if label is not None:
                raise bad_request("an infer request takes no 'label' upload in MedKit")
            return original(background_tasks, model, image, session_id, params, file, label, output)
        return run_inference

    _wrap(infer_endpoint, "run_inference", make)


def _check_scoring_method() -> None:
    """``POST /scoring/<method>`` starts a subprocess for any name; an unknown one is a 404 here."""
    import monailabel.endpoints.scoring as scoring_endpoint
    from monailabel.interfaces.utils.app import app_instance

    def make(original):
        def run_method(method, params=None, run_sync=False):
            methods = app_instance()._scoring_methods
            if method not in methods:
                raise not_found(f"unknown scoring method {method!r}; available: {', '.join(sorted(methods))}")
            return original(method, params, run_sync)
        return run_method

    _wrap(scoring_endpoint, "run_method", make)


def relative_path(path):
    """An absolute path of the study folder as a path relative to it; any other one as its file name."""
    from monailabel.interfaces.utils.app import app_instance

    root = getattr(app_instance().datastore(), "_datastore_path", None)
    if isinstance(path, str) and os.path.isabs(path):
        return os.path.relpath(path, root) if root and path.startswith(str(root)) else os.path.basename(path)
    return path


def _check_datastore_requests() -> None:
    """The datastore endpoints: form fields that must be JSON objects, an upload without ``?image=``
    named by its content (not by its file name, which often carries the patient's name), no
    absolute server paths in what they (and the active-learning proposal) answer, and the
    dataset ZIP removed once sent."""
    import hashlib

    import monailabel.endpoints.activelearning as al_endpoint
    import monailabel.endpoints.datastore as ds_endpoint

    def make_add_image(original):
        def add_image(background_tasks, image=None, params="{}", file=None, user=None):
            json_object(params, "params")
            if not image and file is not None:
                digest = hashlib.sha256()
                for block in iter(lambda: file.file.read(1 << 20), b""):
                    digest.update(block)
                file.file.seek(0)
                image = f"upload-{digest.hexdigest()[:16]}"
            return original(background_tasks, image, params, file, user)
        return add_image

    def make_save_label(original):
        def save_label(background_tasks, image, params="{}", tag="final", label=None, user=None):
            json_object(params, "params")
            return original(background_tasks, image, params, tag, label, user)
        return save_label

    def make_update_image_info(original):
        def update_image_info(image, info="{}", user=None):
            json_object(info, "info")
            return original(image, info, user)
        return update_image_info

    def make_update_label_info(original):
        def update_label_info(label, tag, info="{}", user=None):
            json_object(info, "info")
            return original(label, tag, info, user)
        return update_label_info

    def make_image_info(original):
        def get_image_info(image):
            info = dict(original(image) or {})
            if "path" in info:
                info["path"] = relative_path(info["path"])
            return info
        return get_image_info

    def make_datastore(original):
        def datastore(output=None):
            result = original(output)
            if isinstance(result, list):  # output=train: the datalist
                return [{k: relative_path(v) for k, v in item.items()} if isinstance(item, dict) else item
                        for item in result]
            return result
        return datastore

    def make_dataset(original):
        def download_dataset(limit_cases=None):
            from starlette.background import BackgroundTask

            try:
                response = original(limit_cases)
            except AssertionError:  # MONAI Label asserts that some study has a label
                raise not_found("no study has a label yet: the dataset ZIP would be empty") from None
            path = getattr(response, "path", None)
            if path:  # MONAI Label leaves the temporary ZIP behind after every download
                response.background = BackgroundTask(lambda: os.path.exists(path) and os.remove(path))
            return response
        return download_dataset

    def make_sample(original):
        def sample(strategy, params=None, user=None):
            result = original(strategy, params, user)
            if isinstance(result, dict) and "path" in result:
                result["path"] = relative_path(result["path"])
            return result
        return sample

    _wrap(al_endpoint, "sample", make_sample)
    _wrap(ds_endpoint, "add_image", make_add_image)
    _wrap(ds_endpoint, "save_label", make_save_label)
    _wrap(ds_endpoint, "update_image_info", make_update_image_info)
    _wrap(ds_endpoint, "update_label_info", make_update_label_info)
    _wrap(ds_endpoint, "get_image_info", make_image_info)
    _wrap(ds_endpoint, "datastore", make_datastore)
    _wrap(ds_endpoint, "download_dataset", make_dataset)


def _safe_session_archives(max_bytes: int) -> None:
    """``PUT /session/?uncompress=true`` (when sessions are enabled) unpacks the upload with
    ``shutil.unpack_archive``, which follows ``../`` member names out of its folder (tar slip) and
    has no size bound. MedKit unpacks it itself: regular files and folders only, every member
    inside the folder, at most ``max_bytes`` unpacked in all; anything else is a 400."""
    import shutil
    import tarfile
    import tempfile
    import zipfile

    from monailabel.utils import sessions

    def unpack(archive: str) -> str:
        dest = os.path.realpath(tempfile.mkdtemp(prefix="medkit_session_"))
        total = 0

        def target(name: str) -> str:
            out = os.path.realpath(os.path.join(dest, name))
            if os.path.isabs(name) or not out.startswith(dest + os.sep):
                raise bad_request(f"archive member {name[:80]!r} points outside its folder")
            return out

        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    for m in z.infolist():
                        out = target(m.filename)
                        if m.is_dir():
                            os.makedirs(out, exist_ok=True)
                            continue
                        os.makedirs(os.path.dirname(out), exist_ok=True)
                        with z.open(m) as src, open(out, "wb") as dst:
                            while block := src.read(1 << 20):
                                total += len(block)
                                if total > max_bytes:
                                    raise bad_request(f"archive unpacks to more than {max_bytes // 2**20} MiB "
                                                      "(--conf max_upload_mb)")
                                dst.write(block)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as t:
                    for m in t:
                        out = target(m.name)
                        if m.isdir():
                            os.makedirs(out, exist_ok=True)
                            continue
                        if not m.isfile():
                            raise bad_request(f"archive member {m.name[:80]!r} is a link or device, not a file")
                        total += m.size
                        if total > max_bytes:
                            raise bad_request(f"archive unpacks to more than {max_bytes // 2**20} MiB "
                                              "(--conf max_upload_mb)")
                        os.makedirs(os.path.dirname(out), exist_ok=True)
                        with t.extractfile(m) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            else:
                raise bad_request("uncompress=true: the upload is not a ZIP or TAR archive")
        except HTTPException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
            shutil.rmtree(dest, ignore_errors=True)
            raise bad_request(f"uncompress=true: damaged archive ({type(e).__name__})") from None
        return dest

    original = sessions.Sessions.add_session
    if getattr(original, "medkit_checked", False):
        return

    def add_session(self, data_file, expiry=0, uncompress=False, session_id=None):
        if uncompress and not os.path.isdir(data_file):
            data_file, uncompress = unpack(data_file), False
        return original(self, data_file, expiry, uncompress, session_id)

    add_session.medkit_checked = True
    sessions.Sessions.add_session = add_session
