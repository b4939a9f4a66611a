"""The `ptm` command line (Typer), a thin layer over ptm_func."""
