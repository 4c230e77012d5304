"""companion: the reference implementation of *Score-Based Generative Models*.

Modules: `distributions` (exact targets), `samplers` (Langevin, MALA, inverse CDF),
`scores` (scores by autograd), `plotting` (figures used by the chapters).
"""

__version__ = "0.1.0"
