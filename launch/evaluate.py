"""Score a generator (or two folders of images) with FID, KID, IS, precision/recall, on one or many processes.

    accelerate launch [--multi_gpu --num_processes N] launch/evaluate.py --generator runs/x/generator \\
        --data PATH --metrics fid,kid,is,pr --num-samples 50000 [--num-real N] [--out FILE.json]
    accelerate launch launch/evaluate.py --real DIR --fake DIR --metrics fid,kid,is,pr

Prints a table and, as the last line of stdout, one JSON object (also written to --out). Numbers from
`--features classifier:PATH` live in that classifier's feature space: compare them only with each other.
Metrics: fid, kid, is, pr; acc and fid_per_class (class-conditional; acc needs a classifier); l1
(image-to-image: translated held-out sources vs their targets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distgan.errors import DistganError, exit_process  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", help="a run's generator/ folder")
    parser.add_argument("--data", help="the real data (as data.path): hub id, parquet, imagefolder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--source-column", help="image-to-image: the source column (default: A|B in one image)")
    parser.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    parser.add_argument("--real", help="a folder of real images (with --fake)")
    parser.add_argument("--fake", help="a folder of generated images (with --real)")
    parser.add_argument("--metrics", default="fid", help="comma-separated: fid,kid,is,pr,acc,fid_per_class,l1")
    parser.add_argument("--num-samples", type=int, default=50000)
    parser.add_argument("--num-real", type=int, help="the first N real images of the split (default: all)")
    parser.add_argument("--features", default="inception", help="inception or classifier:PATH")
    parser.add_argument("--inception-weights", help="a state_dict file (default: the torch hub cache)")
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass per process")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="the trained G (model_raw.safetensors) instead of its EMA (model.safetensors)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--cache-dir", help="reference statistics cache (default: $DISTGAN_CACHE or ~/.cache/distgan)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace):
    from distgan.metrics import EvalSettings

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    settings = EvalSettings(
        metrics=metrics,
        num_samples=args.num_samples,
        num_real=args.num_real,
        features=args.features,
        inception_weights=args.inception_weights,
        batch_size=args.batch,
        seed=args.seed,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        cache_dir=args.cache_dir,
    )
    settings.validate()
    return settings


def check_inputs(args: argparse.Namespace, settings) -> None:
    """Everything checkable before a process group or a network is built."""
    folders = args.real is not None or args.fake is not None
    if folders:
        if args.real is None or args.fake is None or args.generator:
            raise DistganError("--real DIR --fake DIR: give both folders (and no --generator)")
        for flag, folder in (("--real", args.real), ("--fake", args.fake)):
            if not Path(folder).is_dir():
                raise DistganError(f"{flag} {folder}: no such folder of images")
        bad = {"acc", "fid_per_class", "l1"} & set(settings.metrics)
        if bad:
            raise DistganError(f"--metrics {','.join(sorted(bad))}: needs a --generator and labelled/paired --data")
    elif not args.generator or not args.data:
        raise DistganError("give --generator DIR --data PATH, or --real DIR --fake DIR")
    elif not (Path(args.generator) / "config.json").is_file():
        raise DistganError(f"--generator {args.generator}: expected model.safetensors and config.json")
    from distgan.metrics.features import check_extractor  # imports torch: after the cheap checks

    check_extractor(settings.features, settings.inception_weights)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
        check_inputs(args, settings)
        values, info = run(args, settings)
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if info["rank"] == 0:
        report(values, info, args.out)
    return 0


def run(args: argparse.Namespace, settings) -> tuple[dict[str, float], dict]:
    from accelerate import Accelerator

    from distgan.config import DataConfig
    from distgan.metrics.evaluator import Evaluator
    from distgan.train.setup import close_process_group_at_exit, has_gpu

    accelerator = Accelerator(cpu=not has_gpu())
    close_process_group_at_exit()  # a gloo group left to interpreter teardown can abort the process
    log = print if accelerator.is_main_process else None
    start = time.time()
    if args.real is not None:
        evaluator = Evaluator(settings, None, None, accelerator, log)
        values = evaluator.score_folders(args.fake, args.real)
    else:
        from distgan.sampling import load_generator

        family, G = load_generator(args.generator, accelerator.device, raw=args.raw)
        spec = family.spec
        data = DataConfig(
            path=args.data,
            split=args.split,
            image_size=spec.image_size,
            channels=spec.channels,
            image_column=args.image_column,
            label_column=args.label_column,
            num_classes=spec.num_classes,
            source_column=args.source_column,
            direction=args.direction,
            num_workers=0,
        )
        evaluator = Evaluator(settings, family, data, accelerator, log)
        if "source" not in family.columns:  # image-to-image: the targets of the translated rows are the reference
            evaluator.get_reference()  # timed apart from generation: cached after the first run
        values = evaluator.evaluate(G)
    ext = evaluator.get_extractor()
    info = {
        "rank": accelerator.process_index,
        "extractor": ext.name,
        "weights_sha256": ext.weights_sha256,
        "processes": accelerator.num_processes,
        "images_per_s": evaluator.throughput,
        "seconds": time.time() - start,
    }
    accelerator.wait_for_everyone()
    return values, info


def report(values: dict[str, float], info: dict, out: Path | None) -> None:
    """The table, then one JSON line (the last line of stdout); --out gets the same JSON, written atomically."""
    record = {k: (int(v) if k.startswith("num_") or k.startswith("kid_subset") else v) for k, v in values.items()}
    record |= {"extractor": info["extractor"], "weights_sha256": info["weights_sha256"]}
    record |= {"processes": info["processes"], "images_per_s": round(info["images_per_s"], 2)}
    if info["extractor"] != "inception":
        record["note"] = "classifier features: comparable only with numbers from the same classifier file"
    if "kid_subset_size" in record and record["kid_subset_size"] < 1000:
        print(f"note: KID used {record['kid_subsets']} subsets of {record['kid_subset_size']} (fewer than 1000 images)")
    print(f"{'metric':<16} value   ({info['extractor']}, {record['num_fake']} generated vs {record['num_real']} real)")
    for key, value in values.items():
        if not key.startswith("num_") and not key.startswith("kid_subset"):
            print(f"{key:<16} {value:.6g}")
    print(f"throughput: {info['images_per_s']:.1f} images/s (generating or decoding + features, all processes)")
    line = json.dumps(record)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(line + "\n")
        os.replace(tmp, out)
    print(line)


if __name__ == "__main__":
    exit_process(main())  # sys.exit's work without interpreter teardown, which gloo can abort
