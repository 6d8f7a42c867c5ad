#!/usr/bin/env bash
# The small profile (docs/SMALL_SCALE.md) on one GPU: the DAG up to Tables 1 and 8,
# Figure 2a and every quality row, then the verdict on each of the paper's claims.
#   workflow/scripts/small-on-one-gpu.sh [SECONDS]
# SECONDS > 0 stops Snakemake after that long (a run of the same command resumes it).
# JOBS jobs share the GPU; by default as many as it holds trainings (~18 GiB each at
# batch 250: 4 on an 80 GB H100, 7 on an H200).
set -euo pipefail
limit=${1:-0}
targets=(results/small/tables/table1.csv results/small/tables/table8.csv figures/pareto.pdf
         results/small/quality.parquet)
mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
jobs=${JOBS:-$(( mib / 20000 > 0 ? mib / 20000 : 1 ))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}   # JOBS processes share the node's cores
cmd=(python3 -m snakemake "${targets[@]}" -c "$jobs" --keep-going --rerun-incomplete
     --config profile=small)
if [ "$limit" -gt 0 ]; then timeout --signal=INT "$limit" "${cmd[@]}" || true; else "${cmd[@]}"; fi
test -f results/small/quality.parquet || { echo "small: the DAG has not finished; run this again" >&2; exit 3; }
variant findings --profile small --quality results/small/quality.parquet --out results/small/findings.md
