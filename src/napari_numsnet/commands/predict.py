"""``numsnet predict``: label stacks with a checkpoint or a cascade."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_numsnet import options
from napari_numsnet.config import (
    PredictConfig,
)
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.classes import ClassTable, save_class_table
from napari_numsnet.io.naming import classes_path


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_numsnet import pipeline
    from napari_numsnet.workflows import cohort
    from napari_numsnet.workflows.cascade import load_predictor

    inputs = list(args.input or [])
    if args.input_list:
        inputs += cohort.read_input_list(args.input_list)
    if not inputs:
        raise NumsnetError("Nothing to predict.", "Give --input files/folders or --input-list.")
    config = PredictConfig(
        direction=args.direction,
        batch_size=args.batch_size,
        device=args.device,
        largest_component=args.largest_component,
    )
    output = Path(args.output)
    files = pipeline.stack_files(inputs)
    options.check_predict_options(args, files)
    if config.largest_component:
        names = load_predictor(args.checkpoint).class_names
        options.check_label_values("--largest-component", config.largest_component, names)
    if len(files) == 1 and pipeline.is_stack(output) and not output.is_dir():
        kept = output.exists() and not args.overwrite
        if not kept:
            options.check_output(output, [*files, args.checkpoint])
        predictor = load_predictor(args.checkpoint)
        results = pipeline.predict_files(
            predictor,
            files,
            output,
            config,
            stack_axis=args.stack_axis,
            probabilities=args.probabilities,
            overwrite=args.overwrite,
        )
        for src, dst in results:
            print(
                f"kept existing {dst} (give --overwrite to replace it)"
                if kept
                else f"{src} -> {dst}"
            )
            if not kept:  # the names of the label values, for evaluate and the plugin
                table = save_class_table(
                    ClassTable.from_names(predictor.class_names), classes_path(dst)
                )
                print(f"classes: {table}")
        print(f"{0 if kept else 1} written, {1 if kept else 0} kept existing")
        return 0

    def report(record: dict, finished: int, total: int) -> None:
        status = record["status"]
        detail = f"{record.get('seconds', 0):.1f} s" if status == "done" else record.get("error")
        print(f"[{finished}/{total}] {status}: {record['input']} ({detail})", flush=True)

    summary = cohort.predict_cohort(
        args.checkpoint,
        files,
        output,
        config,
        workers=args.workers,
        stack_axis=args.stack_axis,
        probabilities=args.probabilities,
        overwrite=args.overwrite,
        progress=report,
    )
    print(
        f"{summary.done} done ({summary.skipped} already done before), "
        f"{summary.failed} failed, {summary.count('pending')} pending; "
        f"manifest: {summary.manifest}"
    )
    return 0 if summary.done == len(summary.records) else 1
