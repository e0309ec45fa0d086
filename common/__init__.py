"""The CYBER-0 engine: perturbations, zero-order estimation, aggregators, attacks, models, data
and the in-process simulator. Pure and deterministic; it knows nothing of the network."""
