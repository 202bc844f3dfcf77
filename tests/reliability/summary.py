"""The reliability table: printed at the end of every run of tests/reliability and kept, word for
word, in monailabel_app/README.md (``test_readme_table_matches`` checks that it is)."""

from __future__ import annotations

from tests.reliability.cases import CLI_CASES, FAULTS, LOAD_CI, SERVER_CASES


def reliability_table() -> str:
    n_4xx = len(SERVER_CASES)
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
    ]
    lines = ["| area | tried | held |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reliability_table())
