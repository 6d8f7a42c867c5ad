#!/usr/bin/env bash
# The paper profile's dress rehearsal on one GPU: every stage of the real DAG (the same
# Snakefile, rules and commands) on files of the paper's true shapes, with only the
# counts cut (params profile `rehearsal`). What each command cost goes to
# results/rehearsal/stages.parquet (variant.util.resources).
#   workflow/scripts/rehearse.sh [WORKDIR]     (default .rehearsal/, about 60 GB)
# Steps: stand-in files (`variant stand-ins`: random weights of VAR-d30/d16 and the VQVAE
# in the released layout, 1,000 ImageNet-layout class folders of JPEGs, an ADM-layout
# reference batch, torch-fidelity's Inception with random weights); the progressive run,
# sent SIGTERM (as SLURM pre-empts) once it has trained a few steps, then resumed; the rest
# of the DAG. Only one training at a time (72 GiB each, and each holds a 24 GB resume state
# on disk); see gpu_gib below.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-.rehearsal}
mkdir -p "$work"
work=$(cd "$work" && pwd)
data=$work/imagenet-train
export TORCH_HOME=$work/torch-home                         # the Inception stand-in's hub cache
export VARIANT_RESOURCE_LOG=$work/stages.jsonl    # in the workdir: a rerun there appends to it
# GPU jobs share the GPU by the GiB they may take (gpu_gib): a training takes it all, a
# sample job at batch 125 half, evaluation's Inception a few GiB (0 here)
smk=(python3 -m snakemake --cores "${CORES:-16}" --resources gpu=4 gpu_gib="${GPU_GIB:-136}"
     --set-resources train:gpu_gib=136 tokenize:gpu_gib=136 sample_shard:gpu_gib=68
     profile:gpu_gib=68 report_fig7_evolution:gpu_gib=34
     --keep-going --rerun-incomplete)   # flags without values last: the targets follow
cfg=(--config profile=rehearsal data_root="$data")   # after the targets: --config takes every word
step() { echo "== $(date -u +%H:%M:%S) $*"; }

step "stand-in files"
VARIANT_DATA_ROOT=$data variant stand-ins --profile rehearsal --data-root "$data" --torch-home "$TORCH_HOME" \
    --reference-images "${REFERENCE_IMAGES:-1000}"

# the run to interrupt: Figure 7's progressive run, whose snapshots must survive the resume
read -r run ckpt < <(VARIANT_DATA_ROOT=$data python3 -c "from variant import dag, names
from variant.config import load_params
P = load_params(profile='rehearsal'); run = names.progressive(dag.fig7_depth(P))
print(run, dag.checkpoint(P, run))")
log=logs/rehearsal/train/$run.log
interrupted=$work/.interrupted-$run    # once: a rerun of this script resumes, never interrupts again
if [ ! -f "$ckpt" ] && [ ! -f "$interrupted" ]; then
    step "$run: train until a few steps are done, then SIGTERM it"
    "${smk[@]}" "$ckpt" "${cfg[@]}" > "$work/snakemake-$run.log" 2>&1 &
    smk_pid=$!
    until grep -qE "$run: step ([6-9]|[1-9][0-9]+)/" "$log" 2>/dev/null; do
        kill -0 "$smk_pid" 2>/dev/null || { echo "$run ended before it could be interrupted" >&2; break; }
        sleep 2
    done
    # torchrun and its worker (not the job's shell), as SLURM signals a pre-empted job step
    pkill -TERM -f -- "bin/variant train .*--run $run( |\$)" || true
    wait "$smk_pid" || true
    touch "$interrupted"
    grep -E "interrupted|state saved|Error" "$log" | tail -3 || true
    step "$run: resume"
fi

step "the whole DAG"
"${smk[@]}" all "${cfg[@]}" 2>&1 | tee "$work/snakemake-all.log" | grep -E "^(rule|Finished|Error|Complete)|error" || true

step "stages.parquet"
variant resources "$VARIANT_RESOURCE_LOG" --out results/rehearsal/stages.parquet
