"""The reliability cases, as data: the tests run them and the summary table counts them.

A server case is ``(id, request, expected status, words the message must contain)`` where the
request is ``(method, path, kind, payload)``: kind ``upload`` sends ``payload`` (a bad-input
name) as the form file ``file``; ``label`` sends it as the form file ``label``; ``json`` posts
JSON; ``form`` posts form fields; ``declared`` sends only headers declaring ``payload`` bytes.
"""

from __future__ import annotations

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
