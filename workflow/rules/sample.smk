# Stage 3. per_class images of every class for each (run, configuration), in shards of
# sample.shard_size. One shard (tiny): one job samples and packs. Several (paper): one job
# per shard (seeded per shard, so any one regenerates byte-identically), then a cheap job
# checks and packs them; a packed configuration no longer needs its shards.

SAMPLES = dag.samples(P, "{run}", "{config}")
# params sample.keep_samples false: deleted once every job that reads them has run
PACKED = SAMPLES if dag.keep_samples(P) else temp(SAMPLES)

if len(dag.shard_ids(P)) == 1:

    rule sample:
        input: var=lambda w: checkpoint_input(w.run), vae=VAE
        output: PACKED
        params: var=lambda w: checkpoint(w.run), knobs=knobs("sample"), sampler=revisions.SAMPLER,
                profile=PROFILE_ARG
        log: f"{LOGS}/sample/{{run}}/{{config}}.log"
        resources: **resources("sample")
        conda: ENV
        shell: "variant sample {params.profile:q} --var {params.var:q} --vae {input.vae:q} "
               "--config {wildcards.config:q} --out {output:q} > {log:q} 2>&1"

else:

    rule sample_shard:
        input: var=lambda w: checkpoint_input(w.run), vae=VAE
        output: temp(dag.sample_shard(P, "{run}", "{config}", "{shard}"))
        params: var=lambda w: checkpoint(w.run), knobs=knobs("sample"), sampler=revisions.SAMPLER, out=SAMPLES,
                profile=PROFILE_ARG
        log: f"{LOGS}/sample/{{run}}/{{config}}/shard-{{shard}}.log"
        resources: **resources("sample")
        conda: ENV
        shell: "variant sample {params.profile:q} --var {params.var:q} --vae {input.vae:q} --config {wildcards.config:q} "
               "--shards {wildcards.shard:q} --out {params.out:q} > {log:q} 2>&1"

    rule sample:
        input: var=lambda w: checkpoint_input(w.run),
               shards=lambda w: [dag.sample_shard(P, w.run, w.config, s) for s in dag.shard_ids(P)]
        output: PACKED
        params: var=lambda w: checkpoint(w.run), profile=PROFILE_ARG
        log: f"{LOGS}/sample/{{run}}/{{config}}.log"
        resources: **resources("default")
        conda: ENV
        shell: "variant sample {params.profile:q} --pack --var {params.var:q} --config {wildcards.config:q} "
               "--out {output:q} > {log:q} 2>&1"
