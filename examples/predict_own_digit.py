"""Your own handwriting: what a model trained on MNIST makes of a digit you drew.

MNIST's digits are white on black, scaled into a 20x20 box and centred by their centre of mass
in 28x28; a photo or drawing of yours is dark on light paper, anywhere on the page, any size.
``fastnn.load_digit`` prepares it the way MNIST prepared its digits (fastnn/digits.py lists
the steps), and the model reads that. With no image given, the script draws a "7" itself with
Pillow: thick dark strokes on light grey paper, off-centre on a 240x200 page.

The model: --model-file MODEL.npz (``fastnn train --save MODEL.npz``), else simple-cnn trained
here for one epoch on MNIST (about 98.5%, seconds on two cores). The plot shows the image, the
28x28 the model sees, and its ten probabilities.

    python examples/predict_own_digit.py [IMAGE] [--model-file MODEL.npz] [--plot predict_own_digit.png]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

import fastnn
from fastnn.digits import read_gray
from fastnn.plot import require_matplotlib


def draw_seven(size=(240, 200), paper=225, ink=40, width=16):
    """A handwritten-looking "7", dark on light paper, left of and above the page's centre: (H, W) uint8."""
    from PIL import Image, ImageDraw
    page = Image.new("L", size[::-1], paper)
    draw = ImageDraw.Draw(page)
    draw.line([(38, 42), (70, 36), (112, 38)], fill=ink, width=width, joint="curve")  # the bar, a little wavy
    draw.line([(112, 38), (92, 90), (76, 150)], fill=ink, width=width, joint="curve")  # the stem, leaning
    draw.line([(70, 95), (106, 92)], fill=ink, width=width - 4)  # the crossbar some people write
    return np.asarray(page)


def train_model(limit=None, epochs=1, seed=0, data=None):
    """simple-cnn, Adam with a one-cycle schedule peaking at 3e-3 (`fastnn train`'s default run, shortened)."""
    x_train, y_train, _, _ = fastnn.load_mnist("mnist", data)
    x_train, y_train = x_train[:limit], y_train[:limit]
    model = fastnn.build_model("simple-cnn", seed=seed)
    trainer = fastnn.Trainer(model, fastnn.make_optimizer("adam", lr=0.003), batch_size=100, seed=seed,
                             progress=False, schedule=fastnn.schedules.OneCycle())
    trainer.fit(x_train, y_train, epochs=epochs)
    return model


def plot(original, seen, probabilities, path, title):
    """Three panels: the image as given, the 28x28 the model sees, the ten probabilities as bars."""
    plt = require_matplotlib()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    left.imshow(original, cmap="gray", vmin=0, vmax=1)
    left.set_title(f"your image {original.shape[1]}x{original.shape[0]}")
    middle.imshow(seen, cmap="gray", vmin=0, vmax=1)
    middle.set_title("what the model sees (28x28)")
    for ax in (left, middle):
        ax.set_xticks([])
        ax.set_yticks([])
    best = int(np.argmax(probabilities))
    bars = right.bar(range(10), 100 * probabilities, color="tab:gray")
    bars[best].set_color("tab:blue")
    right.set(xticks=range(10), ylim=(0, 100), xlabel="digit", ylabel="probability (%)",
              title=f"prediction: {best} ({100 * probabilities[best]:.1f}%)")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="PNG, JPEG, BMP, GIF or .npy (default: a 7 drawn by the script)")
    parser.add_argument("--model-file", metavar="MODEL.npz", help="a saved model (default: train simple-cnn here)")
    parser.add_argument("--limit", type=int, help="train on the first N training images (default: all 60,000)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="directory with the MNIST IDX files (default: FASTNN_DATA, then the cache)")
    parser.add_argument("--save", metavar="MODEL.npz", help="keep the model trained here, for next time")
    parser.add_argument("--plot", metavar="PNG", default="predict_own_digit.png", help="default: %(default)s")
    args = parser.parse_args(argv)

    if args.image:
        original, source = read_gray(Path(args.image)), args.image  # the file's grey levels in [0, 1]
    else:
        original = source = draw_seven() / 255
        print("no image given: drew a 7, dark on light paper, off-centre")
    seen = fastnn.load_digit(source)  # (1, 28, 28): white on black, 20x20 box, centred by mass

    if args.model_file:
        model, _ = fastnn.load_model(args.model_file)
        model.to_backend()
        print(f"loaded {model.name} from {args.model_file}")
    else:
        print(f"training simple-cnn for {args.epochs} epoch(s) on {args.limit or 60000:,} MNIST images ...", flush=True)
        model = train_model(args.limit, args.epochs, args.seed, args.data)
        if args.save:
            fastnn.save_model(args.save, model, metadata={"dataset": "mnist"})
            print(f"saved the model to {args.save}")

    probabilities = model.predict_proba(seen[None])[0]
    best = int(np.argmax(probabilities))
    ranked = np.argsort(-probabilities)[:3]
    print(f"prediction: {best} ({100 * probabilities[best]:.1f}%); next: "
          + ", ".join(f"{k} ({100 * probabilities[k]:.1f}%)" for k in ranked[1:]))
    plot(original, seen[0], probabilities, args.plot, f"{args.image or 'a drawn 7'}: {model.name}")
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    try:
        main()
    except fastnn.FastnnError as e:  # an unreadable image, one with no ink, a file that is not a model
        sys.exit(f"error: {e}")
