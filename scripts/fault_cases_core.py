"""Fault cases of the library: atomic writes, the work folder, checkpoints, image files.

Registered with :func:`fault_cases.case`; run by ``scripts/fault_cases.py``.
"""

from __future__ import annotations

import errno
import gzip
import os
import struct
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from fault_cases import Ctx, case, expect, file_size_limit, fs_fault

from napari_numsnet.config import ModelConfig, PreprocessConfig
from napari_numsnet.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_numsnet.errors import NumsnetError, ResourceError
from napari_numsnet.io.atomic import (
    atomic_write_bytes,
    check_writable_target,
    is_own_temporary,
    remove_own_temporaries,
    temporary_name,
)
from napari_numsnet.io.classes import ClassTable, save_class_table
from napari_numsnet.io.labels import write_labels
from napari_numsnet.io.volume import NumsnetWarning, read_volume, volume_from_array
from napari_numsnet.models import create_model
from napari_numsnet.testing import kill_during
from napari_numsnet.workspace import Workspace

SHAPE = (6, 24, 20)
CLASSES = ClassTable.from_names(["background", "a", "b"])


def nifti(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    """A small NIfTI image (``(W, H, Z)`` file layout)."""
    if data is None:
        data = np.random.default_rng(0).integers(-100, 100, (20, 24, 6)).astype(np.int16)
    affine = np.diag([0.8, 0.8, 3.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def tiny_checkpoint(number: int = 0) -> Checkpoint:
    model = create_model(ModelConfig("unet", num_classes=3, widths=(2, 2, 2, 2, 2)))
    state = {k: torch.full_like(v, float(number)) for k, v in model.state_dict().items()}
    return Checkpoint(
        model.config,
        PreprocessConfig(size=32),
        ["background", "a", "b"],
        state,
        record={"epochs_done": number},
    )


def no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if is_own_temporary(p)]
    expect(not left, f"temporaries left behind: {left}")


def npy_workspace(ctx: Ctx) -> tuple[Workspace, np.ndarray]:
    image = np.zeros(SHAPE, np.int16)
    work = Workspace(ctx.folder / "work", volume_from_array(image).meta)
    work.save_annotations(np.ones(SHAPE, np.uint8), [1], CLASSES)
    for path in work.saves()[0].iterdir():
        ctx.protect(path)
    return work, image


def _kill_loop(
    write: Callable[[int], None], check: Callable[[int], tuple[int, bool]], reps: int
) -> str:
    """Fork writers of 1, 2, ...; SIGKILL each at a random moment; ``check`` what loads."""
    last, inside = 0, 0
    for rep in range(reps):
        done, pid = kill_during(write, seed=rep, first=last, longest_delay=0.2)
        loaded, was_inside = check(pid)
        inside += was_inside
        expect(loaded >= done, f"rep {rep}: loaded {loaded} but {done} was complete")
        last = max(done, loaded)
    return f"{reps} kills ({inside} inside a write): every time the last complete state loaded"


# --------------------------------------------------------------------------- class 1


@case(
    1,
    "user files named like temporaries (`.notes.tmp.txt`, `.backup.tmp.nii.gz`) beside "
    "an output, then the clean-up of stale temporaries",
)
def _(ctx: Ctx) -> str:
    for name in (".notes.tmp.txt", ".backup.tmp.nii.gz", ".x.tmp", "a.tmp.npy"):
        (ctx.folder / name).write_bytes(b"mine")
        ctx.protect(ctx.folder / name)
    stale = ctx.folder / temporary_name("out.nii.gz").replace(f".{os.getpid()}.", ".999999999.")
    stale.write_bytes(b"left by a killed writer")
    removed = remove_own_temporaries(ctx.folder)
    expect(removed == 1 and not stale.exists(), "the dead writer's temporary was not removed")
    return "only the tool's own temporary of a dead process removed; the four user files kept"


@case(1, "clean-up while another live process is writing its temporary")
def _(ctx: Ctx) -> str:
    live = ctx.folder / temporary_name("x.npy").replace(f".{os.getpid()}.", f".{os.getppid()}.")
    live.write_bytes(b"being written")
    ctx.protect(live)
    remove_own_temporaries(ctx.folder)
    return "the live writer's temporary is kept"


@case(1, "write an output beside a user's file of the same name with `.tmp` (atomic write)")
def _(ctx: Ctx) -> str:
    (ctx.folder / "out.json.tmp").write_bytes(b"mine")
    ctx.protect(ctx.folder / "out.json.tmp")
    atomic_write_bytes(ctx.folder / "out.json", b"{}")
    return "written; the user's file kept"


# --------------------------------------------------------------------------- class 2


@case(2, "kill -9 at random points of 20 autosaves (forked writer)")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    ctx.protected.clear()  # older saves are pruned by design; the newest must load

    def write(n: int) -> None:
        work.save_annotations(np.full(SHAPE, n % 250, np.uint8), [100 + n], CLASSES)

    def check(pid: int) -> tuple[int, bool]:
        inside = any(f".{pid}." in p.name for p in work.folder.iterdir())
        saved = work.load_annotations(SHAPE)
        number = max(saved.annotated) - 100 if max(saved.annotated) >= 100 else 0
        expect(bool(np.all(saved.labels == (number % 250 if number else 1))), "a torn save")
        return number, inside

    text = _kill_loop(write, check, 20)
    work.save_annotations(np.zeros(SHAPE, np.uint8), [0])
    no_temporaries(work.folder)
    return text + "; the next save removed the dead writers' temporaries"


@case(2, "the newest save's annotation file truncated")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    newest = work.folder / "save-00000002"
    newest.mkdir()
    for path in work.saves()[1].iterdir():
        newest.joinpath(path.name).write_bytes(path.read_bytes())
    data = (newest / "annotations.npy").read_bytes()
    (newest / "annotations.npy").write_bytes(data[: len(data) // 2])
    saved = work.load_annotations(SHAPE)
    expect(saved is not None and saved.recovered is not None, "no recovery reported")
    return f"previous save restored and said so: {saved.recovered}"


@case(2, "the newest save's record is garbage")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    work.save_annotations(np.full(SHAPE, 2, np.uint8), [2], CLASSES)
    work.state_path.write_text('{"annotated": [1, ')
    saved = work.load_annotations(SHAPE)
    expect(saved.annotated == [1] and bool(np.all(saved.labels == 1)), "wrong save restored")
    return f"previous save restored: {saved.recovered}"


@case(2, "every save damaged")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    ctx.protected.clear()
    work.state_path.write_text("{")
    ctx.protect(work.state_path, work.annotations_path)
    work.load_annotations(SHAPE)
    return "loaded?"


@case(2, "two writers autosave into one work folder at once (2 x 15 saves) while a reader loads")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    ctx.protected.clear()
    errors: list[str] = []

    def writer(offset: int) -> None:
        mine = Workspace(work.folder, work.meta)
        for i in range(15):
            n = offset + i
            mine.save_annotations(np.full(SHAPE, n, np.uint8), [n], CLASSES)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (10, 50)]
    for t in threads:
        t.start()
    reads = 0
    while any(t.is_alive() for t in threads):
        saved = Workspace(work.folder, work.meta).load_annotations(SHAPE)
        reads += 1
        if not np.all(saved.labels == saved.annotated[0]):
            errors.append("torn read")
    for t in threads:
        t.join()
    expect(not errors, f"{len(errors)} torn reads")
    kept = len(work.saves())
    return f"{reads} reads during the saves, every one a whole save; {kept} saves kept"


@case(2, "annotations saved for one image, then another image of the same shape opened")
def _(ctx: Ctx) -> str:
    a = np.zeros(SHAPE, np.int16)
    b = a + 1
    folder = ctx.folder / "work"
    Workspace(folder, volume_from_array(a).meta, fingerprint=None).save_annotations(
        np.ones(SHAPE, np.uint8), [1]
    )
    from napari_numsnet.workspace import image_fingerprint

    first = Workspace(folder, volume_from_array(a).meta, image_fingerprint(a))
    first.save_annotations(np.ones(SHAPE, np.uint8), [1])
    ctx.protect(first.annotations_path)
    Workspace(folder, volume_from_array(b).meta, image_fingerprint(b)).load_annotations(SHAPE)
    return "restored onto the other image"


@case(2, "`ct.nii` and `ct.nii.gz` (and `scan.nii.gz`, `scan.npy`) in one folder")
def _(ctx: Ctx) -> str:
    paths = [
        nifti(ctx.folder / "ct.nii"),
        nifti(ctx.folder / "ct.nii.gz"),
        nifti(ctx.folder / "scan.nii.gz"),
    ]
    np.save(ctx.folder / "scan.npy", np.zeros(SHAPE, np.int16))
    paths.append(ctx.folder / "scan.npy")
    folders = {Workspace.for_image(p).folder for p in paths}
    expect(len(folders) == 4, f"{len(folders)} work folders for 4 images")
    return "four images, four work folders (keyed on the whole file name)"


@case(2, "autosave into a read-only work folder (EROFS)")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    with fs_fault(work.folder, errno.EROFS):
        try:
            work.save_annotations(np.full(SHAPE, 2, np.uint8), [2])
        finally:
            pass
    return "saved?"


@case(2, "autosave onto a full disk (ENOSPC after 100 bytes)")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    try:
        with fs_fault(work.folder, errno.ENOSPC, room=100):
            work.save_annotations(np.full(SHAPE, 2, np.uint8), [2])
    except ResourceError as exc:
        no_temporaries(work.folder)
        expect(bool(np.all(work.load_annotations(SHAPE).labels == 1)), "previous save lost")
        return f"refused: {exc} (previous save loads, no temporary left)"
    return "saved?"


@case(2, "autosave over the file-size limit (RLIMIT_FSIZE 2 KB)")
def _(ctx: Ctx) -> str:
    work, _ = npy_workspace(ctx)
    try:
        with file_size_limit(2048):
            work.save_annotations(np.full((6, 60, 60), 2, np.uint8), [2])
    except ResourceError as exc:
        no_temporaries(work.folder)
        return f"refused: {exc}"
    return "saved?"


# --------------------------------------------------------------------------- class 4, 5


@case(4, "kill -9 at random points of 20 checkpoint writes (forked writer)")
def _(ctx: Ctx) -> str:
    path = ctx.folder / "model.numsnet.pt"
    save_checkpoint(tiny_checkpoint(0), path)
    padding = torch.zeros(1_000_000)

    def write(n: int) -> None:
        checkpoint = tiny_checkpoint(n)
        checkpoint.record["padding"] = padding
        save_checkpoint(checkpoint, path)

    def check(pid: int) -> tuple[int, bool]:
        inside = any(f".{pid}." in p.name for p in ctx.folder.iterdir())
        loaded = load_checkpoint(path)
        n = loaded.epochs_done
        expect(all(bool((t == n).all()) for t in loaded.state_dict.values()), "torn weights")
        return n, inside

    text = _kill_loop(write, check, 20)
    save_checkpoint(tiny_checkpoint(1), path)
    no_temporaries(ctx.folder)
    return text


def _checkpoint_fault(ctx: Ctx, fault: Callable[[], object]) -> str:
    path = save_checkpoint(tiny_checkpoint(1), ctx.folder / "model.numsnet.pt")
    ctx.protect(path)
    try:
        with fault():  # type: ignore[attr-defined]
            save_checkpoint(tiny_checkpoint(2), path)
    except ResourceError as exc:
        no_temporaries(ctx.folder)
        expect(load_checkpoint(path).epochs_done == 1, "previous checkpoint lost")
        return f"refused: {exc}"
    return "written?"


@case(5, "checkpoint written onto a full disk (ENOSPC after 10 KB)")
def _(ctx: Ctx) -> str:
    return _checkpoint_fault(ctx, lambda: fs_fault(ctx.folder, errno.ENOSPC, room=10_000))


@case(5, "checkpoint written over the file-size limit (RLIMIT_FSIZE 4 KB)")
def _(ctx: Ctx) -> str:
    return _checkpoint_fault(ctx, lambda: file_size_limit(4096))


@case(5, "checkpoint written into a read-only folder (EROFS)")
def _(ctx: Ctx) -> str:
    return _checkpoint_fault(ctx, lambda: fs_fault(ctx.folder, errno.EROFS))


@case(5, "checkpoint written into a folder without permission (EACCES)")
def _(ctx: Ctx) -> str:
    return _checkpoint_fault(ctx, lambda: fs_fault(ctx.folder, errno.EACCES))


@case(5, "checkpoint written to a path that is an existing folder")
def _(ctx: Ctx) -> str:
    (ctx.folder / "out.numsnet.pt").mkdir()
    (ctx.folder / "out.numsnet.pt" / "keep.txt").write_text("mine")
    ctx.protect(ctx.folder / "out.numsnet.pt" / "keep.txt")
    save_checkpoint(tiny_checkpoint(), ctx.folder / "out.numsnet.pt")
    return "written?"


@case(5, "checkpoint written below a path whose folder is a file")
def _(ctx: Ctx) -> str:
    (ctx.folder / "file").write_text("mine")
    ctx.protect(ctx.folder / "file")
    save_checkpoint(tiny_checkpoint(), ctx.folder / "file" / "model.numsnet.pt")
    return "written?"


@case(5, "label file written onto a full disk (ENOSPC after 40 bytes)")
def _(ctx: Ctx) -> str:
    image = read_volume(nifti(ctx.folder / "ct.nii.gz"))
    shape = image.data.shape
    out = write_labels(ctx.folder / "labels.nii.gz", np.zeros(shape, np.uint8), image.meta)
    ctx.protect(out, ctx.folder / "ct.nii.gz")
    with fs_fault(ctx.folder, errno.ENOSPC, room=40):
        write_labels(out, np.ones(shape, np.uint8), image.meta)
    return "written?"


@case(5, "label file written over the file-size limit (RLIMIT_FSIZE 1 KB)")
def _(ctx: Ctx) -> str:
    meta = volume_from_array(np.zeros((8, 64, 64))).meta
    out = write_labels(ctx.folder / "labels.npy", np.zeros((8, 64, 64), np.uint8), meta)
    ctx.protect(out)
    with file_size_limit(1024):
        write_labels(out, np.ones((8, 64, 64), np.uint8), meta)
    return "written?"


@case(5, "label file written into a read-only folder (EROFS)")
def _(ctx: Ctx) -> str:
    meta = volume_from_array(np.zeros(SHAPE)).meta
    with fs_fault(ctx.folder, errno.EROFS):
        write_labels(ctx.folder / "labels.npy", np.ones(SHAPE, np.uint8), meta)
    return "written?"


@case(5, "class table written onto a full disk (ENOSPC)")
def _(ctx: Ctx) -> str:
    out = save_class_table(CLASSES, ctx.folder / "classes.json")
    ctx.protect(out)
    with fs_fault(ctx.folder, errno.ENOSPC, room=0):
        save_class_table(ClassTable.from_names(["bg", "x"]), out)
    return "written?"


@case(5, "output checked before work starts: read-only folder, existing folder, missing folder")
def _(ctx: Ctx) -> str:
    said = []
    (ctx.folder / "dir.numsnet.pt").mkdir()
    for target, fault in (
        (ctx.folder / "ro" / "m.numsnet.pt", errno.EROFS),
        (ctx.folder / "dir.numsnet.pt", None),
        (ctx.folder / "missing" / "m.numsnet.pt", None),
    ):
        (ctx.folder / "ro").mkdir(exist_ok=True)
        try:
            if fault:
                with fs_fault(target.parent, fault):
                    check_writable_target(target)
            else:
                check_writable_target(target)
        except ResourceError as exc:
            said.append(exc.problem)
    expect(len(said) == 3, f"only {len(said)} of 3 refused")
    return "refused, each with its cause: " + " / ".join(said)


# --------------------------------------------------------------------------- class 6, 7


def _patched_nifti(path: Path, offset: int, fmt: str, values: tuple, gz: bool = True) -> Path:
    plain = path.with_name("plain.nii")
    nifti(plain, np.zeros((4, 4, 4), np.int16))
    raw = bytearray(plain.read_bytes())
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    plain.unlink()
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


def _singular() -> tuple:
    return (1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)


@case(6, "NIfTI whose affine is singular (voxel size 0 along k)")
def _(ctx: Ctx) -> str:
    path = _patched_nifti(ctx.folder / "a.nii.gz", 252, "<hh", (0, 1))
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[280:328] = struct.pack("<12f", *_singular())
    path.write_bytes(gzip.compress(bytes(raw)))
    read_volume(path)
    return "read"


@case(6, "NIfTI whose affine holds NaN")
def _(ctx: Ctx) -> str:
    path = _patched_nifti(ctx.folder / "a.nii.gz", 252, "<hh", (0, 1))
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[280:328] = struct.pack("<12f", float("nan"), *_singular()[1:])
    path.write_bytes(gzip.compress(bytes(raw)))
    read_volume(path)
    return "read"


@case(6, "NIfTI of complex voxels")
def _(ctx: Ctx) -> str:
    path = ctx.folder / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.complex64), np.eye(4)), path)
    read_volume(path)
    return "read"


