# Stage 4. The reference set's features and statistics once, then FID / IS / precision /
# recall per configuration, then one table of them all.

rule reference_stats:
    input: reference=REFERENCE, extractor=EXTRACTOR
    output: stats=REFERENCE_STATS, record=REFERENCE_STATS.replace(".npz", ".json")
    params: weights=lambda w, input: f"--weights {input.extractor}" if input.extractor else "",
            knobs=knobs("evaluate"), cache_format=revisions.REFERENCE_STATS   # a new format recomputes the cache
    log: f"{LOGS}/reference_stats.log"
    resources: **resources("evaluate")
    shell: "{PY} reference-stats {PROFILE_ARG} --reference {input.reference} {params.weights} "
           "--out {output.stats} > {log} 2>&1"


rule evaluate:
    input: samples=f"{A}/samples/{{run}}/{{config}}.npz", stats=REFERENCE_STATS, reference=REFERENCE,
           ckpt=lambda w: checkpoint_input(w.run), extractor=EXTRACTOR
    output: f"{R}/metrics/{{run}}/{{config}}.parquet"
    params: weights=lambda w, input: f"--weights {input.extractor}" if input.extractor else "",
            ckpt=lambda w: checkpoint(w.run), knobs=knobs("data", "sample", "evaluate")
    log: f"{LOGS}/evaluate/{{run}}/{{config}}.log"
    resources: **resources("evaluate")
    shell: "{PY} evaluate {PROFILE_ARG} --samples {input.samples} --reference-stats {input.stats} "
           "--reference {input.reference} {params.weights} --run {wildcards.run} --config {wildcards.config} "
           "--checkpoint {params.ckpt} --out {output} > {log} 2>&1"


rule collect:
    input: [f"{R}/metrics/{run}/{cfg}.parquet" for run, cfgs in RUNS.items() for cfg in cfgs]
    output: f"{R}/quality.parquet"
    log: f"{LOGS}/collect.log"
    localrule: True
    shell: "{PY} collect {input} --out {output} > {log} 2>&1"
