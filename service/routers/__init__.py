"""HTTP routes, one module per concern. Routes translate HTTP ⇄ arrays and nothing else."""