@case(6, "NumPy stack of int64 values beyond 2^24 (lost as float32)")
def _(ctx: Ctx) -> str:
    path = ctx.folder / "big.npy"
    np.save(path, np.array([0, 2**30] * 6, np.int64).reshape(3, 2, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_volume(path)
    said = [str(w.message) for w in caught if issubclass(w.category, NumsnetWarning)]
    expect(bool(said), "no warning")
    return f"read with a warning: {said[0]}"


@case(7, "1 KB NIfTI whose header claims 1000x1000x1000 int16 (uncompressed)")
def _(ctx: Ctx) -> str:
    read_volume(_patched_nifti(ctx.folder / "a.nii", 42, "<hhh", (1000, 1000, 1000), gz=False))
    return "read"


@case(7, "small .nii.gz whose header claims 1000x1000x1000 voxels")
def _(ctx: Ctx) -> str:
    start = time.perf_counter()
    try:
        read_volume(_patched_nifti(ctx.folder / "a.nii.gz", 42, "<hhh", (1000, 1000, 1000)))
    except NumsnetError as exc:
        return f"refused in {time.perf_counter() - start:.2f} s: {exc}"
    return "read"


@case(7, ".npy whose header claims 2000x2000x2000 float64")
def _(ctx: Ctx) -> str:
    path = ctx.folder / "a.npy"
    np.save(path, np.zeros((2, 2, 2)))
    path.write_bytes(path.read_bytes().replace(b"(2, 2, 2), }", b"(2000,2000,2000),}"))
    read_volume(path)
    return "read"


@case(7, "NIfTI cut in half (header fine, data short)")
def _(ctx: Ctx) -> str:
    path = nifti(ctx.folder / "a.nii")
    path.write_bytes(path.read_bytes()[:600])
    read_volume(path)
    return "read"


@case(7, "checkpoint whose model widths were edited to 100000")
def _(ctx: Ctx) -> str:
    path = save_checkpoint(tiny_checkpoint(), ctx.folder / "m.numsnet.pt")
    data = torch.load(path, weights_only=True)
    data["model_config"]["widths"] = [100000] * 5
    torch.save(data, path)
    start = time.perf_counter()
    try:
        load_checkpoint(path).build_model()
    except NumsnetError as exc:
        return f"refused in {time.perf_counter() - start:.2f} s, before allocating: {exc}"
    return "built"


@case(7, "checkpoint of random bytes, and one cut in half")
def _(ctx: Ctx) -> str:
    path = save_checkpoint(tiny_checkpoint(), ctx.folder / "m.numsnet.pt")
    said = []
    for data in (os.urandom(5000), path.read_bytes()[: path.stat().st_size // 2]):
        path.write_bytes(data)
        try:
            load_checkpoint(path)
        except NumsnetError as exc:
            said.append(exc.problem)
    expect(len(said) == 2, "a damaged checkpoint was read")
    return "refused: " + " / ".join(said)
