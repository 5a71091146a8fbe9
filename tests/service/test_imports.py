"""The serving path imports neither the training code nor scikit-learn."""

import subprocess
import sys

from tests.conftest import ROOT


def test_service_does_not_import_training_or_sklearn():
    code = (
        "import sys, service.app, service.__main__, service.model;"
        "bad = sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('training', 'sklearn', 'joblib', 'matplotlib'));"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
