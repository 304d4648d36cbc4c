"""The ImageNet-C / CIFAR-10-C corruption catalogue on a continuous severity.

Nineteen corruptions of Hendrycks & Dietterich (2019) and two geometric shifts of Ovadia et
al. (2019), each a batched torch transform under the perturbation contract. ImageNet-C's
five levels are the anchors at severities 0.2, 0.4, 0.6, 0.8 and 1.0; between them (and from
the identity at 0) parameters, operators or outputs move linearly. Images up to 64x64 use
the CIFAR-10-C tables, larger ones the ImageNet-C tables; `Perturbation.describe(shape)`
records which. Importing this package registers them, family by family.
"""

from failfirst.perturbations.corruptions import noise, blur, weather, digital, geometric  # noqa: F401  isort: skip
