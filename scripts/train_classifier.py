"""Train the small CNN classifier used by `--features classifier:PATH` (offline FID/KID/PR, IS, class accuracy).

    python scripts/train_classifier.py --data data/digits --out runs/classifier_digits --image-size 32 --channels 1
    python scripts/train_classifier.py --data data/mnist --out runs/classifier_mnist --image-size 64 --channels 1

Reads the labelled data through distgan's data stream (same resize/crop as training, stored as uint8 like
generated images before scoring), holds out --test-fraction (seeded), trains, and prints the held-out
accuracy (also stored in DIR/config.json). Use the image size and channels of the generators to score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from distgan.errors import DistganError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="labelled dataset: hub id, parquet file/folder, imagefolder")
    parser.add_argument("--out", required=True, type=Path, help="folder for model.safetensors + config.json")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, choices=[1, 3], default=1)
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--num-classes", type=int, help="default: from the label column's ClassLabel")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--max-images", type=int, help="read at most this many labelled images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from distgan.config import DataConfig
        from distgan.metrics.classifier import (
            ClassifierConfig,
            ClassifierFeatures,
            accuracy,
            load_labelled,
            save_classifier,
            train_classifier,
        )

        if not 0 < args.test_fraction < 1:
            raise DistganError(f"--test-fraction: must be in (0, 1), got {args.test_fraction}")
        if args.steps < 1 or args.batch < 1:
            raise DistganError("--steps and --batch: must be >= 1")
        data = DataConfig(
            path=args.data,
            split=args.split,
            image_size=args.image_size,
            channels=args.channels,
            image_column=args.image_column,
            label_column=args.label_column,
            num_classes=args.num_classes,
            num_workers=0,
        )
        data.validate()
        start = time.time()
        images, labels, num_classes = load_labelled(data, args.max_images)
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))
        n_test = max(1, int(round(len(images) * args.test_fraction)))
        test, train = perm[:n_test], perm[n_test:]
        print(f"read {len(images)} images ({num_classes} classes) in {time.time() - start:.1f} s: "
              f"{len(train)} train, {len(test)} test")  # fmt: skip
        cfg = ClassifierConfig(
            args.image_size, args.channels, num_classes, args.width, args.feature_dim, data=args.data
        )
        model = train_classifier(images[train], labels[train], cfg, args.steps, args.batch, args.lr, args.seed)
        save_classifier(model, cfg, args.out)
        test_acc = accuracy(ClassifierFeatures(args.out), images[test], labels[test])  # as evaluation computes it
        cfg.test_accuracy = test_acc
        save_classifier(model, cfg, args.out)
        print(f"wrote {args.out} (feature_dim {cfg.feature_dim}); held-out test accuracy {test_acc:.4f}")
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
