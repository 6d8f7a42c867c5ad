# Stage 4. The reference set's features and statistics once, then FID / IS / precision /
# recall per configuration, then one table of them all.

if not SHARED_BASE:   # else the base profile's run made them (common.smk)

    rule reference_stats:
        input: reference=REFERENCE, extractor=EXTRACTOR
        output: stats=REFERENCE_STATS, record=dag.reference_record(P)
        params: weights=lambda w, input: weights_arg(input), profile=PROFILE_ARG,
                knobs=knobs("reference-stats"), cache_format=revisions.REFERENCE_STATS   # a new format recomputes the cache
        log: f"{LOGS}/reference_stats.log"
        resources: **resources("evaluate")
        conda: ENV
        shell: "variant reference-stats {params.profile:q} --reference {input.reference:q} {params.weights:q} "
               "--out {output.stats:q} > {log:q} 2>&1"


rule evaluate:
    input: samples=SAMPLES, stats=REFERENCE_STATS, reference=REFERENCE,
           ckpt=lambda w: checkpoint_input(w.run), extractor=EXTRACTOR
    output: dag.metric_row(P, "{run}", "{config}")
    params: weights=lambda w, input: weights_arg(input), profile=PROFILE_ARG,
            ckpt=lambda w: checkpoint(w.run), knobs=knobs("evaluate")
    log: f"{LOGS}/evaluate/{{run}}/{{config}}.log"
    resources: **resources("evaluate")
    conda: ENV
    shell: "variant evaluate {params.profile:q} --samples {input.samples:q} --reference-stats {input.stats:q} "
           "--reference {input.reference:q} {params.weights:q} --run {wildcards.run:q} "
           "--config {wildcards.config:q} --checkpoint {params.ckpt:q} --out {output:q} > {log:q} 2>&1"


rule collect:
    input: dag.metric_rows(P, RUNS)
    output: quality=dag.quality(P), metrics=dag.metrics_json(P)
    log: f"{LOGS}/collect.log"
    localrule: True
    conda: ENV
    shell: "variant collect {input:q} --out {output.quality:q} --metrics-json {output.metrics:q} > {log:q} 2>&1"
