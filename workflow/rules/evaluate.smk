# Stage 4. FID / IS / precision / recall per configuration, then one table of them all.

rule evaluate:
    input: samples=f"{A}/samples/{{run}}/{{config}}.npz", reference=REFERENCE,
           ckpt=lambda w: checkpoint(w.run), extractor=EXTRACTOR
    output: f"{R}/metrics/{{run}}/{{config}}.parquet"
    params: weights=lambda w, input: f"--weights {input.extractor}" if input.extractor else "",
            knobs=knobs("data", "sample", "evaluate")
    log: f"{LOGS}/evaluate/{{run}}/{{config}}.log"
    resources: **resources("evaluate")
    shell: "{PY} evaluate {PROFILE_ARG} --samples {input.samples} --reference {input.reference} "
           "{params.weights} --run {wildcards.run} --config {wildcards.config} "
           "--checkpoint {input.ckpt} --out {output} > {log} 2>&1"


rule collect:
    input: [f"{R}/metrics/{run}/{cfg}.parquet" for run, cfgs in RUNS.items() for cfg in cfgs]
    output: f"{R}/quality.parquet"
    log: f"{LOGS}/collect.log"
    localrule: True
    shell: "{PY} collect {input} --out {output} > {log} 2>&1"
