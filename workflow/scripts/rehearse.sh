#!/usr/bin/env bash
# The paper profile's dress rehearsal on one GPU: every stage of the real DAG (the same
# Snakefile, rules and commands) on files of the paper's true shapes, with only the
# counts cut (params profile `rehearsal`). What each command cost goes to
# results/rehearsal/stages.parquet (variant.util.resources).
#   workflow/scripts/rehearse.sh [WORKDIR]     (default .rehearsal/, about 60 GB)
# Steps: stand-in files (`variant stand-ins`: random weights of VAR-d30/d16 and the VQVAE
# in the released layout, 1,000 ImageNet-layout class folders of JPEGs, an ADM-layout
# reference batch, torch-fidelity's Inception with random weights); the progressive run,
# its worker sent SIGTERM (as SLURM pre-empts) once it has trained a few steps, then
# resumed; the rest of the DAG. One training at a time (73 GiB of GPU memory, and a
# 22.5 GiB resume state on disk each); see gpu_gib below.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-.rehearsal}
mkdir -p "$work"
work=$(cd "$work" && pwd)
data=$work/imagenet-train
export TORCH_HOME=$work/torch-home                         # the Inception stand-in's hub cache
export VARIANT_RESOURCE_LOG=$work/stages.jsonl    # in the workdir: a rerun there appends to it
# GPU jobs share the GPU by the GiB they reserve (gpu_gib, as measured on the H200): one
# training (63-73 GiB) at a time, beside it one sample job at batch 125 (43-52 GiB since
# the decode takes 32 images at a time), or two sample jobs; evaluation's Inception
# (7 GiB, counted 0) beside any of them
smk=(python3 -m snakemake --cores "${CORES:-16}" --resources gpu=4 gpu_gib="${GPU_GIB:-136}"
     --set-resources train:gpu_gib=76 tokenize:gpu_gib=58 sample_shard:gpu_gib=58
     profile:gpu_gib=50 report_fig7_evolution:gpu_gib=34
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
    # The worker only: torchrun, signalled too (as SLURM signals a whole job step), kills it
    # 30 s later, before a 22.5 GiB state is written on a 0.7 GiB/s disk, and torch 2.11
    # has no setting for that wait (README: the rehearsal). SIGNAL_TORCHRUN=1 signals both.
    pattern="bin/variant train .*--run $run( |\$)"
    for pid in $(pgrep -f -- "$pattern"); do
        if [ "${SIGNAL_TORCHRUN:-0}" = 1 ] || ! ps -o args= -p "$pid" | grep -q torchrun; then
            kill -TERM "$pid" || true
        fi
    done
    wait "$smk_pid" || true
    touch "$interrupted"
    cp "$log" "$work/$run-interrupted.log" 2>/dev/null || true   # the resumed job rewrites its log
    grep -E "saved in|stopped at|Error" "$log" | tail -3 || true
    step "$run: resume"
fi

step "the whole DAG"
"${smk[@]}" all "${cfg[@]}" 2>&1 | tee "$work/snakemake-all.log" | grep -E "^(rule|Finished|Error|Complete)|error" || true

step "stages.parquet"
variant resources "$VARIANT_RESOURCE_LOG" --out results/rehearsal/stages.parquet
