# Stage 3. per_class images of every class for each (run, configuration), in shards of
# sample.shard_size. One shard (tiny): one job samples and packs. Several (paper): one job
# per shard (seeded per shard, so any one regenerates byte-identically), then a cheap job
# checks and packs them; a packed configuration no longer needs its shards.

SHARD_SIZE, N_SHARDS = dag.shard_layout(P)

if N_SHARDS == 1:

    rule sample:
        input: var=lambda w: checkpoint_input(w.run), vae=VAE
        output: f"{A}/samples/{{run}}/{{config}}.npz"
        params: var=lambda w: checkpoint(w.run), knobs=knobs("model", "sample")
        log: f"{LOGS}/sample/{{run}}/{{config}}.log"
        resources: **resources("sample")
        shell: "{PY} sample {PROFILE_ARG:q} --var {params.var:q} --vae {input.vae:q} "
               "--config {wildcards.config:q} --out {output:q} > {log:q} 2>&1"

else:

    rule sample_shard:
        input: var=lambda w: checkpoint_input(w.run), vae=VAE
        output: temp(f"{A}/samples/{{run}}/{{config}}/shard-{{shard}}.npz")
        params: var=lambda w: checkpoint(w.run), knobs=knobs("model", "sample"),
                out=f"{A}/samples/{{run}}/{{config}}.npz"
        log: f"{LOGS}/sample/{{run}}/{{config}}/shard-{{shard}}.log"
        resources: **resources("sample")
        shell: "{PY} sample {PROFILE_ARG:q} --var {params.var:q} --vae {input.vae:q} --config {wildcards.config:q} "
               "--shards {wildcards.shard:q} --out {params.out:q} > {log:q} 2>&1"

    rule sample:
        input: var=lambda w: checkpoint_input(w.run),
               shards=expand(f"{A}/samples/{{{{run}}}}/{{{{config}}}}/shard-{{shard}}.npz",
                             shard=[f"{s:05d}" for s in range(N_SHARDS)])
        output: f"{A}/samples/{{run}}/{{config}}.npz"
        params: var=lambda w: checkpoint(w.run)
        log: f"{LOGS}/sample/{{run}}/{{config}}.log"
        resources: **resources("default")
        shell: "{PY} sample {PROFILE_ARG:q} --pack --var {params.var:q} --config {wildcards.config:q} "
               "--out {output:q} > {log:q} 2>&1"
