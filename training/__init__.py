"""Training for digitcode: data loading, the autoencoder fit, and evaluation."""
