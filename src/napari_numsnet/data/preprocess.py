"""Turn raw stacks into network input and network output back into the stack's grid.

Order, as in the NUMSnet paper: intensity window (optional, HU for CT), clipping to
percentiles of the stack (optional, for MRI), normalisation
over the whole stack (min-max, paper eq. 1, by default), then each slice resized to
``size x size``. With ``size=None`` slices keep their native size and are padded at the
bottom and right up to a multiple of 16 (four 2x poolings), which ``restore_*`` crop away.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

from napari_numsnet.config import PreprocessConfig
from napari_numsnet.errors import NumsnetError

#: Side lengths are padded to a multiple of this when ``size`` is ``None``.
PAD_MULTIPLE = 16


def _check_stack(x: np.ndarray, name: str = "The stack") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise NumsnetError(
            f"{name} has shape {x.shape}; a 3D stack (Z, H, W) is needed.",
            "Pass one stack of slices (slices x rows x columns).",
        )
    return x


def _check_finite(x: np.ndarray) -> None:
    if np.issubdtype(x.dtype, np.floating):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise NumsnetError(
                f"The stack holds {bad} NaN or infinite values.",
                "Fix the file (replace them, e.g. with the background value) and open it again.",
            )


def apply_window(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip intensities to ``[low, high]``.

    Parameters
    ----------
    x
        Any shape, e.g. ``(Z, H, W)`` in HU.
    low, high
        Window bounds in the units of ``x`` (HU for CT), ``low < high``.

    Returns
    -------
    np.ndarray
        Same shape, float32.
    """
    if not low < high:
        raise NumsnetError(
            f"Window ({low}, {high}) is empty.", "Give (low, high) with low < high."
        )
    return np.clip(np.asarray(x, dtype=np.float32), low, high)


def clip_percentiles(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip intensities to the ``low`` and ``high`` percentiles of the whole array.

    Parameters
    ----------
    x
        Any shape, e.g. ``(Z, H, W)`` MRI intensities (arbitrary units).
    low, high
        Percentiles, ``0 <= low < high <= 100``.

    Returns
    -------
    np.ndarray
        Same shape, float32.
    """
    x = np.asarray(x, dtype=np.float32)
    if (low, high) == (0.0, 100.0):
        return x
    bottom, top = np.percentile(x, [low, high])
    return np.clip(x, np.float32(bottom), np.float32(top))


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the whole array: ``(x - min) / (max - min)`` (paper eq. 1).

    Returns
    -------
    np.ndarray
        Same shape, float32.

    Raises
    ------
    NumsnetError
        ``x`` is constant (min == max): there is nothing to learn from it.
    """
    x = np.asarray(x, dtype=np.float32)
    low, high = float(x.min()), float(x.max())
    if low == high:
        raise NumsnetError(
            f"The stack is constant (every value is {low}): there is nothing to learn.",
            "Open another stack, or widen the intensity window if one is set.",
        )
    return (x - np.float32(low)) / np.float32(high - low)


def zscore(x: np.ndarray) -> np.ndarray:
    """Subtract the mean and divide by the standard deviation of the whole array.

    Returns
    -------
    np.ndarray
        Same shape, float32, mean 0 and standard deviation 1.
    """
    x = np.asarray(x, dtype=np.float32)
    mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))
    if std == 0.0:
        raise NumsnetError(
            f"The stack is constant (every value is {mean}): there is nothing to learn.",
            "Open another stack, or widen the intensity window if one is set.",
        )
    return ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)


