"""The pure networks: chapter 8's models as `init`/`apply` over parameter dicts, their nn.Module twins.

Owns the layers (`layers`), the networks (`models`), the book's classes as twins (`modules`),
the registry that names them (`registry`), counter-based randomness (`rng`) and the adapter from
any nn.Module to pure functions (`adapter`). Imports nothing else of ptm_func but `catalog` and
`errors`.
"""
