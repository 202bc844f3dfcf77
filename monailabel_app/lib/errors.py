"""Request errors as 4xx responses with a message that names the problem.

monailabel 0.8.5 registers no exception handlers: an app exception (unknown model, unknown
strategy, malformed ``params`` JSON, a missing image) becomes a bare "500 Internal Server
Error". MedKit code raises :class:`fastapi.HTTPException` (handled by FastAPI everywhere), and
:func:`install_error_handlers` maps monailabel's own exceptions onto 4xx codes.
"""

from __future__ import annotations

import json
import logging
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


def install_error_handlers(max_upload_bytes: int = 1024 * 1024 * 1024, allow_remote: bool = False) -> bool:
    """Register 4xx handlers on the running MONAI Label FastAPI app (server process only).

    The app instance is created during the server's lifespan start-up, after Starlette built
    its middleware stack from the handlers it knew then; clearing ``middleware_stack`` makes
    Starlette rebuild it, with these handlers, on the next request.
    """
    if "monailabel.app" not in sys.modules:
        return False  # a training / scoring subprocess, or a script: no HTTP server
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

    async def on_http(request, exc: HTTPException):
        # monailabel answers a request without an image (or file) with a 500; it is the client's error
        code = exc.status_code
        if code == 500 and str(exc.detail).startswith("Neither Image"):
            code, exc.detail = 400, "no input: give an image id (?image=ID) or upload a file (form field 'file')"
        return JSONResponse(status_code=code, content={"detail": exc.detail}, headers=getattr(exc, "headers", None))

    from lib.security import RequestGuard, install_log_redaction

    install_log_redaction()
    _check_train_params_before_launch()
    _check_infer_params()
    _check_scoring_method()

    api.add_exception_handler(MONAILabelException, on_monailabel)
    api.add_exception_handler(json.JSONDecodeError, on_bad_json)
    api.add_exception_handler(HTTPException, on_http)
    api.middleware_stack = None  # Starlette refuses add_middleware once the stack is built; rebuilt on the next request
    if not any(m.cls is RequestGuard for m in api.user_middleware):
        api.add_middleware(RequestGuard, max_bytes=max_upload_bytes, allow_remote=allow_remote)
    return True


def _check_train_params_before_launch() -> None:
    """``POST /train/<model>`` starts a subprocess and answers 200 before the trainer reads its
    params; wrap the endpoint's ``run_model`` (the route, with its RBAC dependency, stays
    MONAI Label's) so that bad params, too few reported studies or (CT) nothing to learn are a
    400 naming the problem instead of a failed task."""
    import monailabel.endpoints.train as train_endpoint
    from monailabel.interfaces.utils.app import app_instance

    original = train_endpoint.run_model
    if getattr(original, "medkit_checked", False):
        return

    def run_model(model, params=None, run_sync=False, enqueue=False):
        instance = app_instance()
        trainer = instance._trainers.get(model)
        if trainer is not None and hasattr(trainer, "options"):
            try:
                opts = trainer.options({**trainer.config(), **(params or {})})
                trainer.preflight(instance.datastore(), opts)
            except ValueError as e:
                raise bad_request(str(e)) from None
        return original(model, params, run_sync, enqueue)

    run_model.medkit_checked = True
    train_endpoint.run_model = run_model


def _check_infer_params() -> None:
    """MONAI Label's ``run_inference`` does ``request.update(json.loads(params))``: a non-object
    (``[1, 2]``, ``"x"``) is a TypeError, answered 500. Checked here first (400 naming it)."""
    import monailabel.endpoints.infer as infer_endpoint

    original = infer_endpoint.run_inference
    if getattr(original, "medkit_checked", False):
        return

    def run_inference(background_tasks, model, image="", session_id="", params="{}", file=None, label=None,
                      output=None):
        try:
            parsed = json.loads(params) if params else {}
        except json.JSONDecodeError as e:
            raise bad_request(f"malformed JSON in params: {e}") from None
        if not isinstance(parsed, dict):
            raise bad_request(f"params must be a JSON object {{...}}, got {type(parsed).__name__}")
        return original(background_tasks, model, image, session_id, params, file, label, output)

    run_inference.medkit_checked = True
    infer_endpoint.run_inference = run_inference


def _check_scoring_method() -> None:
    """``POST /scoring/<method>`` starts a subprocess for any name; an unknown one is a 404 here."""
    import monailabel.endpoints.scoring as scoring_endpoint
    from monailabel.interfaces.utils.app import app_instance

    original = scoring_endpoint.run_method
    if getattr(original, "medkit_checked", False):
        return

    def run_method(method, params=None, run_sync=False):
        methods = app_instance()._scoring_methods
        if method not in methods:
            raise not_found(f"unknown scoring method {method!r}; available: {', '.join(sorted(methods))}")
        return original(method, params, run_sync)

    run_method.medkit_checked = True
    scoring_endpoint.run_method = run_method
