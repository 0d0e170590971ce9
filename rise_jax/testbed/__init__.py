"""The controlled testbed: small MoEs pretrained here under chosen conditions.

:mod:`~rise_jax.testbed.ciphers` (synthetic languages with known ground truth),
:mod:`~rise_jax.testbed.mix` (the pretraining mix, exact shares), :mod:`~rise_jax.testbed.corpus`
(the corpora written for the later stages) and :mod:`~rise_jax.testbed.pretrain` (the training
behind the ``pretrain`` stage). The study over checkpoints and factors is :mod:`rise_jax.study`.
"""
