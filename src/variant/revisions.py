"""Revisions of the computations whose outputs the DAG keeps.

A change to the code that alters what one of them produces bumps its number here. The
rules carry these numbers as params, so Snakemake reruns the affected jobs and
everything after them; this module imports nothing heavy, as the Snakefile reads it.
"""

# The tokens of an image (the VQVAE's residual quantisation). The tokenize job and the
# tiny profile's VQVAE pre-training carry it. 2: phi convs picked as the reference picks
# them (float64 ticks, the first index on ties).
TOKENIZER = 2

# The pixels of a sample shard on a GPU (the lean sampler). 2: the VQVAE decodes under
# fp16 autocast, as the reference's sampling does (1: float32). The sample rules and the
# shard key carry it, so shards of the earlier decode are remade, not mixed in.
SAMPLER = 2

# The reference statistics' file layout (variant.stages.reference). 2: FID against a reference
# batch's stored mu/sigma, as ADM's evaluator.
REFERENCE_STATS = 2
