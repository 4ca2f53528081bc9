"""``fastnn predict MODEL.npz PATH... [--top K] [--json]``: a saved model's digits for your own images.

Each image goes through fastnn.digits.load_digit (MNIST's preparation: white ink on black,
in a 20x20 box, centred by its centre of mass in 28x28), then the model's softmax. A file that
cannot be read, or holds no ink, gets one line on stderr; the others are still predicted, and
the exit status is 1 if any failed.

    digits/three.png: 3 (99.1%)
    digits/three.png: 3 (99.1%), 5 (0.6%), 8 (0.2%)        with --top 3
"""
import json
import sys

import numpy as np

from .digits import find_images, load_digit
from .errors import DataError


def predict_files(model, paths, errors=None):
    """[(path, probabilities (K,) float32)] for the image files under ``paths`` (files or directories);
    the DataError of each file that could not be used is appended to ``errors``, or raised if None."""
    images, names = [], []
    for path in find_images(paths):
        try:
            images.append(load_digit(path))
            names.append(path)
        except DataError as e:
            if errors is None:
                raise
            errors.append(e)
    if not images:
        return []
    probabilities = model.predict_proba(np.stack(images))
    return list(zip(names, probabilities))


def format_line(path, probabilities, top=1) -> str:
    """``path: label (p%)``, or the ``top`` best labels, most probable first."""
    best = np.argsort(-probabilities, kind="stable")[:top]
    return f"{path}: " + ", ".join(f"{k} ({100 * probabilities[k]:.1f}%)" for k in best)


def cmd_predict(args):
    from .checkpoint import load_model
    from .cli import check_model_fits, select_backend, trained_on
    from .digits import SIZE
    select_backend(args)
    model, meta = load_model(args.model_file)  # not a model: CheckpointError, one line from main()
    check_model_fits(model, args.model_file, (1, SIZE, SIZE), "fastnn predict (digits prepared as MNIST's)")
    model.to_backend()
    if trained_on(meta) != "mnist":
        print(f"fastnn predict: note: {args.model_file} was trained on {trained_on(meta)}; images are "
              "prepared as MNIST digits", file=sys.stderr)
    errors = []
    results = predict_files(model, args.paths, errors)
    for error in errors:
        print(f"fastnn predict: error: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"path": str(path), "label": int(p.argmax()),
                           "probabilities": [round(float(q), 6) for q in p]} for path, p in results], indent=2))
    else:
        for path, p in results:
            print(format_line(path, p, min(args.top, len(p))))
    return 1 if errors else 0
