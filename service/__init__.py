"""digitcode inference service: a numpy-only autoencoder behind FastAPI.

Importing it changes nothing in the process; the server applies its tuning when it starts
(:mod:`service.tuning`).
"""
