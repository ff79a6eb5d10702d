"""Command line: one verb per API function; the CLI only parses arguments and formats results.
Each verb's options are declared once, in facegender/verbs.py; the parsers are built from them.

Exit status: 0 ok, 1 some inputs could not be used (listed), 2 a user error (message, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import FaceGenderError
from .options import Number, add_options, from_namespace
from .verbs import VERBS, QatOptions, TrainOptions

__all__ = ["Number", "build_parser", "main"]  # Number: the range type every numeric option has

# verb -> (one-line help in the verb list, description atop the verb's --help)
VERB_TEXT: dict[str, tuple[str, str]] = {
    "train": ("train a classifier on labelled faces -> model folder",
              "Train on a labelled source (folder tree ROOT/{male,female}/ or "
              "ROOT/{train,val,test}/{male,female}/, a .tar of such a tree, a CSV manifest "
              "path,label[,groups...], or hf:NAME / a local HF dataset). Writes a model folder "
              "to --out."),
    "evaluate": ("metrics and report on labelled faces",
                 "Evaluate a model on a labelled source; prints a summary, writes metrics.json, "
                 "report.md, predictions.csv and plots with --out."),
    "predict": ("label every face in images",
                "Predict on a file, folder, glob, .tar, CSV manifest or several of them. One "
                "record per face (docs/face-record.schema.json): path, face, box (x, y, w, h), "
                "det_score, label, score, prob_male, prob_female, unsure, face_source, frame, "
                "timestamp, error."),
    "explain": ("Grad-CAM: where the model looked, for every face",
                "Grad-CAM for each face (needs the [train] extra): writes <name>_face<i>.png "
                "(crop and heatmap), <name>_overlay.png (heatmaps on the photo) and "
                "explanations.json to --out."),
    "serve": ("HTTP API and upload page",
              "Serve POST /v1/predict, GET /v1/model, /healthz, OpenAPI docs at /docs and a "
              "drag-and-drop page at / (in the base install)."),
    "export": ("write ONNX / INT8 / TorchScript files into a model folder",
               "Export a model folder (needs the [train] extra) and check each format against "
               "torch on held-out faces: max |delta p(male)| and label agreement go to "
               "config.json under metrics.export."),
    "qat": ("fine-tune a model so its INT8 export agrees with it",
            "Quantization-aware fine-tuning (needs the [train] extra): simulates ONNX Runtime's "
            "INT8 quantization in torch while training, re-fits the temperature on val, writes "
            "a new model folder to --out and exports it (ONNX + INT8 with parity checks)."),
    "benchmark": ("latency, throughput, accuracy and memory per backend",
                  "Measure every available backend of a model folder in one run: batch-1 "
                  "latency p50/p95 on one thread, batch-64 throughput on all cores, face "
                  "detection and end-to-end time on a 640x480 photo, peak RSS, and accuracy on "
                  "celeba val faces."),
    "shard": ("write any source as WebDataset tar shards",
              "Write a source (folder tree, .tar, CSV manifest, HF dataset, shards, glob) as "
              "tar shards OUT/000000.tar, ... in WebDataset layout: KEY.jpg (the bytes "
              "unchanged) + KEY.json (label, split, groups, original path). train, evaluate and "
              "predict read them back, by folder, glob or brace range "
              "(OUT/{000000..000009}.tar)."),
    "calibrate": ("re-fit a model's temperature and unsure band",
                  "Re-fit the temperature and unsure band of a model folder on the validation "
                  "faces of one or more labelled sources (each source's val split, else a "
                  "stratified share of its train split; never a test split), several views of "
                  "each face (the face, its mirror, degraded copies as phone and web photos give "
                  "them), every source weighted alike. The weights are not touched."),
    "info": ("show a model folder's config and files", ""),
}
VERB_ALIASES = {"evaluate": ["val"]}

# What a None default means, for options whose help does not say it.
NONE_MEANS = {"threads": "all cores", "workers": "chosen from the core count", "limit": "all",
              "val_limit": "all"}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds '(default: X)' to every option whose help does not already say its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (not action.option_strings or "%(default)" in text or "default" in text.lower()
                or d is argparse.SUPPRESS or d is True or d is False):
            return text
        if d is None or d == []:
            return text + f" (default: {NONE_MEANS.get(action.dest, 'none')})"
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb, built from its options class in facegender/verbs.py."""
    from .version import __version__

    ap = argparse.ArgumentParser(
        prog="facegender",
        description="Male/female face classification with calibrated probabilities.",
        formatter_class=DefaultsHelpFormatter)
    ap.add_argument("--version", action="version", version=f"facegender {__version__}")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, options in VERBS.items():
        short, description = VERB_TEXT[verb]
        parser = sub.add_parser(verb, help=short, description=description or None,
                                aliases=VERB_ALIASES.get(verb, []),
                                formatter_class=DefaultsHelpFormatter)
        add_options(parser, options)
    return ap


