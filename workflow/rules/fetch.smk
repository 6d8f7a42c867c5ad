# Stage 1. paper: download the released VAR-d30 and VQVAE (+ the ADM reference batch).
# tiny: generate the data and pre-train a small VQVAE and VAR in place of the download.

if TINY:

    rule make_data:
        output: directory(f"{A}/data/{{split}}")
        params: knobs=knobs("data")
        log: f"{LOGS}/make_data/{{split}}.log"
        resources: **resources("default")
        shell: "{PY} make-data {PROFILE_ARG} --split {wildcards.split} --out {output} > {log} 2>&1"

    rule fetch:
        input: data=f"{A}/data/train"
        output: var=VAR, vae=VAE, record=f"{A}/pretrained/fetch.json"
        params: knobs=knobs("data", "model", "fetch.vae", "fetch.var"), tokenizer=revisions.TOKENIZER
        log: f"{LOGS}/fetch.log"
        resources: **resources("fetch")
        shell: "{PY} fetch {PROFILE_ARG} --out-dir {A}/pretrained --data {input.data} > {log} 2>&1"

    rule train_extractor:
        input: data=f"{A}/data/train"
        output: f"{A}/feature_extractor.pth"
        params: knobs=knobs("data", "fetch.feature_extractor")
        log: f"{LOGS}/train_extractor.log"
        resources: **resources("default")
        shell: "{PY} train-extractor {PROFILE_ARG} --data {input.data} --out {output} > {log} 2>&1"

    TRAIN_DATA = f"{A}/data/train"
    REFERENCE = f"{A}/data/eval"
    EXTRACTOR = [f"{A}/feature_extractor.pth"]

else:

    rule fetch:
        output: var=VAR, vae=VAE, record=f"{A}/pretrained/fetch.json",
                reference=f"{A}/pretrained/{P['fetch']['reference_batch']}"
        params: knobs=knobs("model", "fetch")
        log: f"{LOGS}/fetch.log"
        resources: **resources("fetch")
        shell: "{PY} fetch {PROFILE_ARG} --out-dir {A}/pretrained > {log} 2>&1"

    TRAIN_DATA = []   # ImageNet at params data.root; the tokenize job checks it
    REFERENCE = P["evaluate"]["reference"] or f"{A}/pretrained/{P['fetch']['reference_batch']}"
    EXTRACTOR = []
