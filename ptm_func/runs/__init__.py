"""Runs: what `ptm train` and `ptm sweep` do, as calls a Python user can make.

Owns `run_training` and `run_sweep` (check the outputs, load the data, write the record, train,
save or rescue, resume), K seeds (`replicas`: a sweep of seeds), how a run reports
(`reporter`) and stops on a signal (`signals`), and sweeps (`sweep`). The top of the library:
it may use every layer below.
"""
