# Stage 2. Tokenise the training set once (the VQVAE is frozen), then train one supernet
# per run: progressive (Algorithm 1), fixed ratio p, or skip-all-scales.

rule tokenize:
    input: vae=VAE, data=TRAIN_DATA
    output: f"{TOKENS}/index.json"
    # data: the ImageNet path from --config data_root (via params data.root) in the paper
    # profile, user data reaching a shell: quoted like every other value.
    params: data=TRAIN_DATA or P["data"].get("root"), knobs=knobs("data", "model"), tokenizer=revisions.TOKENIZER,
            out=TOKENS
    log: f"{LOGS}/tokenize.log"
    resources: **resources("tokenize")
    shell: "{PY} tokenize {PROFILE_ARG:q} --vae {input.vae:q} --data {params.data:q} "
           "--out {params.out:q} > {log:q} 2>&1"


def launcher(wildcards, resources):
    """One process per GPU through torchrun on a multi-GPU node; plain otherwise. Left
    unquoted in the command on purpose: `$(command -v variant)` must expand (torchrun wants
    the script's path), and the string holds only constants and an int."""
    n = int(getattr(resources, "gpu", 0) or 0)
    return f"torchrun --standalone --nproc-per-node={n} -- $(command -v {PY})" if n > 1 else PY


def snapshot_epochs(wildcards):
    """The epochs after which the run keeps its weights too (Figures 2c and 7; variant.dag),
    as tokens for `{params.snapshots:q}`; none for most runs."""
    epochs = dag.snapshot_epochs(P, wildcards.run)
    return ["--snapshot-epochs", *map(str, epochs)] if epochs else []


rule train:
    input: init=VAR, vae=VAE, tokens=f"{TOKENS}/index.json"
    output: ckpt=f"{A}/checkpoints/{{run}}.pth", log=f"{R}/train/{{run}}.parquet",
            snapshots=directory(f"{A}/snapshots/{{run}}")   # e<epoch>.pth; empty for most runs
    wildcard_constraints: run=r"progressive_d\d+|fixed_p[0-9.]+_d\d+|skipall_d\d+"
    params: launch=launcher, knobs=knobs("model", "train"), snapshots=snapshot_epochs,
            tokens=TOKENS, state=lambda w: f"{A}/train/{w.run}/state"
    log: f"{LOGS}/train/{{run}}.log"
    resources: **resources("train")
    shell: "{params.launch} train {PROFILE_ARG:q} --run {wildcards.run:q} --init {input.init:q} "
           "--vae {input.vae:q} --tokens {params.tokens:q} --out {output.ckpt:q} --log {output.log:q} "
           "--snapshot-dir {output.snapshots:q} {params.snapshots:q} "
           "--state-dir {params.state:q} > {log:q} 2>&1"
