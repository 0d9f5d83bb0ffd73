# Sourced by every chapter's training script: the demo tier, the device and threads asked for (DEVICE, THREADS,
# PYTHON), the repository root as the working directory, and `train NAME RECIPE OPTIONS...`, which trains a
# checkpoint unless it exists (an interrupted run resumes from runs/NAME/state.pt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MRTUTOR_MODE=demo
device=${DEVICE:+--device $DEVICE}
threads=${THREADS:+--threads $THREADS}
[ -n "${THREADS:-}" ] && export OMP_NUM_THREADS=$THREADS
python=${PYTHON:-.venv/bin/python}

train() {  # train NAME RECIPE OPTIONS...
  [ -f "checkpoints/$1.pt" ] && return
  "$python" -m mrtutor.train "$2" --name "$1" "${@:3}"
}
