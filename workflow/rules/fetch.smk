# Stage 1. paper: download the released VAR-d30 and VQVAE (+ the ADM reference batch).
# tiny: generate the data and pre-train a small VQVAE and VAR in place of the download.

if TINY:

    rule make_data:
        output: directory(f"{A}/data/{{split}}")
        params: knobs=knobs("data")
        log: f"{LOGS}/make_data/{{split}}.log"
        resources: **resources("default")
        shell: "{PY} make-data {PROFILE_ARG:q} --split {wildcards.split:q} --out {output:q} > {log:q} 2>&1"

    # Everything here is re-made by pre-training (fetch.json too), so Snakemake may
    # clear it before a rerun as usual.
    rule fetch:
        input: data=f"{A}/data/train"
        output: var=VAR, vae=VAE, record=f"{PRETRAINED}/fetch.json"
        params: knobs=knobs("data", "model", "fetch.vae", "fetch.var"), tokenizer=revisions.TOKENIZER,
                out_dir=PRETRAINED
        log: f"{LOGS}/fetch.log"
        resources: **resources("fetch")
        shell: "{PY} fetch {PROFILE_ARG:q} --out-dir {params.out_dir:q} --data {input.data:q} > {log:q} 2>&1"

    rule train_extractor:
        input: data=f"{A}/data/train"
        output: f"{A}/feature_extractor.pth"
        params: knobs=knobs("data", "fetch.feature_extractor")
        log: f"{LOGS}/train_extractor.log"
        resources: **resources("default")
        shell: "{PY} train-extractor {PROFILE_ARG:q} --data {input.data:q} --out {output:q} > {log:q} 2>&1"

    TRAIN_DATA = f"{A}/data/train"
    REFERENCE = f"{A}/data/eval"
    EXTRACTOR = [f"{A}/feature_extractor.pth"]

else:

    REFERENCE_BATCH = f"{PRETRAINED}/{P['fetch']['reference_batch']}"

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
        output: var=VAR, vae=VAE, reference=update(REFERENCE_BATCH)
        params: knobs=knobs("model", "fetch"), out_dir=PRETRAINED
        log: f"{LOGS}/fetch.log"
        resources: **resources("fetch")
        shell: "{PY} fetch {PROFILE_ARG:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"

    TRAIN_DATA = []   # ImageNet at params data.root; the tokenize job checks it
    REFERENCE = P["evaluate"]["reference"] or REFERENCE_BATCH
    EXTRACTOR = []