def _print_table(rows: list[dict]) -> None:
    from .infer.table import print_table

    print_table(rows)


def cmd_train(args: argparse.Namespace) -> int:
    from .training.trainer import train

    options = from_namespace(args, TrainOptions)
    data = options.pop("data")
    res = train(data if len(data) > 1 else data[0], options.pop("out"), **options)
    v = res.metrics.get("val")
    if v is None:  # a torchrun process other than rank 0, which reports for the job
        return 130 if res.interrupted else 0
    if args.recipe in ("head", "tail"):
        worst = "no group of 20+ faces" if v["worst_group"] is None \
            else f"{v['worst_group']:.2%} {v['worst_group_name']}"
        print(f"model folder: {res.model_dir} (val accuracy {v['accuracy']:.2%}, worst group "
              f"{worst}, ECE {v['ece']:.3f})")
        return 0
    print(f"model folder: {res.model_dir} (best epoch {res.best_epoch}: val accuracy "
          f"{v['accuracy']:.2%}, balanced {v['balanced_accuracy']:.2%}, ECE "
          f"{v['ece_before_calibration']:.3f} -> {v['ece_after_calibration']:.3f})")
    return 130 if res.interrupted else (1 if res.skipped else 0)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .report.evaluate import evaluate

    r = evaluate(args.data, args.model, split=args.split, limit=args.limit, seed=args.seed, out=args.out,
                 backend=args.backend, detect=args.detect, tta=args.tta, batch_size=args.batch_size,
                 threads=args.threads, report=args.report or False, gallery=args.gallery,
                 min_group=args.min_group, progress=args.progress, device=args.device)
    if args.json:
        print(json.dumps({**r.metrics, "groups": r.groups}, indent=2))
    else:
        print(r.summary())
        print(r.metrics["classification_report"])
        for key, rows in r.groups.items():
            print(f"by {key}: " + ", ".join(f"{g['group']} {g['accuracy']:.1%} (n={g['n']})"
                                            for g in rows))
    for ref, reason in r.errors[:20]:
        print(f"skipped {ref}: {reason}", file=sys.stderr)
    if r.out:
        print(f"report: {r.out}", file=sys.stderr)
    return 1 if r.errors else 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return _predict_ray(args)
    if args.track or args.keyframes or args.detect_period:
        from .cli_tracks import predict_tracks

        return predict_tracks(args)
    import signal

    from .cli_tracks import predictor_from, video_every
    from .infer.annotate import save_outputs
    from .infer.table import Table
    from .io.files import display_name
    from .io.progress import FirstFew, count
    from .io.writers import close_all, raise_interrupt

    keep = bool(args.save_crops or args.annotate)
    pred = predictor_from(args, keep_images=keep)
    # Rows are streamed and flushed as they come; files are swapped in whole at the end.
    # '-' puts that file alone on stdout, so it can be piped.
    to_stdout = "-" in (args.csv_out, args.json_out)
    writers = [row_writer(sys.stdout, args.format)] if args.format != "table" and not to_stdout \
        else []
    writers += [row_writer(sys.stdout if path == "-" else path, fmt)
                for path, fmt in ((args.csv_out, "csv"), (args.json_out, "json")) if path]
    # the stderr summary lists the first 1,000 failed and 20 ignored inputs; all are rows
    table, failed, ignored, n_img, faces = Table(), FirstFew(1000), FirstFew(20), 0, 0
    # A scheduler's SIGTERM ends the run like Ctrl-C: finished rows kept, files marked partial.
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    stopped: str | None = None
    try:
        for res in pred.iter_predict(args.inputs, batch_size=args.batch_size, processes=args.workers,
                                     progress=args.progress, video_every=video_every(args)):
            n_img += 1
            if keep:
                save_outputs(res, n_img, Path(args.save_crops) if args.save_crops else None,
                             Path(args.annotate) if args.annotate else None)
            rows = res.records()
            for w in writers:
                w.write(rows)
            if args.format == "table" and not to_stdout:
                table.add(rows)
            faces += len(res.faces)
            if res.ignored:
                ignored.append((res.path, res.error))
            elif res.error:
                failed.append((res.path, res.error))
    except KeyboardInterrupt:
        stopped = f"interrupted after {n_img} images"
    except BaseException as exc:
        close_all(writers, f"stopped by an error after {n_img} images ({type(exc).__name__})")
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    written = close_all(writers, stopped)
    if args.format == "table" and not to_stdout:
        table.print()
    print(f"{count(n_img, 'image')}, {count(faces, 'face')}, {failed.total} failed"
          + (f", {ignored.total} ignored (hidden, __MACOSX or documentation; --include-hidden "
             "reads hidden files)"
             if ignored else ""), file=sys.stderr)
    for path, reason in failed:
        print(f"  failed: {display_name(path)}: {reason}", file=sys.stderr)
    if failed.total > len(failed):
        print(f"  ... and {failed.total - len(failed)} more failed (all are rows in the output)",
              file=sys.stderr)
    for path, _ in ignored:
        print(f"  ignored: {display_name(path)}", file=sys.stderr)
    if ignored.total > len(ignored):
        print(f"  ... and {ignored.total - len(ignored)} more ignored (all are rows in the output)",
              file=sys.stderr)
    if stopped:
        files = ", ".join(str(p) for p in written if p) or "stdout"
        print(f"interrupted: {n_img} images done; {files} keeps their rows and is marked "
              "partial (last row)", file=sys.stderr)
        return 130
    return 1 if failed else 0


