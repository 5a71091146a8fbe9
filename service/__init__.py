"""digitcode inference service: a numpy-only autoencoder behind FastAPI."""
