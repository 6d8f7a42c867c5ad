#!/usr/bin/env bash
# benchmarks/sampler_fid_parity.py from a clean checkout on one GPU: the profile's data,
# pre-trained VQVAE and VAR, feature extractor and reference statistics (each skipped
# when present, so a second call resumes), then the parity rows.
#   benchmarks/run_sampler_fid_parity.sh [PROFILE] [OUT] [sampler_fid_parity.py options, e.g. --modes ...]
set -euo pipefail
P=${1:-small}
OUT=${2:-results/benchmarks/sampler_fid_parity.parquet}
shift $(( $# < 2 ? $# : 2 ))
A=artifacts/$P
variant() { python3 -m variant.cli "$@"; }
for split in train eval; do
    [ -d "$A/data/$split" ] || variant make-data --profile "$P" --split "$split" --out "$A/data/$split"
done
pids=()
if [ ! -f "$A/pretrained/var.pth" ]; then
    variant fetch --profile "$P" --out-dir "$A/pretrained" --data "$A/data/train" & pids+=($!)
fi
if [ ! -f "$A/feature_extractor.pth" ]; then
    variant train-extractor --profile "$P" --data "$A/data/train" --out "$A/feature_extractor.pth" & pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid"; done
[ -f "$A/reference/stats.npz" ] || variant reference-stats --profile "$P" --reference "$A/data/eval" \
    --weights "$A/feature_extractor.pth" --out "$A/reference/stats.npz"
python3 benchmarks/sampler_fid_parity.py --profile "$P" --var "$A/pretrained/var.pth" \
    --vae "$A/pretrained/vae.pth" --stats "$A/reference/stats.npz" --weights "$A/feature_extractor.pth" \
    --out "$OUT" "$@"
