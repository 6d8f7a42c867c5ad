# Stage 5. Latency (VQVAE decode excluded), peak memory, KV cache and parameters per
# (d, N, batch) on the device at hand, in reference and lean sampler modes.

rule profile:
    input: var=VAR, vae=VAE
    output: dag.profiling(P)
    params: knobs=knobs("profile"), profile=PROFILE_ARG
    log: f"{LOGS}/profile.log"
    resources: **resources("profile")
    conda: ENV
    shell: "variant profile {params.profile:q} --var {input.var:q} --vae {input.vae:q} --out {output:q} > {log:q} 2>&1"