def _predict_ray(args: argparse.Namespace) -> int:
    from .scale.ray_predict import predict_ray, read_records

    if not args.out:
        raise FaceGenderError("--engine ray writes Parquet partitions: give --out DIR")
    tracking = args.track or args.keyframes or args.detect_period
    if args.save_crops or (args.annotate and not tracking):
        raise FaceGenderError("--save-crops / --annotate (of photos) run with the local engine "
                              "only")
    if tracking:
        return _track_ray(args)
    res = predict_ray(args.inputs if len(args.inputs) > 1 else args.inputs[0], args.out, args.model,
                      workers=args.ray_workers, ray_address=args.ray_address, batch_size=args.batch_size,
                      partition_size=args.partition_size, threads=args.threads or 1,
                      backend=args.backend, tta=args.tta, detect=args.detect, largest=args.largest,
                      min_face=args.min_face, score_threshold=args.score_threshold,
                      unsure_band=args.unsure_band, detector=args.detector)
    for path, fmt in ((args.csv_out, "csv"), (args.json_out, "json")):
        if path:  # one file from every partition, as the local engine writes it
            w = row_writer(sys.stdout if path == "-" else path, fmt)
            w.write(list(read_records(args.out)))
            w.close()
    print(f"{res.partitions} partitions in {args.out} ({res.skipped_partitions} already there); "
          f"this run: {res.images} images, {res.rows} rows, {res.failed} failed, "
          f"{res.seconds:.1f} s", file=sys.stderr)
    return 1 if res.failed else 0


