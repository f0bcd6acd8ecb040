#!/usr/bin/env bash
# queue.sh: train the runs of queue.txt one after another, each from where it
# was handed over, and hand the one training over every 30 minutes. Start it
# first thing in a session, in the background:
#     nohup bash runs-in-progress/queue.sh > /work/queue.log 2>&1 &
# RUNS (/work/runs), ARCHIVE (../shared/data/cifar10-jpeg.tar.gz, given to
# --data: train checks its members and unpacks it once into DATA,
# /work/data), CODE (/work/runcode: a checkout of HEAD of its own, so that
# edits in the work tree cannot reach a run) and QUEUE (queue.txt) may be
# set. Finished runs (in runs-finished/, or with a metrics.json in RUNS) are
# skipped; the queue stops at the first run that does not finish.
# All of it is one block, read before it runs: bash reads a script as it
# goes, and this one runs for days while the work tree changes.
{
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
runs=${RUNS:-/work/runs} data=${DATA:-/work/data} code=${CODE:-/work/runcode}
archive=${ARCHIVE:-$(dirname "$repo")/shared/data/cifar10-jpeg.tar.gz}
queue=${QUEUE:-$here/queue.txt} python=$repo/.venv/bin/python
mkdir -p "$runs"
if kill -0 "$(cat "$runs/current.pid" 2>/dev/null)" 2>/dev/null; then
    echo "a run trains already (pid $(cat "$runs/current.pid"), $(cat "$runs/current.name")): one at a time" >&2
    exit 1
fi
machine=$(cd "$repo/benchmarks" && "$python" -c 'import machine
print(machine.cpu_name())' 2>/dev/null) || {
    echo "$python cannot run benchmarks/machine.py: set up .venv as README.md says" >&2
    exit 1
}
git -C "$repo" worktree remove --force "$code" 2>/dev/null
git -C "$repo" worktree add -q --detach "$code" HEAD || exit 1
commit=$(git -C "$code" rev-parse --short HEAD)
# what the run's 3x3 convolutions will be, by the rule the ops follow
convolutions=$(cd "$code" && "$python" -c 'from gcm_lasagne import fastconv
print("Winograd stride-1 3x3 convolutions" if fastconv.winograd_enabled()
      else "direct convolutions (GCM_WINOGRAD=0)")' 2>/dev/null) || {
    echo "$python cannot import gcm_lasagne from the checkout $code: set up .venv as README.md says" >&2
    exit 1
}
epoch_of() {  # the last finished epoch in a checkpoint, 0 without one
    [ -f "$1" ] || { echo 0; return; }
    "$python" -c "import numpy, sys; print(int(numpy.load(sys.argv[1], allow_pickle=False)['epoch']))" "$1"
}

(while sleep 1800; do
    bash "$here/handover.sh" "$(cat "$runs/current.name")" "$runs"
 done) >> "$runs/handover.log" 2>&1 &
handover_loop=$!
trap 'kill $handover_loop 2>/dev/null' EXIT

grep -v '^#' "$queue" | while IFS='|' read -r name options estimate; do
    name=$(echo $name) options=$(echo $options) estimate=$(echo $estimate)
    [ -n "$name" ] || continue
    if [ -d "$repo/runs-finished/$name" ] || [ -f "$runs/$name/metrics.json" ]; then
        continue
    fi
    # a run handed over on another machine; on this one RUNS/NAME, when
    # there, is at least as far
    if [ ! -d "$runs/$name" ] && [ -f "$here/$name/checkpoint.npz" ]; then
        mkdir -p "$runs/$name" && cp "$here/$name/checkpoint.npz" \
            "$here/$name/config.json" "$here/$name/log.csv" "$runs/$name/"
    fi
    notes=$here/$name/NOTES.md
    if [ ! -f "$notes" ]; then
        mkdir -p "$here/$name"
        printf '# %s\n\n    run_cifar10.py train %s \\\n        --data %s --data-dir %s --out %s\n\n## Estimate before starting\n\n%s.\n\n## Where each epoch ran\n\n' \
            "$name" "$options" "$archive" "$data" "$runs/$name" "$estimate" > "$notes"
    fi
    epoch=$(epoch_of "$runs/$name/checkpoint.npz")
    echo "- $([ "$epoch" -gt 0 ] && echo "Resumed after epoch $epoch" || echo Started):" \
        "$(date -u '+%Y-%m-%d %H:%M') UTC on $machine, $convolutions," \
        "from a checkout of" \
        "commit $commit (queue.sh)." >> "$notes"
    echo "$name" > "$runs/current.name"
    (cd "$code" && exec "$python" run_cifar10.py train --auto-resume \
        --out "$runs/$name" --data "$archive" --data-dir "$data" $options) \
        > "$runs/$name.out" 2>&1 &
    echo $! > "$runs/current.pid"
    wait $!; status=$?
    bash "$here/handover.sh" "$name" "$runs" >> "$runs/handover.log" 2>&1
    if [ ! -f "$runs/$name/metrics.json" ]; then
        echo "$name stopped (exit $status) before its last epoch: the queue stops"
        exit 1
    fi
    echo "$name finished: export it as runs-in-progress/README.md says"
done
exit
}
