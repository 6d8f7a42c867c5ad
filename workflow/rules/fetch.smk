# Stage 1. paper: download the released VAR-d30 and VQVAE (+ the ADM reference batch).
# tiny: generate the data and pre-train a small VQVAE and VAR in place of the download.

if TINY and SHARED_BASE:

    # The data, extractor and VQVAE are the base profile's (params shares_base), made by
    # its own run (common.smk stops early where they are missing): only the VAR is
    # pre-trained here, on the base's data with the base's VQVAE.
    rule fetch:
        input: data=dag.data_dir(P, "train"), vae=VAE
        output: var=VAR, record=dag.fetch_record(P)
        params: knobs=knobs("fetch"), tokenizer=revisions.TOKENIZER, profile=PROFILE_ARG,
                out_dir=lambda w, output: parent_dir(output.var)
        log: f"{LOGS}/fetch.log"
        resources: **resources("fetch")
        conda: ENV
        shell: "variant fetch {params.profile:q} --out-dir {params.out_dir:q} --data {input.data:q} "
               "--vae {input.vae:q} > {log:q} 2>&1"

    TRAIN_DATA = dag.data_dir(P, "train")
    EXTRACTOR = [dag.feature_extractor(P)]

elif TINY:

    rule make_data:
        output: directory(dag.data_dir(P, "{split}"))
        params: knobs=knobs("make-data"), profile=PROFILE_ARG
        log: f"{LOGS}/make_data/{{split}}.log"
        resources: **resources("default")
        conda: ENV
        shell: "variant make-data {params.profile:q} --split {wildcards.split:q} --out {output:q} > {log:q} 2>&1"

    # Everything here is re-made by pre-training (fetch.json too), so Snakemake may
    # clear it before a rerun as usual.
    rule fetch:
        input: data=dag.data_dir(P, "train")
        output: var=VAR, vae=VAE, record=dag.fetch_record(P)
        params: knobs=knobs("fetch"), tokenizer=revisions.TOKENIZER, profile=PROFILE_ARG,
                out_dir=lambda w, output: parent_dir(output.var)
        log: f"{LOGS}/fetch.log"
        resources: **resources("fetch")
        conda: ENV
        shell: "variant fetch {params.profile:q} --out-dir {params.out_dir:q} --data {input.data:q} > {log:q} 2>&1"

    rule train_extractor:
        input: data=dag.data_dir(P, "train")
        output: dag.feature_extractor(P)
        params: knobs=knobs("train-extractor"), profile=PROFILE_ARG
        log: f"{LOGS}/train_extractor.log"
        resources: **resources("default")
        conda: ENV
        shell: "variant train-extractor {params.profile:q} --data {input.data:q} --out {output:q} > {log:q} 2>&1"

    TRAIN_DATA = dag.data_dir(P, "train")
    EXTRACTOR = [dag.feature_extractor(P)]

else:

    # Snakemake deletes a job's existing outputs before it reruns, so nothing that cannot
    # be re-made for free is an output here:
    # - var.pth / vae.pth are hard links that `variant fetch` re-makes from the downloads
    #   on every run: clearing them loses nothing.
    # - the downloads themselves (fetch.files) and fetch.json, the trust-on-first-use
    #   sha256 record every later fetch verifies against, are no outputs at all.
    # - the reference batch (downloaded, or put there by hand: fetch verifies and records
    #   it) is needed downstream, so it is an output, flagged update(): Snakemake leaves it
    #   in place and `variant fetch` keeps a present file, checking it against fetch.json.
    rule fetch:
        output: var=VAR, vae=VAE, reference=update(dag.reference_batch(P))
        params: knobs=knobs("fetch"), out_dir=lambda w, output: parent_dir(output.var), profile=PROFILE_ARG
        log: f"{LOGS}/fetch.log"
        resources: **resources("fetch")
        conda: ENV
        shell: "variant fetch {params.profile:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"

    TRAIN_DATA = []   # ImageNet at params data.root; the tokenize job checks it
    EXTRACTOR = []

REFERENCE = dag.reference_input(P)