def _track_ray(args: argparse.Namespace) -> int:
    """predict --engine ray --track: one Ray task per video into --out (scale/ray_tracks.py);
    --csv / --json / --tracks-csv / --summary / --summary-csv / --timeline from its files."""
    from .cli_tracks import (
        export_targets,
        export_video,
        frame_writer,
        predictor_options,
        say_left_out,
        video_every,
        write_summaries,
    )
    from .infer.video_tracks import TRACK_ROW_FIELDS
    from .io.writers import RowWriter
    from .scale.ray_tracks import read_frames, read_tracks, track_ray

    if args.keyframes and args.detect_period:
        raise FaceGenderError("--keyframes and --detect-period choose frames differently: "
                              "give one")
    export_targets(args)
    opts = predictor_options(args)
    res = track_ray(args.inputs, args.out, args.model, workers=args.ray_workers,
                    ray_address=args.ray_address, batch_size=args.batch_size,
                    threads=opts.pop("threads") or 1,
                    every=None if args.keyframes or args.detect_period else video_every(args),
                    period=args.detect_period, keyframes=args.keyframes,
                    min_frames=args.min_track, progress=args.progress,
                    **opts)
    for path, fmt in ((args.csv_out, "csv"), (args.json_out, "json")):
        if path:  # one file from every video, as the local engine writes it
            with frame_writer(sys.stdout if path == "-" else path, fmt) as w:
                w.write(list(read_frames(args.out)))
    if args.tracks_csv:
        with RowWriter(args.tracks_csv, "csv", TRACK_ROW_FIELDS) as w:
            w.write(list(read_tracks(args.out)))
    for v in res.tracked:  # --subtitles / --annotate, from each video's rebuilt timeline
        export_video(args, v, len(res.tracked))
    write_summaries(args, res.tracked, res.summary)
    say_left_out(res.left_out)
    print(f"{res.videos} videos in {args.out} ({res.skipped_videos} already there); this run: "
          f"{len(res.workers)} tracked, {res.failed} failed, {res.seconds:.1f} s; summary: "
          f"{Path(args.out) / 'summary.csv'}", file=sys.stderr)
    failed = res.summary["total"]["failed"]
    return 1 if failed else 0


def row_writer(target: Any, fmt: str):
    """A streaming writer of face records: JSON as they are, CSV with the box in four columns."""
    from .infer.records import CSV_FIELDS, RECORD_FIELDS, flatten
    from .io.writers import RowWriter

    if fmt == "csv":
        return RowWriter(target, fmt, CSV_FIELDS, csv_row=lambda r: flatten(r, digits=1))
    return RowWriter(target, fmt, RECORD_FIELDS)


def cmd_explain(args: argparse.Namespace) -> int:
    from .report.explainer import explain

    results = explain(args.images, args.model, args.out, detect=args.detect, largest=args.largest,
                      target=args.target, layer=args.layer, threads=args.threads, min_face=args.min_face,
                      progress=args.progress, device=args.device)
    _print_table([e.face_record() for e in results])
    failed = [e for e in results if e.error]
    print(f"{sum(e.ok for e in results)} faces explained into {args.out}; {len(failed)} failed",
          file=sys.stderr)
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.app import serve

    serve(args.model, args.host, args.port, log_level=args.log_level, backend=args.backend,
          workers=args.workers, threads=args.threads, detect=args.detect,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_files=args.max_files,
          max_pixels=args.max_pixels, max_pending=args.max_pending, api_key=args.api_key,
          no_auth=args.no_auth, cors_origins=tuple(args.cors_origin), rate_limit=args.rate_limit,
          per_client=args.per_client, body_timeout=args.body_timeout,
          idle_timeout=args.idle_timeout, device=args.device, strict=args.strict,
          detector=args.detector, max_video_frames=args.max_video_frames)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .infer.export import export, format_export_summary

    res = export(args.model, args.formats or ["onnx"], calib_data=args.calib_data,
                 calib_size=args.calib_size, parity_data=args.parity_data,
                 parity_size=args.parity_size, opset=args.opset, float_stride=args.float_stride,
                 device=args.device)
    print(format_export_summary(res))
    return 0


