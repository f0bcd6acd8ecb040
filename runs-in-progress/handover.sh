#!/usr/bin/env bash
# handover.sh NAME [RUNS]: copy a training run's resumable state from
# RUNS/NAME (default /work/runs) into runs-in-progress/NAME and commit that
# folder alone. Retries while another git command holds the index.
set -euo pipefail
name=$1; runs=${2:-/work/runs}
here=$(cd "$(dirname "$0")" && pwd)
src=$runs/$name dst=$here/$name
mkdir -p "$dst"
# the checkpoint is replaced atomically after each epoch's log row: copy
# it first, then keep only log rows up to its epoch (a resume drops the
# others anyway)
cp "$src/checkpoint.npz" "$dst/checkpoint.npz.new"
epoch=$(cd "$here/.." && .venv/bin/python -c "import numpy, sys; print(int(numpy.load(sys.argv[1], allow_pickle=False)['epoch']))" "$dst/checkpoint.npz.new")
mv "$dst/checkpoint.npz.new" "$dst/checkpoint.npz"
cp "$src/config.json" "$dst/config.json"
awk -F, -v last="$epoch" 'NR == 1 || $1 <= last' "$src/log.csv" > "$dst/log.csv"
cd "$here/.."
for try in 1 2 3 4 5; do
    if git add -- "runs-in-progress/$name" &&
       git diff --cached --quiet -- "runs-in-progress/$name"; then
        echo "$name: nothing new since the last handover"; exit 0
    fi
    if
       git commit -q -m "runs-in-progress: $name at epoch $epoch (its checkpoint, log and notes)" \
           -- "runs-in-progress/$name"; then
        echo "handed over $name at epoch $epoch"; exit 0
    fi
    sleep 30
done
echo "handover of $name failed" >&2; exit 1
