# Stage 2. Tokenise the training set once (the VQVAE is frozen), then train one supernet
# per run: progressive (Algorithm 1), fixed ratio p, or skip-all-scales.

rule tokenize:
    input: vae=VAE, data=TRAIN_DATA
    output: dag.tokens_index(P)
    # data: the ImageNet path from --config data_root (via params data.root) in the paper
    # profile, user data reaching a shell: quoted like every other value.
    params: launch=launcher, data=lambda w, input: input.data or P["data"].get("root"), knobs=knobs("tokenize"),
            tokenizer=revisions.TOKENIZER, out=lambda w, output: parent_dir(output[0]), profile=PROFILE_ARG
    log: f"{LOGS}/tokenize.log"
    resources: **resources("tokenize")
    conda: ENV
    shell: "{params.launch} tokenize {params.profile:q} --vae {input.vae:q} --data {params.data:q} "
           "--out {params.out:q} > {log:q} 2>&1"


rule train:
    input: init=VAR, vae=VAE, tokens=dag.tokens_index(P)
    output: ckpt=dag.checkpoint(P, "{run}"), log=dag.train_log(P, "{run}"),
            snapshots=directory(dag.snapshot_dir(P, "{run}"))   # e<epoch>.pth; empty for most runs
    wildcard_constraints: run=names.TRAINED_RUN_WILDCARD
    params: launch=launcher, knobs=knobs("train"), snapshots=snapshot_epochs,
            tokens=lambda w, input: parent_dir(input.tokens), state=lambda w: dag.train_state(P, w.run),
            profile=PROFILE_ARG
    log: f"{LOGS}/train/{{run}}.log"
    resources: **resources("train")
    conda: ENV
    shell: "{params.launch} train {params.profile:q} --run {wildcards.run:q} --init {input.init:q} "
           "--vae {input.vae:q} --tokens {params.tokens:q} --out {output.ckpt:q} --log {output.log:q} "
           "--snapshot-dir {output.snapshots:q} {params.snapshots:q} "
           "--state-dir {params.state:q} > {log:q} 2>&1"
