# Stage 4. The reference set's features and statistics once, then FID / IS / precision /
# recall per configuration, then one table of them all.

def weights_arg(input):
    """`--weights PATH` as tokens (each quoted by `:q`), or none when the extractor ships
    its own weights."""
    return ["--weights", *input.extractor] if input.extractor else []


rule reference_stats:
    input: reference=REFERENCE, extractor=EXTRACTOR
    output: stats=REFERENCE_STATS, record=REFERENCE_STATS.replace(".npz", ".json")
    params: weights=lambda w, input: weights_arg(input),
            knobs=knobs("evaluate"), cache_format=revisions.REFERENCE_STATS   # a new format recomputes the cache
    log: f"{LOGS}/reference_stats.log"
    resources: **resources("evaluate")
    shell: "{PY} reference-stats {PROFILE_ARG:q} --reference {input.reference:q} {params.weights:q} "
           "--out {output.stats:q} > {log:q} 2>&1"


rule evaluate:
    input: samples=f"{A}/samples/{{run}}/{{config}}.npz", stats=REFERENCE_STATS, reference=REFERENCE,
           ckpt=lambda w: checkpoint_input(w.run), extractor=EXTRACTOR
    output: f"{R}/metrics/{{run}}/{{config}}.parquet"
    params: weights=lambda w, input: weights_arg(input),
            ckpt=lambda w: checkpoint(w.run), knobs=knobs("data", "sample", "evaluate")
    log: f"{LOGS}/evaluate/{{run}}/{{config}}.log"
    resources: **resources("evaluate")
    shell: "{PY} evaluate {PROFILE_ARG:q} --samples {input.samples:q} --reference-stats {input.stats:q} "
           "--reference {input.reference:q} {params.weights:q} --run {wildcards.run:q} "
           "--config {wildcards.config:q} --checkpoint {params.ckpt:q} --out {output:q} > {log:q} 2>&1"


rule collect:
    input: [f"{R}/metrics/{run}/{cfg}.parquet" for run, cfgs in RUNS.items() for cfg in cfgs]
    output: f"{R}/quality.parquet"
    log: f"{LOGS}/collect.log"
    localrule: True
    shell: "{PY} collect {input:q} --out {output:q} > {log:q} 2>&1"
