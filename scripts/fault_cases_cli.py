"""Fault cases of the command line: outputs equal to inputs, numbers, options, resources.

Registered with :func:`fault_cases.case`; run by ``scripts/fault_cases.py``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from fault_cases import Ctx, case, expect, file_size_limit, fs_fault

from napari_numsnet.config import ModelConfig, PreprocessConfig
from napari_numsnet.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_numsnet.models import create_model

WIDTHS = "2,2,2,2,2"
FAST = (
    "--epochs",
    "1",
    "--batch-size",
    "2",
    "--size",
    "32",
    "--widths",
    WIDTHS,
    "--device",
    "cpu",
)


def stack(ctx: Ctx, name: str = "ct.nii.gz", z: int = 6) -> tuple[Path, Path]:
    """A small CT-like NIfTI image and its labels (slices 1 and 4 annotated), protected."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 100, (32, 32, z)).astype(np.int16)
    labels = np.zeros((32, 32, z), np.uint8)
    labels[8:20, 8:20, 1] = 1
    labels[10:24, 4:16, 4] = 2
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    image_path, labels_path = ctx.folder / name, ctx.folder / f"labels-{name}"
    nib.save(nib.Nifti1Image(image, affine), image_path)
    nib.save(nib.Nifti1Image(labels, affine), labels_path)
    ctx.protect(image_path, labels_path)
    return image_path, labels_path


def checkpoint(ctx: Ctx, name: str = "model.numsnet.pt") -> Path:
    model = create_model(ModelConfig("drsegunet", num_classes=3, widths=(2, 2, 2, 2, 2)))
    ckpt = Checkpoint.from_model(
        model,
        preprocess=PreprocessConfig(size=32),
        class_names=["background", "a", "b"],
        record={"epochs_done": 1},
    )
    path = save_checkpoint(ckpt, ctx.folder / name)
    ctx.protect(path)
    return path


def refused(rc: int, text: str, *words: str) -> str:
    """Expect exit status 2 and a message naming ``words``; return the message."""
    message = " ".join(line for line in text.splitlines() if "error" in line) or text
    expect(rc == 2, f"exit {rc}: {text.strip()[-300:]}")
    for word in words:
        expect(word.lower() in text.lower(), f"the message does not say {word!r}: {message}")
    return f"exit 2: {message.strip()}"


def train(ctx: Ctx, *extra: str, image: Path | None = None) -> tuple[int, str]:
    if image is None:
        image, labels = stack(ctx)
    else:
        labels = ctx.folder / f"labels-{image.name}"
    output = ctx.folder / "out.numsnet.pt"
    args = ["train", "--image", image, "--labels", labels, "--output", output, *FAST]
    if "--resume" in extra or "--transfer" in extra:  # the checkpoint fixes the widths
        at = args.index("--widths")
        args = args[:at] + args[at + 2 :]
    if "--output" in extra:
        args = args[: args.index("--output")] + args[args.index("--output") + 2 :]
    return ctx.cli(*args, *extra)


# --------------------------------------------------------------------------- class 1