def resize_stack(x: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Resize every slice of a stack to ``size``.

    Parameters
    ----------
    x
        ``(Z, H, W)`` images (any real dtype) or labels (integer).
    size
        ``(H', W')`` in pixels.
    order
        Spline order: 0 (nearest) for labels, 1 (linear) for images and probabilities.

    Returns
    -------
    np.ndarray
        ``(Z, H', W')``: float32 for ``order > 0`` (anti-aliased when shrinking), the
        dtype of ``x`` for ``order == 0`` (values are only copied, never mixed).
    """
    x = _check_stack(x)
    out_shape = (int(size[0]), int(size[1]))
    labels = order == 0
    out = np.empty((x.shape[0], *out_shape), dtype=x.dtype if labels else np.float32)
    if x.shape[1:] == out_shape:
        out[...] = x
        return out
    for z in range(x.shape[0]):
        out[z] = resize(
            x[z] if labels else x[z].astype(np.float32),
            out_shape,
            order=order,
            preserve_range=True,
            anti_aliasing=not labels,
            mode="edge",
        )
    return out


class Preprocessor:
    """Apply a ``PreprocessConfig`` to stacks and undo its resizing on predictions.

    Parameters
    ----------
    config
        Window, normalisation and slice size.

    Attributes
    ----------
    pad
        ``(rows, columns)`` added at the bottom and right by the last ``prepare`` or
        ``prepare_labels`` when ``config.size`` is ``None``; ``(0, 0)`` otherwise.
    """

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config if config is not None else PreprocessConfig()
        if self.config.normalization not in ("minmax", "zscore", "none"):
            raise NumsnetError(
                f"Unknown normalization {self.config.normalization!r}.",
                "Choose one of: minmax, zscore, none.",
            )
        clip = self.config.clip_percentiles
        if clip is not None and not 0.0 <= clip[0] < clip[1] <= 100.0:
            raise NumsnetError(
                f"Clipping percentiles {tuple(clip)} are not 0 <= low < high <= 100.",
                "Give two percentiles, e.g. (0.5, 99.5), or None for no clipping.",
            )
        if self.config.size is not None and self.config.size < 1:
            raise NumsnetError(
                f"Slice size {self.config.size} is not positive.",
                "Give a side length in pixels (e.g. 256), or None for the native size.",
            )
        self.pad: tuple[int, int] = (0, 0)

    def output_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Slice shape the network sees for native slices of ``shape`` ``(H, W)``."""
        if self.config.size is not None:
            return (self.config.size, self.config.size)
        return tuple(-(-int(s) // PAD_MULTIPLE) * PAD_MULTIPLE for s in shape)  # type: ignore[return-value]

    def _to_output(self, x: np.ndarray, order: int, fill: float) -> np.ndarray:
        if self.config.size is not None:
            self.pad = (0, 0)
            return resize_stack(x, (self.config.size, self.config.size), order)
        out_h, out_w = self.output_shape(x.shape[1:])
        self.pad = (out_h - x.shape[1], out_w - x.shape[2])
        return np.pad(x, ((0, 0), (0, self.pad[0]), (0, self.pad[1])), constant_values=fill)

    def prepare(self, stack: np.ndarray) -> np.ndarray:
        """Window, normalise and resize (or pad) an image stack.

        Parameters
        ----------
        stack
            ``(Z, H, W)`` raw intensities (HU for CT).

        Returns
        -------
        np.ndarray
            ``(Z, S, S)`` float32 with ``S = config.size``, or ``(Z, H', W')`` with
            ``H', W'`` the next multiples of 16 when ``config.size`` is ``None`` (padded
            with the stack's minimum after normalisation).

        Raises
        ------
        NumsnetError
            Not 3D, NaN or infinite values, or a constant stack.
        """
        x = _check_stack(stack)
        _check_finite(x)
        cfg = self.config
        x = apply_window(x, *cfg.window) if cfg.window is not None else x.astype(np.float32)
        if cfg.clip_percentiles is not None:
            x = clip_percentiles(x, *cfg.clip_percentiles)
        if cfg.normalization == "minmax":
            x = minmax(x)
        elif cfg.normalization == "zscore":
            x = zscore(x)
        elif float(x.min()) == float(x.max()):
            raise NumsnetError(
                f"The stack is constant (every value is {float(x.min())}): there is "
                "nothing to learn.",
                "Open another stack, or widen the intensity window if one is set.",
            )
        return self._to_output(x, order=1, fill=float(x.min()))

    def prepare_labels(self, labels: np.ndarray) -> np.ndarray:
        """Resize (nearest) or pad (with 0) a label stack like ``prepare`` does images.

        Parameters
        ----------
        labels
            ``(Z, H, W)`` integer labels.

        Returns
        -------
        np.ndarray
            ``(Z, S, S)`` int64 (or padded ``(Z, H', W')``).
        """
        y = _check_stack(labels, "The label stack")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
            raise NumsnetError(
                f"The label stack has dtype {y.dtype}; labels must be integers.",
                "Use an integer label image (0 = background, 1, 2, ... = classes).",
            )
        return self._to_output(y.astype(np.int64), order=0, fill=0)

    def _check_output(self, x: np.ndarray, shape: tuple[int, int], name: str) -> None:
        expected = self.output_shape(shape)
        if tuple(x.shape[-2:]) != expected:
            raise NumsnetError(
                f"{name} have slices of {tuple(x.shape[-2:])} but {expected} is expected "
                f"for native slices of {tuple(shape)}.",
                "Restore predictions made with this preprocessing, to this stack's shape.",
            )

    def restore_labels(self, labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Bring predicted labels back to the native slice size.

        Parameters
        ----------
        labels
            ``(Z, S, S)`` integer labels on the network grid.
        shape
            Native slice shape ``(H, W)``.

        Returns
        -------
        np.ndarray
            ``(Z, H, W)``, dtype of ``labels`` (nearest-neighbour resize, or crop).
        """
        y = _check_stack(labels, "The label stack")
        self._check_output(y, shape, "Labels")
        if self.config.size is None:
            return y[:, : shape[0], : shape[1]].copy()
        return resize_stack(y, shape, order=0)

    def restore_probabilities(self, prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Bring class probabilities back to the native slice size.

        Parameters
        ----------
        prob
            ``(C, Z, S, S)`` probabilities on the network grid.
        shape
            Native slice shape ``(H, W)``.

        Returns
        -------
        np.ndarray
            ``(C, Z, H, W)`` float32 (linear resize, or crop).
        """
        prob = np.asarray(prob)
        if prob.ndim != 4:
            raise NumsnetError(
                f"Probabilities have shape {prob.shape}; (C, Z, S, S) is needed.",
                "Pass one plane per class for every slice of the stack.",
            )
        self._check_output(prob, shape, "Probabilities")
        if self.config.size is None:
            return prob[..., : shape[0], : shape[1]].astype(np.float32)
        out = np.empty((prob.shape[0], prob.shape[1], *shape), dtype=np.float32)
        for c in range(prob.shape[0]):
            out[c] = resize_stack(prob[c], shape, order=1)
        return out
