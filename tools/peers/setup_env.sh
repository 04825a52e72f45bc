#!/usr/bin/env bash
# Create .venv-peers: MediaPipe Tasks and onnxruntime, the runtimes `shelfsight bench --compare`
# measures against. They need numpy 2 / protobuf 7 and cannot share the main .venv.
#
#   bash tools/peers/setup_env.sh            # creates <repo>/.venv-peers
#   PYTHON=python3.11 PEERS_VENV=/opt/peers bash tools/peers/setup_env.sh
#
# Then run the probes with that interpreter, e.g.
#   .venv-peers/bin/python tools/peers/mediapipe_probe.py model.tflite image.jpg
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3.11}"
venv="${PEERS_VENV:-$root/.venv-peers}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup_env.sh: $python not found; set PYTHON to a Python 3.11 interpreter" >&2
    exit 2
fi
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$version" != "3.11" ]; then
    echo "setup_env.sh: $python is Python $version, the pins in requirements.txt are for 3.11" >&2
    exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --requirement "$here/requirements.txt"
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print("peers ready:", ", ".join(f"{name} {version(name)}" for name in ("mediapipe", "onnxruntime", "numpy")))
PY
