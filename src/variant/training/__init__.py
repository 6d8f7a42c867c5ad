"""The parts of supernet training (paper Algorithm 1); `variant.stages.train` runs them.

params (the typed `train` section), schedule (p per epoch, the keyed draws, epoch order),
distributed (processes and the gradient all-reduce), step (one optimizer step), state
(the resume state and the process RNGs), live (the optional DVCLive view of the log).
"""
