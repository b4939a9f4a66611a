"""Research with the pure functions: losses, gradients and weights as data.

Owns the loss as a function of the weights and batched evaluation (`evaluation`), per-example
gradients (`per_example`), the loss along a line in weight space (`landscape`), weight
averaging (`soup`), ensembles (`ensemble`), checks on checkpoints used together (finite,
trained alike: `members`) and the examples' error handling (`script`).
"""
