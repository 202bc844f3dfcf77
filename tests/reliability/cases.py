"""The reliability cases, as data: the tests run them and the summary table counts them.

A server case is ``(id, request, expected status, words the message must contain)`` where the
request is ``(method, path, kind, payload)``: kind ``upload`` sends ``payload`` (a bad-input
name) as the form file ``file``; ``label`` sends it as the form file ``label``; ``json`` posts
JSON; ``form`` posts form fields; ``declared`` sends only headers declaring ``payload`` bytes.
"""

from __future__ import annotations

import json

PNG_ID, PNG2_ID, DCM_ID, CT_ID = "nih_00000001_000", "nih_00027426_000", "rsna_pneumonia_sample", "example_ct_sm"
CXR, CT = "/infer/medkit_cxr?output=json", "/infer/medkit_ct?output=json"

SERVER_CASES = [
    # 2D input to the chest X-ray model
    ("truncated-png", ("POST", CXR, "upload", "truncated_png"), 400, ["not a readable image"]),
    ("truncated-jpeg", ("POST", CXR, "upload", "truncated_jpg"), 400, ["not a readable image"]),
    ("text-named-png", ("POST", CXR, "upload", "text_as_png"), 400, ["not a readable image"]),
    ("zero-byte-upload", ("POST", CXR, "upload", "zero_byte_png"), 400, ["empty", "0 bytes"]),
    ("one-pixel-image", ("POST", CXR, "upload", "one_pixel_png"), 400, ["1x1 pixels"]),
    ("dicom-without-pixels", ("POST", CXR, "upload", "dicom_no_pixels"), 400, ["no pixel data"]),
    ("ct-slice-to-cxr", ("POST", CXR, "upload", "ct_slice_dcm"), 400, ["modality CT"]),
    ("volume-upload-to-cxr", ("POST", CXR, "upload", "ct_volume"), 400, ["3D volume"]),
    ("volume-id-to-cxr", ("POST", f"/infer/medkit_cxr?image={CT_ID}", "none", None), 400, ["3D volume"]),
    ("unsupported-type", ("POST", CXR, "upload", "exe"), 400, ["unsupported file type"]),
    # 3D input to the CT model
    ("image-upload-to-ct", ("POST", CT, "upload", "png"), 400, ["2D image"]),
    ("image-id-to-ct", ("POST", f"/infer/medkit_ct?image={PNG_ID}", "none", None), 400, ["2D image"]),
    ("single-slice-to-ct", ("POST", CT, "upload", "ct_slice_dcm"), 400, ["slice"]),
    ("empty-volume", ("POST", CT, "upload", "empty_volume"), 400, ["volume is empty"]),
    ("zero-byte-volume", ("POST", CT, "upload", "zero_byte_volume"), 400, ["empty", "0 bytes"]),
    ("constant-volume", ("POST", CT, "upload", "constant_volume"), 400, ["constant"]),
    ("nan-voxels", ("POST", CT, "upload", "nan_volume"), 400, ["NaN"]),
    ("inf-voxels", ("POST", CT, "upload", "inf_volume"), 400, ["infinite"]),
    ("truncated-volume", ("POST", CT, "upload", "truncated_volume"), 400, ["truncated"]),
    # request shape
    ("2gb-declared-upload", ("POST", CXR, "declared", 2 * 1024**3), 413, ["exceeds the limit"]),
    ("no-image-no-file", ("POST", "/infer/medkit_cxr", "none", None), 400, ["no input"]),
    ("unknown-model", ("POST", f"/infer/nope?image={PNG_ID}", "none", None), 404, ["unknown model 'nope'"]),
    ("unknown-image-id", ("POST", "/infer/medkit_cxr?image=ghost", "none", None), 404, ["'ghost' not found"]),
    ("traversal-id", ("POST", "/infer/medkit_cxr?image=../../etc/passwd", "none", None), 400, ["invalid image id"]),
    ("encoded-traversal-id", ("POST", "/infer/medkit_cxr?image=..%2F..%2Fetc%2Fpasswd", "none", None), 400,
     ["invalid image id"]),
    ("absolute-path-id", ("POST", "/infer/medkit_cxr?image=/etc/passwd", "none", None), 400, ["not a server path"]),
    ("tmp-path-id", ("POST", "/infer/medkit_cxr?image=/tmp/../etc/hosts", "none", None), 400, ["not a server path"]),
    ("overlong-id", ("POST", "/infer/medkit_cxr?image=" + "a" * 300, "none", None), 400, ["invalid image id"]),
    ("malformed-json-params", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form", {"params": "{not json"}), 400,
     ["malformed JSON"]),
    ("params-not-object", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form", {"params": "[1, 2]"}), 400,
     ["params"]),
    ("params-out-of-range", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form", {"params": '{"num_beams": 99}'}),
     400, ["num_beams"]),
    # labels (reports)
    ("label-image-as-report", ("PUT", f"/datastore/label?image={PNG2_ID}", "label", "png"), 400,
     ["final label of a study is its report"]),
    ("label-json-without-report", ("PUT", f"/datastore/label?image={PNG2_ID}", "label", "json_no_report"), 400,
     ["'report'"]),
    ("label-broken-json", ("PUT", f"/datastore/label?image={PNG2_ID}", "label", "broken_json"), 400,
     ["not valid JSON"]),
    ("label-too-large", ("PUT", f"/datastore/label?image={PNG2_ID}", "label", "huge_report"), 400, ["at most"]),
    ("label-traversal-id", ("PUT", "/datastore/label?image=..%2Fx", "label", "report"), 400, ["invalid image id"]),
    ("label-traversal-tag", ("PUT", f"/datastore/label?image={PNG2_ID}&tag=..%2F..%2Fx", "label", "report"), 400,
     ["invalid label tag"]),
    ("label-unknown-image", ("PUT", "/datastore/label?image=ghost", "label", "report"), 404, ["not found"]),
    # datastore uploads, other endpoints
    ("add-image-not-an-image", ("PUT", "/datastore/image?image=new1", "upload", "text_as_png"), 400,
     ["not a readable image"]),
    ("add-image-traversal-id", ("PUT", "/datastore/image?image=..%2Fnew", "upload", "png"), 400, ["invalid image id"]),
    ("unknown-strategy", ("POST", "/activelearning/nope", "none", None), 404, ["unknown strategy 'nope'"]),
    ("unknown-scoring", ("POST", "/scoring/nope", "none", None), 404, ["unknown scoring method 'nope'"]),
    ("train-unknown-model", ("POST", "/train/nope", "json", {}), 404, ["unknown model 'nope'"]),
    ("train-bad-option", ("POST", "/train/medkit_cxr", "json", {"max_epochs": "many"}), 400, ["max_epochs"]),
]

# `medkit generate ARGS --json`: each must exit 2 with one line naming the file and the problem.
CLI_CASES = [
    ("truncated-png", ["truncated_png"], ["not a readable image"]),
    ("truncated-jpeg", ["truncated_jpg"], ["not a readable image"]),
    ("text-named-png", ["text_as_png"], ["not a readable image"]),
    ("zero-byte-file", ["zero_byte_png"], ["0 bytes"]),
    ("one-pixel-image", ["one_pixel_png"], ["1x1 pixels"]),
    ("volume-as-cxr-view", ["png", "ct_volume"], ["3D volume"]),
    ("radiograph-folder-to-ct", ["cr_as_series"], ["no DICOM image slices"]),
    ("empty-volume", ["empty_volume"], ["volume is empty"]),
    ("zero-byte-volume", ["zero_byte_volume"], ["0 bytes"]),
    ("constant-volume", ["constant_volume"], ["constant"]),
    ("nan-voxels", ["nan_volume"], ["NaN"]),
    ("inf-voxels", ["inf_volume"], ["infinite"]),
    ("truncated-volume", ["truncated_volume"], ["truncated"]),
    ("dicom-without-pixels", ["dicom_no_pixels"], ["no pixel data"]),
    ("dicom-series-without-pixels", ["dicom_series_no_pixels"], ["cannot read the DICOM series"]),
    ("mixed-dicom-series", ["mixed_series"], ["2 DICOM series"]),
    ("empty-folder", ["empty_folder"], ["no DICOM image slices"]),
    ("missing-file", ["missing"], ["file not found"]),
]

LOAD_CI = {"clients": 8, "requests_per_client": 3}  # the full 8 x 50 run is benchmarks/load.py

FAULTS = [
    ("SIGKILL while a report is saved (previous version kept, new one not written)", "save_report.after_history"),
    ("SIGKILL while a report is saved (new one written, index not updated)", "save_report.after_label"),
    ("SIGKILL during training (after an epoch, before promotion)", "train.epoch_end"),
]

# The boundary a web page in the radiologist's browser, or a hostile local client, must not cross
# (tests/reliability/test_boundary.py). A case is ``(id, (method, path, kind, payload, headers),
# status, words the message must contain)``; kinds as above plus ``field`` (payload = (form field,
# input name)), ``label_form`` (payload = (label input name, form fields)) and ``raw`` (a JSON body
# sent as is). EVIL is a page the radiologist happens to have open.
EVIL = {"Origin": "http://evil.example"}
RSS_BUDGET_MIB = 1536  # allowed growth of the server's peak RSS over all the boundary cases (tiny model)
INFO = "/datastore/image/info"

BOUNDARY_GROUPS = {
    "browser": [  # browser: foreign origins, DNS rebinding, proxies
        ("origin-read-datastore", ("GET", "/datastore/?output=all", "none", None, EVIL), 403, ["web origin"]),
        ("origin-read-report", ("GET", f"/datastore/label?label={PNG_ID}&tag=final", "none", None, EVIL), 403,
         ["web origin"]),
        ("origin-preflight-put", ("OPTIONS", "/datastore/image", "none", None,
                                  {**EVIL, "Access-Control-Request-Method": "PUT"}), 403, ["web origin"]),
        ("origin-preflight-delete", ("OPTIONS", f"/datastore/image?id={PNG_ID}", "none", None,
                                     {**EVIL, "Access-Control-Request-Method": "DELETE"}), 403, ["web origin"]),
        ("origin-delete-image", ("DELETE", f"/datastore/image?id={PNG_ID}", "none", None, EVIL), 403, ["web origin"]),
        ("origin-form-post-train", ("POST", "/train/medkit_cxr", "form", {"x": "1"}, EVIL), 403, ["web origin"]),
        ("origin-null", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "none", None, {"Origin": "null"}), 403,
         ["web origin"]),
        ("origin-other-local-port", ("GET", "/info/", "none", None, {"Origin": "http://localhost:3000"}), 403,
         ["web origin"]),
        ("fetch-cross-site-no-origin", ("GET", "/datastore/?output=all", "none", None,
                                        {"Sec-Fetch-Site": "cross-site"}),
         403, ["web origin"]),
        ("dns-rebinding-host", ("GET", "/datastore/?output=all", "none", None, {"Host": "evil.example:8000"}), 403,
         ["Host 'evil.example'"]),
        ("x-forwarded-for-loopback", ("GET", "/info/", "none", None, {"X-Forwarded-For": "127.0.0.1"}), 403,
         ["X-Forwarded-For".lower()]),
        ("forwarded-header", ("GET", "/info/", "none", None, {"Forwarded": "for=127.0.0.1"}), 403, ["forwarded"]),
        ("x-real-ip", ("GET", "/info/", "none", None, {"X-Real-IP": "203.0.113.7"}), 403, ["x-real-ip"]),
    ],
    "endpoints": [  # MONAI Label endpoints MedKit does not use: off by default
        ("session-tar-slip", ("PUT", "/session/?uncompress=true", "field", ("files", "tar_slip"), {}), 403,
         ["enable_endpoints sessions"]),
        ("model-upload", ("PUT", "/model/medkit_cxr", "field", ("file", "weights"), {}), 403,
         ["enable_endpoints model"]),
        ("model-download", ("GET", "/model/medkit_cxr", "none", None, {}), 403, ["enable_endpoints model"]),
        ("logs", ("GET", "/logs/?lines=100", "none", None, {}), 403, ["enable_endpoints logs"]),
        ("dataset-zip", ("GET", "/datastore/dataset", "none", None, {}), 403, ["enable_endpoints dataset"]),
        ("proxy-dicom", ("GET", "/proxy/dicom/qido/studies", "none", None, {}), 403, ["enable_endpoints proxy"]),
    ],
    "files": [  # files the client names
        ("params-image-server-path", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form",
                                      {"params": '{"image": "/etc/hostname"}'}, {}), 400,
         ["unknown infer param", "image"]),
        ("params-image-other-study", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form",
                                      {"params": json.dumps({"image": PNG2_ID})}, {}), 400, ["unknown infer param"]),
        ("nrrd-detached-passwd", ("POST", CT, "upload", "nrrd_detached", {}), 400, ["detached data file"]),
        ("mha-detached-dev-zero", ("POST", CT, "upload", "mha_detached", {}), 400, ["detached data file"]),
        ("nrrd-detached-to-datastore", ("PUT", "/datastore/image?image=detached1", "upload", "nrrd_detached", {}), 400,
         ["detached data file"]),
    ],
    "bombs": [  # decompression and geometry bombs
        ("png-30000x30000", ("POST", CXR, "upload", "png_30000", {}), 400, ["max_image_pixels"]),
        ("jpeg-60000x60000", ("POST", CXR, "upload", "jpeg_60000", {}), 400, ["max_image_pixels"]),
        ("dicom-20000x20000", ("POST", CXR, "upload", "dicom_20000", {}), 400, ["max_image_pixels"]),
        ("deflate-bomb-1.1gib", ("POST", CXR, "upload", "deflate_bomb", {}), 400, ["max_decompressed_mb"]),
        ("nifti-1024x1024x512", ("POST", CT, "upload", "nifti_1024", {}), 400, ["max_volume_voxels"]),
        ("nrrd-100000-cubed-to-datastore", ("PUT", "/datastore/image?image=huge1", "upload", "nrrd_100000", {}), 400,
         ["max_volume_voxels"]),
        ("ct-100mm-spacing-grid", ("POST", CT, "upload", "ct_100mm", {}), 400, ["max_grid_voxels"]),
        ("device-cpu-1", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form", {"params": '{"device": "cpu:1"}'}, {}),
         400, ["not a device of this server"]),
        ("device-meta", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form", {"params": '{"device": "meta"}'}, {}),
         400,
         ["not a device of this server"]),
    ],
    "integrity": [  # data loss and integrity
        ("replace-reported-image", ("PUT", f"/datastore/image?image={PNG_ID}", "upload", "other_png", {}), 409,
         ["already exists"]),
        ("report-with-nan", ("PUT", f"/datastore/label?image={PNG2_ID}", "label", "nan_report", {}), 400, ["NaN"]),
        ("mask-unreadable", ("PUT", f"/datastore/label?image={CT_ID}&tag=organs", "label", "mask_unreadable", {}), 400,
         ["cannot read"]),
        ("mask-wrong-grid", ("PUT", f"/datastore/label?image={CT_ID}&tag=organs", "label", "mask_wrong_grid", {}), 400,
         ["does not match the image"]),
        ("mask-on-radiograph", ("PUT", f"/datastore/label?image={PNG2_ID}&tag=organs", "label", "mask_wrong_grid", {}),
         400, ["2D image"]),
        ("ct-zero-spacing", ("POST", CT, "upload", "ct_zero_spacing", {}), 400, ["voxel spacing"]),
    ],
    "errors": [  # client mistakes that were 500s
        ("params-deep-nesting", ("POST", f"/infer/medkit_cxr?image={PNG_ID}", "form",
                                 {"params": "[" * 100_000 + "]" * 100_000}, {}), 400, ["nested too deeply"]),
        ("train-body-deep-nesting", ("POST", "/train/medkit_cxr", "raw", "[" * 100_000 + "]" * 100_000, {}), 400,
         ["error parsing the body"]),
        ("image-info-not-object", ("PUT", f"{INFO}?image={PNG_ID}", "form", {"info": "[1, 2]"}, {}), 400,
         ["info must be a JSON object"]),
        ("cxr-output-image", ("POST", f"/infer/medkit_cxr?image={PNG_ID}&output=image", "none", None, {}), 400,
         ["no label image"]),
        ("cxr-output-dicom-seg", ("POST", f"/infer/medkit_cxr?image={PNG_ID}&output=dicom_seg", "none", None, {}), 400,
         ["dicom_seg is not supported"]),
        ("train-all-bad-option", ("POST", "/train/", "json", {"medkit_cxr": {"max_epochs": "many"}}, {}), 400,
         ["medkit_cxr", "max_epochs"]),
        ("newline-in-logged-params", ("PUT", f"/datastore/label?image={PNG2_ID}", "label_form",
                                      ("broken_json", {"params": '{"note":\n"FORGED log line"}'}), {}), 400,
         ["not valid JSON"]),
    ],
}
BOUNDARY_CASES = [case for cases in BOUNDARY_GROUPS.values() for case in cases]
