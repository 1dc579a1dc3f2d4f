"""The loop: feedback unwrapped over passes, the backprop modes that train it, fixed-point
solvers, shared dropout masks, per-pass outputs and probes. Imports nothing else from loopnets."""