@case(1, "`pseudolabel --output` equal to `--image`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    return refused(*ctx.cli("pseudolabel", "--image", image, "--output", image), "input")


@case(1, "`pseudolabel --output` a hard link to `--image`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    link = ctx.folder / "link.nii.gz"
    link.hardlink_to(image)
    return refused(*ctx.cli("pseudolabel", "--image", image, "--output", link), "input")


@case(1, "`pseudolabel --output` another spelling of `--image` (`dir/../ct.nii.gz`)")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    (ctx.folder / "dir").mkdir()
    other = ctx.folder / "dir" / ".." / image.name
    return refused(*ctx.cli("pseudolabel", "--image", image, "--output", other), "input")


@case(1, "`train --output` equal to `--image`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    return refused(*train(ctx, "--output", str(image), image=image), "input")


@case(1, "`train --output` equal to `--labels`")
def _(ctx: Ctx) -> str:
    image, labels = stack(ctx)
    return refused(*train(ctx, "--output", str(labels), image=image), "input")


@case(1, "`train --output` equal to `--resume` checkpoint")
def _(ctx: Ctx) -> str:
    ckpt = checkpoint(ctx)
    image, _ = stack(ctx)
    rc, text = train(ctx, "--resume", str(ckpt), "--output", str(ckpt), image=image)
    return refused(rc, text, "input")


@case(1, "`predict --input X --output X --overwrite`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    ckpt = checkpoint(ctx)
    rc, text = ctx.cli(
        "predict", "--checkpoint", ckpt, "--input", image, "--output", image, "--overwrite"
    )
    return refused(rc, text, "input")


@case(1, "`predict --output` equal to `--checkpoint` with `--overwrite`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    ckpt = checkpoint(ctx, "model.nii.gz")
    rc, text = ctx.cli(
        "predict", "--checkpoint", ckpt, "--input", image, "--output", ckpt, "--overwrite"
    )
    return refused(rc, text, "input")


@case(1, "`predict` onto an existing output without `--overwrite`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    ckpt = checkpoint(ctx)
    out = ctx.folder / "seg.nii.gz"
    out.write_bytes(b"an older result")
    ctx.protect(out)
    rc, text = ctx.cli("predict", "--checkpoint", ckpt, "--input", image, "--output", out)
    expect("kept existing" in text or rc == 2, f"not said: {text.strip()}")
    return f"exit {rc}: " + " ".join(text.split())[:200]


@case(1, "`predict` into a folder holding user files named like temporaries")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    ckpt = checkpoint(ctx)
    out = ctx.folder / "out"
    out.mkdir()
    for name in (".notes.tmp.txt", ".backup.tmp.nii.gz"):
        (out / name).write_bytes(b"mine")
        ctx.protect(out / name)
    second = ctx.folder / "ct2.nii.gz"
    second.write_bytes(image.read_bytes())
    rc, text = ctx.cli(
        "predict",
        "--checkpoint",
        ckpt,
        "--input",
        image,
        second,
        "--output",
        out,
        "--workers",
        "1",
        "--device",
        "cpu",
    )
    expect(rc == 0, f"exit {rc}: {text[-300:]}")
    return "predicted; the user's files kept"


# --------------------------------------------------------------------------- class 4, 5


@case(4, "`train --output` in a read-only folder: found before the first step")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    (ctx.folder / "ro").mkdir()
    with fs_fault(ctx.folder / "ro", errno.EROFS):
        rc, text = train(ctx, "--output", str(ctx.folder / "ro" / "m.numsnet.pt"), image=image)
    expect("epoch" not in text, "training ran before the output was checked")
    return refused(rc, text, "read-only")


@case(4, "`train --output` an existing folder: found before the first step")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    (ctx.folder / "dir.numsnet.pt").mkdir()
    rc, text = train(ctx, "--output", str(ctx.folder / "dir.numsnet.pt"), image=image)
    expect("epoch" not in text, "training ran before the output was checked")
    return refused(rc, text, "folder")


@case(5, "`train` with the checkpoint write over the file-size limit (RLIMIT_FSIZE 64 KB)")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    old = ctx.folder / "out.numsnet.pt"
    checkpoint(ctx, old.name)
    with file_size_limit(65536):
        rc, text = train(ctx, image=image)
    expect(load_checkpoint(old).epochs_done == 1, "the previous checkpoint was replaced")
    return refused(rc, text, "limit")


@case(5, "`pseudolabel --output` in a read-only folder")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    (ctx.folder / "ro").mkdir()
    with fs_fault(ctx.folder / "ro", errno.EROFS):
        rc, text = ctx.cli(
            "pseudolabel", "--image", image, "--output", ctx.folder / "ro" / "p.nii.gz"
        )
    return refused(rc, text, "read-only")


@case(5, "`pseudolabel` onto a full disk (ENOSPC)")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    (ctx.folder / "full").mkdir()
    with fs_fault(ctx.folder / "full", errno.ENOSPC):
        rc, text = ctx.cli(
            "pseudolabel", "--image", image, "--output", ctx.folder / "full" / "p.nii.gz"
        )
    return refused(rc, text, "full")


@case(5, "`predict --output` a file in a read-only folder")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    ckpt = checkpoint(ctx)
    (ctx.folder / "ro").mkdir()
    with fs_fault(ctx.folder / "ro", errno.EROFS):
        rc, text = ctx.cli(
            "predict",
            "--checkpoint",
            ckpt,
            "--input",
            image,
            "--output",
            ctx.folder / "ro" / "seg.nii.gz",
            "--device",
            "cpu",
        )
    return refused(rc, text, "read-only")


# --------------------------------------------------------------------------- class 6


def _numbers(tried: str, *extra: str, words: tuple[str, ...] = ()) -> None:
    @case(6, tried)
    def _(ctx: Ctx) -> str:
        rc, text = train(ctx, *extra)
        return refused(rc, text, *words)


_numbers("`train --epochs 0`", "--epochs", "0", words=("--epochs",))
_numbers("`train --epochs -3`", "--epochs", "-3", words=("--epochs",))
_numbers("`train --batch-size 0`", "--batch-size", "0", words=("batch",))
_numbers("`train --learning-rate nan`", "--learning-rate", "nan", words=("--learning-rate",))
_numbers("`train --learning-rate -1`", "--learning-rate", "-1", words=("--learning-rate",))
_numbers("`train --size -32`", "--size", "-32", words=("size",))
_numbers("`train --patch-size -16`", "--patch-size", "-16", words=("--patch-size",))
_numbers("`train --patch-size 20` (not a multiple of 16)", "--patch-size", "20", words=("16",))
_numbers(
    "`train --class-weights frequency --preset paper` (its loss has no cross-entropy)",
    "--class-weights",
    "frequency",
    "--preset",
    "paper",
    words=("--class-weights", "fast preset"),
)
_numbers("`train --annotated 99` (outside the 6-slice stack)", "--annotated", "99", words=("99",))
_numbers("`train --annotated -1`", "--annotated=-1", words=("slice",))
_numbers(
    "`train --val 3` not among `--annotated 1,4`",
    "--annotated",
    "1,4",
    "--val",
    "3",
    words=("--val",),
)
_numbers(
    "`train --val 1,4` holding out every annotated slice",
    "--annotated",
    "1,4",
    "--val",
    "1,4",
    words=("validation",),
)
_numbers("`train --num-classes 0`", "--num-classes", "0", words=("--num-classes",))
_numbers("`train --num-classes 1000000`", "--num-classes", "1000000", words=("--num-classes",))
_numbers("`train --seed -1`", "--seed", "-1", words=("seed",))


@case(6, "`train --model unet` beside `--resume`")
def _(ctx: Ctx) -> str:
    ckpt = checkpoint(ctx)
    return refused(*train(ctx, "--model", "unet", "--resume", str(ckpt)), "--model")


@case(6, "`train --widths` beside `--resume`")
def _(ctx: Ctx) -> str:
    ckpt = checkpoint(ctx)
    return refused(*train(ctx, "--resume", str(ckpt), "--widths", WIDTHS), "--widths")


@case(6, "`train --transfer` beside `--resume`")
def _(ctx: Ctx) -> str:
    ckpt = checkpoint(ctx)
    return refused(*train(ctx, "--transfer", str(ckpt), "--resume", str(ckpt)), "--transfer")


@case(6, "`train --model unet` beside `--transfer`")
def _(ctx: Ctx) -> str:
    ckpt = checkpoint(ctx)
    return refused(*train(ctx, "--model", "unet", "--transfer", str(ckpt)), "--model")


@case(6, "`train` on labels whose annotated slices are all background")
def _(ctx: Ctx) -> str:
    image, labels = stack(ctx)
    empty = ctx.folder / "labels-empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 6), np.uint8), nib.load(labels).affine), empty)
    rc, text = ctx.cli(
        "train",
        "--image",
        image,
        "--labels",
        empty,
        "--annotated",
        "1,4",
        "--output",
        ctx.folder / "o.numsnet.pt",
        *FAST,
    )
    return refused(rc, text, "background")


@case(6, "`train` on labels with value 60000 (absurd class count)")
def _(ctx: Ctx) -> str:
    image, labels = stack(ctx)
    odd = ctx.folder / "labels-odd.nii.gz"
    data = np.asarray(nib.load(labels).dataobj).astype(np.uint16)
    data[0, 0, 1] = 60000
    nib.save(nib.Nifti1Image(data, nib.load(labels).affine), odd)
    rc, text = ctx.cli(
        "train", "--image", image, "--labels", odd, "--output", ctx.folder / "o.numsnet.pt", *FAST
    )
    return refused(rc, text, "60000")


@case(6, "`predict` with a checkpoint whose weights are NaN")
def _(ctx: Ctx) -> str:
    import torch

    image, _ = stack(ctx)
    path = checkpoint(ctx)
    ckpt = load_checkpoint(path)
    ckpt.state_dict = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in ckpt.state_dict.items()
    }
    save_checkpoint(ckpt, ctx.folder / "nan.numsnet.pt")
    rc, text = ctx.cli(
        "predict",
        "--checkpoint",
        ctx.folder / "nan.numsnet.pt",
        "--input",
        image,
        "--output",
        ctx.folder / "seg.nii.gz",
        "--device",
        "cpu",
    )
    return refused(rc, text, "finite")


@case(6, "`predict --workers 0`, `--batch-size 0`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    ckpt = checkpoint(ctx)
    said = []
    for option in ("--workers", "--batch-size"):
        rc, text = ctx.cli(
            "predict",
            "--checkpoint",
            ckpt,
            "--input",
            image,
            "--output",
            ctx.folder / "o",
            option,
            "0",
        )
        said.append(refused(rc, text, option))
    return " / ".join(said)


@case(6, "`pseudolabel --k 0` and `--k 1000`")
def _(ctx: Ctx) -> str:
    image, _ = stack(ctx)
    said = []
    for k in ("0", "1000"):
        rc, text = ctx.cli(
            "pseudolabel", "--image", image, "--output", ctx.folder / "p.nii.gz", "--k", k
        )
        said.append(refused(rc, text, "k"))
    return " / ".join(said)


@case(6, "`evaluate --slices 50` outside the stack")
def _(ctx: Ctx) -> str:
    _, labels = stack(ctx)
    rc, text = ctx.cli("evaluate", "--prediction", labels, "--reference", labels, "--slices", "50")
    return refused(rc, text, "50")


# --------------------------------------------------------------------------- class 8


def _cohort(ctx: Ctx, n: int = 2) -> tuple[Path, list[Path], Path]:
    image, _ = stack(ctx)
    images = [image]
    for i in range(1, n):
        other = ctx.folder / f"ct{i}.nii.gz"
        other.write_bytes(image.read_bytes())
        images.append(other)
    return checkpoint(ctx), images, ctx.folder / "out"


def _run_cohort(ckpt: Path, images: list[Path], out: Path, workers: int = 1):  # type: ignore[no-untyped-def]
    from napari_numsnet.config import PredictConfig
    from napari_numsnet.workflows.cohort import predict_cohort

    return predict_cohort(ckpt, images, out, PredictConfig(device="cpu"), workers=workers)


@case(8, "an output recorded as done is changed afterwards, then the cohort runs again")
def _(ctx: Ctx) -> str:
    ckpt, images, out = _cohort(ctx)
    first = _run_cohort(ckpt, images, out)
    target = Path(first.records[0]["output"])
    good = target.read_bytes()
    target.write_bytes(good[:-10] + b"0123456789")  # same size, other bytes
    again = _run_cohort(ckpt, images, out)
    expect(again.skipped == 1 and again.done == 2, f"{again.skipped} skipped")
    expect(target.read_bytes() == good, "the damaged output was kept")
    return "the changed output failed its recorded hash and was predicted again; the other skipped"


@case(8, "a stack locked by another live run")
def _(ctx: Ctx) -> str:
    from napari_numsnet.workflows.cohort import plan_cohort

    ckpt, images, out = _cohort(ctx, 1)
    out.mkdir()
    job = plan_cohort(images, out)[0]
    job.status.parent.mkdir(parents=True, exist_ok=True)
    lock = job.status.with_name(job.status.name + ".lock")
    lock.write_text(str(os.getppid()))  # a live process
    summary = _run_cohort(ckpt, images, out)
    expect(not job.output.exists(), "a locked stack was predicted twice")
    expect(summary.records[0]["status"] == "pending", "not left pending")
    return f"left pending: {summary.records[0].get('error')}"


@case(8, "a stack lock left by a killed run (dead pid)")
def _(ctx: Ctx) -> str:
    from napari_numsnet.workflows.cohort import plan_cohort

    ckpt, images, out = _cohort(ctx, 1)
    out.mkdir()
    job = plan_cohort(images, out)[0]
    job.status.parent.mkdir(parents=True, exist_ok=True)
    job.status.with_name(job.status.name + ".lock").write_text("999999999")
    summary = _run_cohort(ckpt, images, out)
    expect(summary.done == 1, "the stale lock blocked the stack")
    return "the dead run's lock was taken over and the stack predicted"


@case(8, "the status folder becomes read-only (status writes fail)")
def _(ctx: Ctx) -> str:
    from napari_numsnet.workflows.cohort import STATUS_FOLDER

    ckpt, images, out = _cohort(ctx, 1)
    (out / STATUS_FOLDER).mkdir(parents=True)
    with fs_fault(out / STATUS_FOLDER, errno.EROFS):
        summary = _run_cohort(ckpt, images, out)
    record = summary.records[0]
    expect(record["status"] == "done" and "status_error" in record, f"{record}")
    return "the stack was predicted; the failed status write is in its record, nothing escaped"


@case(8, "user files in the cohort's output folder, named like temporaries")
def _(ctx: Ctx) -> str:
    ckpt, images, out = _cohort(ctx, 1)
    out.mkdir()
    for name in (".notes.tmp.txt", ".a.tmp.nii.gz", "notes.txt"):
        (out / name).write_bytes(b"mine")
        ctx.protect(out / name)
    _run_cohort(ckpt, images, out)
    return "predicted; the user's files kept"


@case(8, "kill -9 of the parent while 2 workers predict")
def _(ctx: Ctx) -> str:
    import signal
    import subprocess
    import sys
    import time

    ckpt, images, out = _cohort(ctx, 6)
    code = (
        "import sys; from pathlib import Path\n"
        "from napari_numsnet.workflows.cohort import predict_cohort\n"
        "from napari_numsnet.config import PredictConfig\n"
        f"predict_cohort({str(ckpt)!r}, {[str(p) for p in images]!r}, {str(out)!r}, "
        "PredictConfig(device='cpu'), workers=2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)

    def children() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if (
                    entry.name.isdigit()
                    and int((entry / "stat").read_text().split(") ")[1].split()[1]) == parent.pid
                ):
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
        return found

    deadline = time.time() + 40
    status = out / ".numsnet-status"
    while time.time() < deadline and not (status.is_dir() and any(status.glob("*.json"))):
        time.sleep(0.2)  # until the workers predict
    workers = children()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [
            p
            for p in workers
            if Path(f"/proc/{p}").exists()
            and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()
        ]
    expect(len(workers) >= 1, "no worker seen")
    expect(not alive, f"workers {alive} outlived their parent")
    err = parent.stderr.read().decode() if parent.stderr else ""
    expect("Traceback" not in err, f"traceback: {err[-300:]}")
    return (
        f"{len(workers)} child processes (2 workers, the resource tracker) ended within 10 s "
        "of the parent, no traceback"
    )