def cmd_qat(args: argparse.Namespace) -> int:
    from .infer.export import format_export_summary
    from .training.quantaware import finetune

    res = finetune(**from_namespace(args, QatOptions))
    v, last = res.metrics["val"], res.history[-1]
    print(f"model folder: {res.model_dir} (val accuracy {v['accuracy']:.2%}; simulated INT8 "
          f"agreement {last['agreement']:.2%} on {v['n']} val faces)")
    if res.export:
        print(format_export_summary(res.export))
    for ref, reason in res.skipped[:20]:
        print(f"skipped {ref}: {reason}", file=sys.stderr)
    return 1 if res.skipped else 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .infer.bench import benchmark, format_table

    rows = benchmark(args.model, args.data, args.n_eval,
                     backends=args.backends, photo=args.photo,
                     threads=args.threads)
    print(format_table(rows))
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from .io.progress import count
    from .io.shards import write_shards

    res = write_shards(args.data if len(args.data) > 1 else args.data[0], args.out, maxcount=args.maxcount,
                       maxsize=args.maxsize_mb * 1e6, shuffle=args.shuffle, progress=args.progress)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(res.labels.items())) or "unlabelled"
    print(f"{count(res.samples, 'image')} ({labels}) in {count(len(res.files), 'shard')}: "
          f"{res.pattern}")
    for sk in res.skipped[:20]:
        print(f"skipped {sk.ref}: {sk.reason}", file=sys.stderr)
    if len(res.skipped) > 20:
        print(f"... {len(res.skipped) - 20} more skipped", file=sys.stderr)
    return 1 if res.skipped else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .training.calibrate import calibrate

    res = calibrate(args.model, args.data, args.out, views=args.views, limit=args.limit, drop=args.drop,
                    backend=args.backend, threads=args.threads, seed=args.seed,
                    keep_temperature=args.keep_temperature, small_faces=args.small_faces,
                    progress=args.progress)
    b, n = res["before"], res["after"]
    print(f"{res['model']}: {res['faces']} faces x {res['views']} views from "
          f"{', '.join(res['sources'])} ({res['skipped']} without a face)")
    for key in ("temperature", "unsure_band", "ece_clean", "ece_degraded"):
        if key in n:
            print(f"  {key:12s} {b[key]} -> {n[key]}")
    if "whole_image" in n:
        bw, nw = b["whole_image"], n["whole_image"]
        print(f"  whole-image reads: temperature {bw['temperature']} -> {nw['temperature']}, "
              f"ECE {bw['ece']} -> {nw['ece']}")
    if "small_faces" in n:
        print(f"  small faces: shift {n['small_faces']['shift']}")
        for k, row in n["small_faces"].items():
            if k != "shift":
                was = b["small_faces"][k]
                print(f"    1/{k} (~{row['side_px']:g} px): accuracy {was['accuracy']} -> "
                      f"{row['accuracy']}, male recall {was['male_recall']} -> "
                      f"{row['male_recall']}, female recall {was['female_recall']} -> "
                      f"{row['female_recall']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .models.info import info

    print(json.dumps(info(args.model), indent=2))
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "explain": cmd_explain, "export": cmd_export, "qat": cmd_qat, "benchmark": cmd_benchmark,
            "serve": cmd_serve, "info": cmd_info, "val": cmd_evaluate, "shard": cmd_shard,
            "calibrate": cmd_calibrate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    # A warning is one line for the user, as an error is (not Python's file:line + source).
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        from .io.targets import check_targets

        check_targets(args)  # a target that must not be written is refused before any work
        if getattr(args, "strict", False):  # before any work: the verb then loads it as usual
            from .models.modelfile import verify_files

            verify_files(args.model, strict=True)
        return COMMANDS[args.verb](args)
    except FaceGenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
