"""Training with torch.func: the config, the pure step, how it is compiled, and the one loop.

Owns `TrainConfig` (`config`), the pure step (`step`: gradients and the update), the
hand-written SGD (`optim`) and losses (`losses`), when and how the step is compiled
(`compiling`, `fallback`, `tuning`), K members in one step (`members`), data parallelism
(`distributed`), the loop itself (`loop.fit`), what it carries and returns (`state`),
accuracy during training (`evaluate`), device choice (`devices`) and sizes checked against the
machine's memory and CPUs (`limits`). Writes no files.
"""
