"""The reliability table: printed at the end of every run of tests/reliability and kept, word for
word, in monailabel_app/README.md (``test_readme_table_matches`` checks that it is)."""

from __future__ import annotations

from tests.reliability.cases import BOUNDARY_GROUPS, CLI_CASES, FAULTS, LOAD_CI, RSS_BUDGET_MIB, SERVER_CASES


def reliability_table() -> str:
    n_4xx, g = len(SERVER_CASES), BOUNDARY_GROUPS
    load = f"{LOAD_CI['clients']} concurrent clients x {LOAD_CI['requests_per_client']} infer requests (tiny model)"
    rows = [
        ("Bad input, server", f"{n_4xx} cases (uploads, ids, params, labels, other endpoints)",
         "each a 4xx whose message names the problem; after each, `/info` answers, a valid infer gives the "
         "same report as before, and the saved reports are byte-identical"),
        ("Bad input, CLI", f"{len(CLI_CASES)} cases (`medkit generate`)",
         "each exits 2 with one line naming the file and the problem; no traceback"),
        ("Load (CI)", load,
         "0 errors; every result identical to the sequential one; no model reload; RSS growth under 300 MiB"),
        ("Crash", f"{len(FAULTS)} SIGKILLs: " + "; ".join(name for name, _ in FAULTS),
         "after restart every acknowledged report is intact (history kept), the datastore index is valid JSON, "
         "the served model is the last promoted one, the cut run is INTERRUPTED, and a new run trains and promotes"),
        ("Access", "default start (no `--host`), remote client; 2 GiB declared and streamed over-limit uploads; "
                   "patient name in an upload",
         "remote client refused (403); uploads refused (413) before they are read; no patient name or "
         "upload file name in the logs"),
        ("Browser and proxies", f"{len(g['browser'])} cases: a foreign `Origin` on reads, writes and CORS preflights, "
                                "`Origin: null`, another local port, `Sec-Fetch-Site: cross-site`, a DNS-rebinding "
                                "`Host`, `X-Forwarded-For` / `Forwarded` / `X-Real-IP`",
         "each 403 naming the rule, no CORS grant; an origin in `--conf cors_origins` gets CORS, others do not"),
        ("Unused endpoints", f"{len(g['endpoints'])} cases: sessions (tar slip), model upload and download, logs, "
                             "dataset ZIP, DICOM proxy; then the same with sessions and dataset switched on",
         "403 naming `--conf enable_endpoints`; switched on: `../`, absolute and link members and a 64 MiB zip "
         "bomb refused (400), nothing written outside, the dataset ZIP removed after download"),
        ("Files and bombs", f"{len(g['files']) + len(g['bombs'])} cases: a param naming a server file or another "
                            "study, NRRD / MetaImage headers naming `/etc/passwd` and `/dev/zero`, PNG / JPEG / "
                            "DICOM claiming 30000-60000 px sides, a 1.1 GiB deflate bomb, NIfTI and NRRD claiming "
                            "0.5 G and 10^15 voxels, a 100 mm grid, `cpu:1` and `meta` devices",
         "each 400 naming the limit (`--conf max_image_pixels` ...) before decoding; the server's peak RSS grew "
         f"under {RSS_BUDGET_MIB} MiB over all of them"),
        ("Integrity and errors", f"{len(g['integrity']) + len(g['errors'])} cases: replacing an image, NaN in a "
                                 "report, unreadable / wrong-grid / 2D masks, zero spacing, deep JSON, non-object "
                                 "info, `output=image` / `dicom_seg` for a chest X-ray, `POST /train/` with a bad "
                                 "option, a newline in logged params",
         "each 4xx naming the problem (409 for an existing image; the same bytes again are a no-op); no server "
         "path in any answer; no forged log line; a kept-alive connection keeps working"),
        ("Read as shown", "EXIF-rotated, palette and 16-bit PNG; JPEG-LS, RLE and JPEG 2000 DICOM; NIfTI-2",
         "the PNGs give the plain image's findings; the DICOMs are decoded; NIfTI-2 gives the NIfTI-1 report"),
    ]
    lines = ["| area | tried | held |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reliability_table())
