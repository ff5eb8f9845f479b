#!/bin/bash
# Submits `tweedie eval` as N Slurm array tasks (tools/slurm/eval.sbatch, one
# shard each) and an `eval-merge` job that runs when all of them succeeded.
# Usage: tools/slurm/submit.sh N EVAL-ARGS...   (EVAL-ARGS include --out DIR)
# Prints the two job ids. Site options go through sbatch's environment
# (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ...); TWEEDIE names
# the binary the jobs run (default: tweedie on their PATH).
set -euo pipefail
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 N EVAL-ARGS... (N shards, a positive number; EVAL-ARGS with --out DIR)" >&2
    exit 2
fi
n=$1
shift
out=
prev=
for a in "$@"; do
    case $a in
        --out=*) out=${a#--out=} ;;
    esac
    if [ "$prev" = --out ]; then out=$a; fi
    prev=$a
done
if [ -z "$out" ]; then
    echo "$0: the eval arguments need --out DIR (the shards' and the merge's directory)" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
tweedie=${TWEEDIE:-tweedie}
array=$(sbatch --parsable --array="0-$((n - 1))" "$here/eval.sbatch" "$@")
array=${array%%;*}
merge=$(sbatch --parsable --job-name=tweedie-eval-merge --dependency="afterok:$array" \
    --output="tweedie-eval-merge-%j.log" --wrap "$(printf '%q eval-merge %q' "$tweedie" "$out")")
echo "array job $array ($n shards), merge job ${merge%%;*} (results in $out)"
