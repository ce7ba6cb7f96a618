"""CLI: `fieldear predict`, `fieldear batch`, `fieldear evaluate`. Imports nothing heavy at import time."""

from __future__ import annotations

import json
import logging
import sys

from runtime.cli.main import positive_int

log = logging.getLogger(__name__)


def _model_options(p) -> None:
    p.add_argument("--model", metavar="DIR", default=None,
                   help="model bundle directory (default: the committed default model)")
    p.add_argument("--threads", type=positive_int, metavar="N", default=None,
                   help="TFLite interpreter threads (default: the interpreter's own choice; 1 per process with --jobs > 1). "
                   "FIELDEAR_TFLITE_BACKEND=ai-edge-litert|tflite-runtime|tensorflow forces an interpreter")


UNKNOWN_HELP = ("show 'unknown' when the clip is unlike the labels or scores below every label's threshold "
                "(the bundle's novelty rule and clip thresholds; a label without one: 0.5)")


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="classify audio files with a model bundle",
                              description="Score each file: blocks over the whole clip, pooled scores, top-k labels. "
                              "Files are streamed from disk (any length). Exit code 1 if any file failed.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV; FLAC/OGG/MP3 with fieldear[formats])")
    _model_options(p)
    p.add_argument("--top-k", type=positive_int, default=3, metavar="K", help="labels shown per file (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per file on stdout (all scores)")
    p.add_argument("--unknown", action="store_true", help=UNKNOWN_HELP)
    p.set_defaults(func=cmd_predict)

    b = subparsers.add_parser("batch", help="predict every audio file under folders into a CSV/JSONL file",
                              description="Recursive batch prediction with worker processes. One row per file: "
                              "path,label,score,error,duration_s,n_blocks,model_sha,score_<label>... "
                              "Bad files get their error in the row; exit code 1 if any failed.")
    b.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE", help="folders (searched recursively) and/or files")
    b.add_argument("--out", required=True, metavar="FILE", help="output file, *.csv or *.jsonl")
    _model_options(b)
    b.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="worker processes (default: 1)")
    from runtime.predict.batch import DEFAULT_FILE_TIMEOUT_S  # standard library only

    b.add_argument("--file-timeout", type=float, default=DEFAULT_FILE_TIMEOUT_S, metavar="S", dest="file_timeout_s",
                   help="with --jobs > 1: a file not done after S seconds gets an error row, its worker is replaced")
    b.add_argument("--resume", action="store_true", help="append to --out, skipping files already in it")
    b.add_argument("--force", action="store_true", help="overwrite an existing --out")
    b.add_argument("--unknown", action="store_true", help=UNKNOWN_HELP + "; the label column says 'unknown', "
                   "a last column 'known' says 1 or 0, the score_<label> columns stay the raw scores")
    b.set_defaults(func=cmd_batch)

    e = subparsers.add_parser("evaluate", help="accuracy, per-label metrics and confusion matrix of batch predictions",
                              description="Compare `fieldear batch` rows with truth labels. With --db, evaluate "
                              "a `listen` database against an annotation file instead.")
    e.add_argument("preds", nargs="?", metavar="PREDS", help="the CSV/JSONL written by `fieldear batch`")
    e.add_argument("--truth", default="prefix", metavar="prefix|folder|FILE.csv",
                   help="truth labels: file-name part before the first '_' (prefix, default), parent folder name "
                   "(folder), or a CSV with path,label columns")
    e.add_argument("--out", metavar="DIR", default=None,
                   help="write report.txt, report.json, confusion.json/.png, no_truth.csv, failed.csv here")
    e.add_argument("--threshold", action="extend", nargs="+", metavar="X|LABEL=X", default=None,
                   help="minimum top score, for all labels (0.5) or one (dog=0.7); below it the outcome is 'unknown'")
    e.add_argument("--model", metavar="DIR", default=None,
                   help="the bundle that made the predictions: its per-label thresholds are the defaults")
    e.add_argument("--db", metavar="PATH", default=None, help="stream evaluation: a `fieldear listen` database")
    e.add_argument("--annotations", metavar="FILE", default=None, help="stream evaluation: annotated events")
    e.add_argument("--run", metavar="N", default=None,
                   help="stream evaluation: which run of the database (N or run:00000N; default: the latest)")
    e.add_argument("--tolerance", type=float, metavar="S", default=None,
                   help="stream evaluation: time tolerance in seconds when matching events")
    e.set_defaults(func=cmd_evaluate)


