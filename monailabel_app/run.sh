#!/usr/bin/env bash
# Start the MedKit MONAI Label server on 127.0.0.1, print one generated report, keep serving.
# Usage: monailabel_app/run.sh [STUDIES] [PORT]
#   STUDIES: a study folder or a DICOMweb URL (default: monailabel_app/samples); PORT: default 8000.
#   MEDKIT_IMAGE=<id> picks the study to report (default: the first one); extra `--conf KEY VALUE`
#   options go in MEDKIT_CONF, e.g. MEDKIT_CONF="--conf models medkit_cxr". Ctrl+C stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES="${1:-monailabel_app/samples}"
PORT="${2:-8000}"
PY="${MEDKIT_VENV:-.venv}/bin/python"
# shellcheck disable=SC2086  # MEDKIT_CONF is a list of options
"$PY" -m monailabel.main start_server --app monailabel_app --studies "$STUDIES" \
    --host 127.0.0.1 --port "$PORT" ${MEDKIT_CONF:-} &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' INT TERM EXIT
"$PY" - "$PORT" "${MEDKIT_IMAGE:-}" "$SERVER" <<'PYEOF'
import json, os, sys, time, urllib.error, urllib.request

from medkit.core.files import VOLUME_SUFFIXES

port, image, server = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = f"http://127.0.0.1:{port}"

def call(path, method="GET"):
    with urllib.request.urlopen(urllib.request.Request(base + path, method=method), timeout=900) as r:
        return json.load(r)

while True:
    try:
        call("/info/")
        break
    except (urllib.error.URLError, ConnectionError):
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            sys.exit("monailabel server exited during start-up (see the log above)")
        time.sleep(2)
path = ""
if not image:
    first = call("/activelearning/first", "POST")
    image, path = first.get("id"), str(first.get("path", ""))
    if not image:
        sys.exit("no study to report in the datastore")
# a volume file is a CT study; everything else goes to the chest X-ray model
model = "medkit_ct" if path.lower().endswith(VOLUME_SUFFIXES) else "medkit_cxr"
try:
    print(json.dumps(call(f"/infer/{model}?image={image}&output=json", "POST"), indent=2))
except urllib.error.HTTPError as e:
    sys.exit(f"/infer/{model}?image={image}: HTTP {e.code}: {e.read().decode(errors='replace')}")
print(f"\nMedKit MONAI Label server on {base} (study {image} reported above); Ctrl+C stops it", flush=True)
PYEOF
wait "$SERVER"
