#!/usr/bin/env bash
# Where one sample job's time goes, at the paper's shapes: random-weight VAR-d30 and VQVAE
# files (variant stand-ins' writer), then one 500-image shard job of the rehearsal profile
# under cProfile, three times (full network twice, d16 N=6 once), each with its resource row.
#   benchmarks/sample_job_profile.sh [OUTDIR]      (needs a GPU of 60 GB; about 2 minutes)
set -euo pipefail
out=${1:-results/benchmarks/sample_job_profile}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
export VARIANT_DATA_ROOT=$work/data VARIANT_RESOURCE_LOG=$out/rows.jsonl VARIANT_CACHE=$work/cache
python3 -c "import sys, torch; from pathlib import Path; from variant.config import load_params
from variant import standins
standins.released_models(load_params(profile='rehearsal'), Path(sys.argv[1]), torch.device('cuda'))" "$work"
for job in "full 0" "full 1" "d16_N6 0"; do
    set -- $job
    python3 -m cProfile -o "$out/$1-$2.prof" -m variant sample --profile rehearsal --var "$work/var_d30.pth" \
        --vae "$work/vae_ch160v4096z32.pth" --config "$1" --out "$work/s/$1.npz" --shards "$2"
    python3 -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(40)" \
        "$out/$1-$2.prof" > "$out/$1-$2.txt"
done
variant resources "$VARIANT_RESOURCE_LOG" --out "$out/rows.parquet"
