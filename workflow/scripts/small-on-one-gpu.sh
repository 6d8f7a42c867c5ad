#!/usr/bin/env bash
# The small profile (docs/SMALL_SCALE.md) on one GPU: the DAG up to Tables 1 and 8,
# Figure 2a and every quality row, then the verdict on each of the paper's claims.
#   workflow/scripts/small-on-one-gpu.sh [SECONDS]
# SECONDS > 0 stops Snakemake after that long (a run of the same command resumes it).
# JOBS (default 12) jobs share the GPU; the models are small enough for all of them.
set -euo pipefail
limit=${1:-0}
targets=(results/small/tables/table1.csv results/small/tables/table8.csv figures/pareto.pdf
         results/small/quality.parquet)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}   # JOBS processes share the node's cores
cmd=(python3 -m snakemake "${targets[@]}" -c "${JOBS:-12}" --keep-going --rerun-incomplete
     --config profile=small)
if [ "$limit" -gt 0 ]; then timeout --signal=INT "$limit" "${cmd[@]}" || true; else "${cmd[@]}"; fi
test -f results/small/quality.parquet || { echo "small: the DAG has not finished; run this again" >&2; exit 3; }
variant findings --profile small --quality results/small/quality.parquet --out results/small/findings.md
