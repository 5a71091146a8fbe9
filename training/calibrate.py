"""Add (or redo) the prototypes, outlier calibration and reference sample of an artifact.

Artifacts of format 1 have no calibration, those of format 2 no prototypes, those of format 3 no
reference sample, and the service refuses them all. This recomputes the prototypes from the
artifact's own training split and the errors and distances of its validation split, which
becomes its reference sample (the split seed and fraction its manifest records, of the training
file given, checked against the manifest's sha256 when it has one), and rewrites the artifact
with them. The network's weights stay the same; the model version changes with the prototypes
(they are stored with the weights and change which vectors are outliers)::

    python -m training.calibrate models/mine --train data/optdigits.tra
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from service.artifact import ArtifactError, load_artifact, save_artifact, sha256_file
from training.data import DataError, load_optdigits, split_train_validation
from training.train import calibrated

__all__ = ["main"]

_KEPT_FILES = ("latent.png",)  # written by training next to the artifact's own files


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__)
    p.add_argument("model_dir", type=Path, help="the artifact directory to calibrate")
    p.add_argument("--train", required=True, type=Path, help="the optdigits file it was trained on")
    args = p.parse_args(argv)
    try:
        artifact = load_artifact(args.model_dir, calibrated=False)
        training = artifact.manifest.get("training", {})
        recorded = training.get("data_sha256")
        if recorded is not None and recorded != sha256_file(args.train):
            raise DataError(
                f"{args.train}: not the file {args.model_dir} was trained on (sha256 differs "
                "from the manifest's training.data_sha256)"
            )
        X, y = load_optdigits(args.train)
        fraction = float(training.get("validation_fraction", 0.15))
        seed = int(training.get("split_seed", artifact.manifest.get("seed", 0)))
        X_fit, X_val, _, y_val = split_train_validation(X, y, fraction, seed)
        old = args.model_dir
        kept = {
            name: (lambda target, source=old / name: shutil.copyfile(source, target))
            for name in _KEPT_FILES
            if (old / name).is_file()
        }
        written = save_artifact(old, calibrated(artifact, X_fit, X_val, y_val, seed), kept)
    except (ArtifactError, DataError, OSError) as exc:
        print(f"digitcode-calibrate: {exc}", file=sys.stderr)
        return 1
    cal = written["calibration"]
    levels = ", ".join(f"{q}: {t:.5f}" for q, t in cal["thresholds"].items() if t is not None)
    print(
        f"{args.model_dir}: calibrated on {cal['rows']} validation rows "
        f"(model version {written['model_version']}); thresholds {levels}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
