"""companion: the reference implementation of *Score-Based Generative Models*.

Modules (each docstring cites its chapter):
    distributions  exact targets: Gaussian and Gaussian mixtures, their scores and perturbations
    datasets       toy 2-D sets; MNIST from IDX files or .npz; the bundled 8x8 digits; dequantisation
    losses         explicit, implicit, sliced, denoising, multi-scale (NCSN) and continuous-time (SDE)
                   score matching
    sde            the VE, VP and sub-VP score SDEs, their kernels, reverse processes and time grids
    samplers       Langevin (ULA), MALA, annealed Langevin dynamics, inverse-CDF sampling; the
                   predictors, correctors and predictor–corrector loop of score SDEs
    ode            the probability-flow ODE: Euler, Heun, DPM-Solver++(2M), RK45; exact likelihoods
    schedules      noise schedules and NCSNv2's rules for choosing them
    scores         scores of unnormalised densities by automatic differentiation
    nets           score MLPs for toy data, EMA, the noise-level adapter
    refinenet      the image networks of NCSN (CondRefineNetDilated) and NCSNv2
    train          training loops with checkpoints, resumption and data parallelism
    metrics        MMD, sliced Wasserstein, the digit classifier and its Fréchet distance
    pretrained     score models from checkpoints; the shipped MNIST model
    exercises      checkers students call on their own implementations of the exercises
    plotting, widgets   figures and interactive controls used by the chapters
Command line: python -m companion --help (train, sample, evaluate, classifier, export)
"""

__version__ = "0.1.0"
