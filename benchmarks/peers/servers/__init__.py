"""The peers' server code, run by the peers' own virtualenvs (``build/peers/<name>/venv``).

Only ``sklearn_autoencoder`` (numpy, scikit-learn and joblib) is imported by the runner too;
the other modules import MLflow, BentoML or LitServe and are left out of mypy (pyproject.toml).
"""

__all__: list[str] = []
