"""What ptm shows: charts, the model comparison, the self-check, predictions and summaries.

Owns the charts (`plot`), `ptm compare` (`compare`), `ptm check` (`selfcheck`), `ptm predict`
(`predict`), parameter counts (`summary`), the convolution demo (`conv_demo`) and the book's
own eager loop as a baseline (`baseline`).
"""
