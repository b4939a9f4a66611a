"""The files a run leaves: checkpoints, training state for resuming, records, conversions.

Owns safetensors checkpoints that load strictly into the book's modules (`checkpoint`), the
training state saved beside them as one commit (`resume`), the run record (`records`),
`.pt` <-> safetensors (`convert`), atomic writes (`atomic`), finite JSON (`jsonio`),
which process may write an output (`ownership`: OS file locks) and the record mirrored into
TensorBoard or MLflow (`tracking`, `--track`).
"""