def cmd_predict(args) -> int:
    from runtime.cli.notices import print_licence_notice
    from runtime.model.model import Model
    from runtime.predict.predict import format_prediction, predict_file, short_error

    model = Model.load(args.model, threads=args.threads)
    print_licence_notice("predict", model.bundle.licence_notice)
    sha = model.bundle.sha256
    if args.unknown:
        from runtime.predict.batch import check_unknown_labels

        check_unknown_labels(model.labels)
    failed = 0
    for path in args.files:
        try:
            pred = predict_file(model, path)
        except Exception as exc:  # one bad file: a line on stderr, go on with the others
            log.debug("%s failed", path, exc_info=True)
            failed += 1
            message = short_error(exc, with_hint=True)
            print(f"fieldear predict: {path}: error: {message}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": str(path), "error": message}), flush=True)
            continue
        if args.json:
            print(json.dumps(pred.to_dict(args.top_k, model_sha=sha, unknown=args.unknown)), flush=True)
        else:
            print(format_prediction(pred, args.top_k, unknown=args.unknown), flush=True)
    return 1 if failed else 0


def cmd_batch(args) -> int:
    from pathlib import Path

    from runtime.cli.notices import print_licence_notice
    from runtime.errors import FieldearError
    from runtime.model.licences import read_licence_notice
    from runtime.predict.batch import Progress, run_batch

    missing = [path for path in args.inputs if not Path(path).exists()]
    if missing:
        raise FieldearError(f"no such file or folder: {', '.join(missing)}")
    print_licence_notice("batch", read_licence_notice(args.model))
    progress = None if args.quiet else Progress(sys.stderr)
    summary = run_batch(args.inputs, args.out, model_dir=args.model, jobs=args.jobs, resume=args.resume,
                        file_timeout_s=args.file_timeout_s, force=args.force, threads=args.threads, progress=progress,
                        unknown=args.unknown)
    print(f"batch: {summary.text()}")
    return 1 if summary.failed else 0


def _evaluate_stream(args) -> int:
    import json
    from pathlib import Path

    from runtime.errors import FieldearError
    from runtime.evaluate.stream_eval import evaluate_run, format_report, run_line

    if not args.annotations:
        raise FieldearError("--db needs --annotations FILE", "fieldear evaluate --db PATH --annotations truth.csv")
    result = evaluate_run(args.db, args.annotations, run=args.run, tolerance=args.tolerance)
    print(run_line(result))
    print(format_report(result))
    if args.out:
        out = Path(args.out) / "report.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"report: {out}")
    return 0


def cmd_evaluate(args) -> int:
    from runtime.errors import FieldearError

    if args.db:
        return _evaluate_stream(args)
    if args.annotations or args.tolerance is not None or args.run is not None:
        raise FieldearError("--annotations, --run and --tolerance need --db",
                            "fieldear evaluate --db PATH --annotations FILE")
    if not args.preds:
        raise FieldearError("no predictions file given", "fieldear evaluate preds.csv [--truth folder]")
    from runtime.evaluate.clip_eval import evaluate, report_text, write_report

    ev = evaluate(args.preds, truth=args.truth, thresholds=args.threshold, model_dir=args.model)
    text = report_text(ev, args.truth)
    print(text)
    if args.out:
        written = write_report(ev, text, args.out)
        print(f"report: {len(written)} files in {args.out}")
    return 0
