#!/usr/bin/env bash
# A small profile (docs/SMALL_SCALE.md) on one GPU: the DAG up to Tables 1 and 8,
# Figure 2a, every quality row and the verdict on each of the paper's claims.
#   [PROFILE=small|small_hard] workflow/scripts/small-on-one-gpu.sh [SECONDS]
#   PROFILE=small_hard_d24 TARGETS=table1 workflow/scripts/small-on-one-gpu.sh [SECONDS]
#   PROFILE=small_hard RUNS="fixed_p1_d6 skipall_d6" workflow/scripts/small-on-one-gpu.sh [SECONDS]
# SECONDS > 0 stops Snakemake after that long (a run of the same command resumes it).
# JOBS jobs share the GPU. small: by default as many as it holds trainings, GIB_PER_JOB
# each (~18 GiB at batch 250, so 4 on an 80 GB H100, 7 on an H200). small_hard and its
# depth arm: two, of which at most one a training, since their trainings fill the GPU
# alone and run slower side by side (docs/SMALL_SCALE.md); the other job samples or
# scores a finished training meanwhile.
set -euo pipefail
limit=${1:-0}
profile=${PROFILE:-small}
R=results/$profile
if [ -n "${RUNS:-}" ]; then   # RUNS="progressive_d6 fixed_p1_d6_s1": those trainings' rows, snapshots' too
    findings=
    mapfile -t targets < <(python3 -c "
from variant import dag; from variant.config import load_params
P, runs = load_params('params.yaml', '$profile'), '$RUNS'.split()
print(*(dag.metric_row(P, r, c) for r, cs in dag.runs_and_configs(P).items() if r.split('@')[0] in runs for c in cs), sep='\n')")
elif [ "${TARGETS:-all}" = table1 ]; then   # findings.md would ask for every row of the profile
    findings=$R/findings_table1.md
    targets=("$R/tables/table1.csv" "$findings")
else
    findings=$R/findings.md
    targets=("$R/tables/table1.csv" "$R/tables/table8.csv" "$R/figures/pareto.pdf" "$R/quality.parquet"
             "$findings")
fi
if [ "$profile" = small ]; then
    per_job=${GIB_PER_JOB:-20}
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    jobs=${JOBS:-$(( mib / (per_job * 1000) > 0 ? mib / (per_job * 1000) : 1 ))}
    one_training=()
else
    jobs=${JOBS:-2}
    one_training=(--resources train_slot=1 --set-resources train:train_slot=1)
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}   # JOBS processes share the node's cores
end=$(( SECONDS + limit ))
dag() {   # snakemake on the targets given, within what is left of the limit; exits 3 if unfinished
    local rc=0 cmd=(python3 -m snakemake "$@" -c "$jobs" --keep-going --rerun-incomplete
                    "${one_training[@]}" --config "profile=$profile")
    if [ "$limit" -gt 0 ]; then
        if [ "$end" -gt "$SECONDS" ]; then timeout --signal=INT $(( end - SECONDS )) "${cmd[@]}" || rc=$?; else rc=124; fi
    else "${cmd[@]}" || rc=$?; fi
    if [ "$rc" -ne 0 ]; then
        echo "$profile: the DAG has not finished (snakemake exit $rc): run this again to resume, or see its errors above" >&2
        exit 3
    fi
}
# The committed rows were made on the base recorded in results/<profile>/fetch.json (the
# pre-trained VQVAE and VAR, the feature extractor); a base lost with its machine is
# restored from a copy or pre-trained again, and the DAG goes on only on the same bytes
# (variant check-base says which record differs).
read -ra base < <(python3 -c "from variant import dag; from variant.config import load_params
P = load_params('params.yaml', '$profile'); print(dag.fetch_record(P), dag.feature_extractor(P))")
dag "${base[@]}"
variant check-base --profile "$profile" >&2 || exit 4
dag "${targets[@]}"
[ -z "$findings" ] || cat "$findings"
