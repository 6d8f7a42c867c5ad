#!/usr/bin/env bash
# Sampling latency of two source trees side by side on one GPU, e.g. before and after a
# refactor:
#   benchmarks/compare_trees.sh OLD_SRC NEW_SRC OUT.parquet [variant bench sample options]
# OLD_SRC/NEW_SRC are `src` folders (e.g. from `git archive REV src | tar -x -C old`). The
# runs alternate old, new, old, new, so clock and thermal drift fall on both trees alike;
# benchmarks/compare_trees.py joins the four row sets into OUT with a `tree` and `round`.
# OLD_COMMIT / NEW_COMMIT, when set, are the commits the rows record (VARIANT_GIT_COMMIT).
set -euo pipefail
OLD=$1 NEW=$2 OUT=$3
shift 3
TMP=$(mktemp -d)
for round in 1 2; do
    for tree in old new; do
        src=$OLD commit=${OLD_COMMIT:-}
        [ "$tree" = new ] && src=$NEW commit=${NEW_COMMIT:-}
        PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}" VARIANT_GIT_COMMIT="${commit:-${VARIANT_GIT_COMMIT:-}}" \
            python3 -m variant.cli bench sample "$@" --out "$TMP/${tree}_$round.parquet"
    done
done
PYTHONPATH="$NEW${PYTHONPATH:+:$PYTHONPATH}" python3 "$(dirname "$0")/compare_trees.py" "$TMP" "$OUT"
