# Stage 3. per_class images of every class for each (run, configuration).

rule sample:
    input: var=lambda w: checkpoint(w.run), vae=VAE
    output: f"{A}/samples/{{run}}/{{config}}.npz"
    params: knobs=knobs("model", "sample")
    log: f"{LOGS}/sample/{{run}}/{{config}}.log"
    resources: **resources("sample")
    shell: "{PY} sample {PROFILE_ARG} --var {input.var} --vae {input.vae} "
           "--config {wildcards.config} --out {output} > {log} 2>&1"
