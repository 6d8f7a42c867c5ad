# Stage 2. Tokenise the training set once (the VQVAE is frozen), then train one supernet
# per run: progressive (Algorithm 1), fixed ratio p, or skip-all-scales.

rule tokenize:
    input: vae=VAE, data=TRAIN_DATA
    output: f"{A}/tokens/train/index.json"
    params: data=TRAIN_DATA or P["data"].get("root"), knobs=knobs("data", "model"), tokenizer=revisions.TOKENIZER
    log: f"{LOGS}/tokenize.log"
    resources: **resources("tokenize")
    shell: "{PY} tokenize {PROFILE_ARG} --vae {input.vae} --data {params.data} "
           "--out {A}/tokens/train > {log} 2>&1"


def launcher(wildcards, resources):
    """One process per GPU through torchrun on a multi-GPU node; plain otherwise."""
    n = int(getattr(resources, "gpu", 0) or 0)
    return f"torchrun --standalone --nproc-per-node={n} -- $(command -v {PY})" if n > 1 else PY


def snapshot_epochs(wildcards):
    """The epochs after which the run keeps its weights too (Figures 2c and 7; variant.dag)."""
    epochs = dag.snapshot_epochs(P, wildcards.run)
    return f"--snapshot-epochs {' '.join(map(str, epochs))}" if epochs else ""


rule train:
    input: init=VAR, vae=VAE, tokens=f"{A}/tokens/train/index.json"
    output: ckpt=f"{A}/checkpoints/{{run}}.pth", log=f"{R}/train/{{run}}.parquet",
            snapshots=directory(f"{A}/snapshots/{{run}}")   # e<epoch>.pth; empty for most runs
    wildcard_constraints: run=r"progressive_d\d+|fixed_p[0-9.]+_d\d+|skipall_d\d+"
    params: launch=launcher, knobs=knobs("model", "train"), snapshots=snapshot_epochs
    log: f"{LOGS}/train/{{run}}.log"
    resources: **resources("train")
    shell: "{params.launch} train {PROFILE_ARG} --run {wildcards.run} --init {input.init} "
           "--vae {input.vae} --tokens {A}/tokens/train --out {output.ckpt} --log {output.log} "
           "--snapshot-dir {output.snapshots} {params.snapshots} "
           "--state-dir {A}/train/{wildcards.run}/state > {log} 2>&1"
