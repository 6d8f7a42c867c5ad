# Stage 5. Latency (VQVAE decode excluded), peak memory, KV cache and parameters per
# (d, N, batch) on the device at hand, in reference and lean sampler modes.

rule profile:
    input: var=VAR, vae=VAE
    output: f"{R}/profiling.parquet"
    params: knobs=knobs("model", "profiling")
    log: f"{LOGS}/profile.log"
    resources: **resources("profile")
    shell: "{PY} profile {PROFILE_ARG:q} --var {input.var:q} --vae {input.vae:q} --out {output:q} > {log:q} 2>&1"
