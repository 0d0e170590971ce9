"""The shipped ml_collections configs, importable as a package (``from rise_jax.configs import demo``).

``configs/<name>.py`` at the repository root are thin entry files for ``--config=configs/<name>.py[:arg]``
that re-export these modules' ``get_config``; ``base.py`` holds the fields every config shares and
:func:`~rise_jax.configs.base.data_source`, the one shape of a text-source section.
"""
