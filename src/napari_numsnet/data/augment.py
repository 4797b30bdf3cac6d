"""Random affine augmentation of image and label slices, on the tensors' own device.

The NUMSnet paper trains with Keras' ImageDataGenerator: rotation, width shift, height
shift and shear ranges 0.2, zoom range [0.8, 1]. Keras reads ``rotation_range`` in
degrees and ``shear_range`` in degrees (recent versions), so 0.2 there would be a
no-op; here rotation and shear are read as radians (0.2 rad, about 11.5 degrees), and
shifts as fractions of the side, as Keras does. Zoom factors are drawn independently
for the two axes, as Keras does; a factor below 1 magnifies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_numsnet.data.patches import patch_window
from napari_numsnet.errors import NumsnetError


def _check_inputs(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.ndim != 4 or labels.ndim != 3:
        raise NumsnetError(
            f"Got images {tuple(images.shape)} and labels {tuple(labels.shape)}.",
            "Pass images as (B, C, H, W) and labels as (B, H, W).",
        )
    if images.shape[0] != labels.shape[0] or images.shape[2:] != labels.shape[1:]:
        raise NumsnetError(
            f"Images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match.",
            "Give one label slice of the same size per image slice.",
        )


def affine_matrices(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    rotation: float = 0.2,
    shift: float = 0.2,
    shear: float = 0.2,
    zoom: tuple[float, float] = (0.8, 1.0),
    mirror: bool = False,
) -> torch.Tensor:
    """Draw ``n`` random affine maps in the normalised coordinates of ``F.affine_grid``.

    Parameters
    ----------
    n
        Number of transforms.
    height, width
        Slice size in pixels (the maps are built in pixels so that rotations stay
        rotations on non-square slices).
    generator
        Source of randomness; the draws are made on its device.
    rotation, shear
        Half-widths of the uniform ranges, radians.
    shift
        Half-width of the uniform range of shifts, fraction of the side.
    zoom
        ``(low, high)`` range of the scale factors of each axis; below 1 magnifies.
    mirror
        Also flip each axis with probability 1/2 (nnU-Net's mirroring). The flips are
        drawn after the other parameters, so ``False`` leaves the draws as they were.

    Returns
    -------
    torch.Tensor
        ``(n, 2, 3)`` float32 on the generator's device: output to input coordinates.
    """
    if min(rotation, shift, shear) < 0 or not 0 < zoom[0] <= zoom[1]:
        raise NumsnetError(
            f"Invalid augmentation ranges: rotation={rotation}, shift={shift}, "
            f"shear={shear}, zoom={zoom}.",
            "Use non-negative rotation, shift and shear, and 0 < zoom low <= zoom high.",
        )
    u = torch.rand(n, 6, generator=generator, device=generator.device, dtype=torch.float32)
    angle = (2 * u[:, 0] - 1) * rotation
    shift_x = (2 * u[:, 1] - 1) * shift
    shift_y = (2 * u[:, 2] - 1) * shift
    skew = (2 * u[:, 3] - 1) * shear
    zoom_x = zoom[0] + u[:, 4] * (zoom[1] - zoom[0])
    zoom_y = zoom[0] + u[:, 5] * (zoom[1] - zoom[0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    one = torch.ones_like(angle)
    rot = torch.stack([cos, -sin, sin, cos], dim=1).view(n, 2, 2)
    shr = torch.stack([one, -torch.sin(skew), zero, torch.cos(skew)], dim=1).view(n, 2, 2)
    scl = torch.stack([zoom_x, zero, zero, zoom_y], dim=1).view(n, 2, 2)
    pixel = rot @ shr @ scl  # (x, y) in pixels about the centre
    half = torch.tensor([width / 2, height / 2], device=u.device, dtype=u.dtype)
    linear = pixel * half.view(1, 1, 2) / half.view(1, 2, 1)  # S^-1 A S
    if mirror:  # x -> -x and/or y -> -y in the output, before the map
        flips = torch.rand(n, 2, generator=generator, device=generator.device) < 0.5
        linear = linear * torch.where(flips, -1.0, 1.0).view(n, 1, 2)
    translation = torch.stack([2 * shift_x, 2 * shift_y], dim=1).view(n, 2, 1)
    return torch.cat([linear, translation], dim=2)


def random_affine(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    same_for_batch: bool = False,
    rotation: float = 0.2,
    shift: float = 0.2,
    shear: float = 0.2,
    zoom: tuple[float, float] = (0.8, 1.0),
    mirror: bool = False,
    size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random rotation, shift, shear and zoom per slice (or per batch).

    Parameters
    ----------
    images
        ``(B, C, H, W)`` float, any device.
    labels
        ``(B, H, W)`` long, same device.
    generator
        Source of randomness; the same seed gives the same transforms.
    same_for_batch
        ``True``: one transform for the whole batch, so that an ordered sequence of
        neighbouring slices stays aligned (NUMSnet). ``False``: one per slice.
    rotation, shear
        Half-widths of the uniform ranges, radians.
    shift
        Half-width of the uniform range of shifts, fraction of the side.
    zoom
        ``(low, high)`` range of the scale factors; below 1 magnifies.
    mirror
        Also flip each in-plane axis with probability 1/2 (see :func:`affine_matrices`).
    size
        Side of a square patch, pixels, cut at a random place of each transformed slice
        (one place per transform) at the slice's own scale, as nnU-Net trains on
        patches; 0, or a side not smaller than the slice's: the whole slice.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        Images ``(B, C, P, P)`` (``P`` = ``size``, else ``(H, W)``), same dtype,
        bilinear, borders repeated; labels ``(B, P, P)`` long, nearest, 0 (background)
        where the slice was moved away. Labels only take values that were present in
        the input.
    """
    images, labels, _ = random_affine_patch(
        images,
        labels,
        None,
        generator,
        same_for_batch,
        rotation,
        shift,
        shear,
        zoom,
        mirror,
        size,
    )
    return images, labels


def random_affine_patch(
    images: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    generator: torch.Generator,
    same_for_batch: bool = False,
    rotation: float = 0.2,
    shift: float = 0.2,
    shear: float = 0.2,
    zoom: tuple[float, float] = (0.8, 1.0),
    mirror: bool = False,
    size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`random_affine` that also carries a loss mask through the same transform.

    Parameters
    ----------
    images, labels, generator, same_for_batch, rotation, shift, shear, zoom, mirror, size
        As :func:`random_affine`.
    mask
        ``(B, H, W)`` bool, the pixels that enter the loss, or ``None``. It is sampled
        nearest with its borders repeated, so a slice wholly in (or out of) the loss
        stays so, moved-in border included.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
        Images and labels as :func:`random_affine`; the mask ``(B, P, P)`` bool, or
        ``None``.
    """
    _check_inputs(images, labels)
    batch, _, height, width = images.shape
    n = 1 if same_for_batch else batch
    theta = affine_matrices(n, height, width, generator, rotation, shift, shear, zoom, mirror)
    out_height, out_width = height, width
    if 0 < size < min(height, width):
        theta = patch_window(theta, height, width, size, generator)
        out_height = out_width = size
    theta = theta.to(images.device).expand(batch, 2, 3)
    grid = F.affine_grid(theta, [batch, 1, out_height, out_width], align_corners=False)
    out_images = F.grid_sample(
        images,
        grid.to(images.dtype),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    out_labels = F.grid_sample(
        labels[:, None].to(torch.float32),
        grid,
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    out_mask = None
    if mask is not None:
        out_mask = (
            F.grid_sample(
                mask[:, None].to(torch.float32),
                grid,
                mode="nearest",
                padding_mode="border",
                align_corners=False,
            )[:, 0]
            .round()
            .to(torch.bool)
        )
    return out_images, out_labels[:, 0].round().to(torch.long), out_mask


def _draw(n: int, generator: torch.Generator, low: float, high: float) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device)
    return low + (high - low) * u


def _applies(n: int, generator: torch.Generator, probability: float) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) < probability


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with one ``sigma`` (pixels) per slice."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None].to(images.dtype) ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)  # (B, 7)
    batch, channels, height, width = images.shape
    x = images.reshape(1, batch * channels, height, width)
    k = kernels.repeat_interleave(channels, 0)
    pad = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(pad, k[:, None, None, :], groups=batch * channels)
    pad = F.pad(x, (0, 0, radius, radius), mode="replicate")
    x = F.conv2d(pad, k[:, None, :, None], groups=batch * channels)
    return x.reshape(batch, channels, height, width)


def random_intensity(
    images: torch.Tensor, generator: torch.Generator, same_for_batch: bool = False
) -> torch.Tensor:
    """nnU-Net's intensity augmentation on normalised slices.

    Each with its own probability per slice (or per batch): brightness (x0.75-1.25,
    p 0.15), contrast about the slice mean (x0.75-1.25, p 0.15), gamma 0.7-1.5 on the
    slice's own range (p 0.3), Gaussian noise of up to 0.1 of the slice's standard deviation
    (p 0.1) and a Gaussian blur of sigma 0.5-1 pixel (p 0.2).

    Parameters
    ----------
    images
        ``(B, C, H, W)`` float, normalised intensities, any device.
    generator
        Source of randomness; the same seed gives the same changes.
    same_for_batch
        ``True``: one draw for the whole batch (an ordered run of neighbouring slices).

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)``, same dtype and device.
    """
    batch = images.shape[0]
    n = 1 if same_for_batch else batch

    def per_slice(values: torch.Tensor) -> torch.Tensor:
        return values.to(images.device, images.dtype).expand(batch).view(batch, 1, 1, 1)

    x = images
    axes = (1, 2, 3)
    scale = torch.where(_applies(n, generator, 0.15), _draw(n, generator, 0.75, 1.25), 1.0)
    x = x * per_slice(scale)
    factor = torch.where(_applies(n, generator, 0.15), _draw(n, generator, 0.75, 1.25), 1.0)
    mean = x.mean(axes, keepdim=True)
    x = mean + (x - mean) * per_slice(factor)
    gamma = torch.where(_applies(n, generator, 0.3), _draw(n, generator, 0.7, 1.5), 1.0)
    if bool((gamma != 1.0).any()):
        low, high = x.amin(axes, keepdim=True), x.amax(axes, keepdim=True)
        span = (high - low).clamp_min(1e-6)
        x = low + span * ((x - low) / span).clamp(0, 1) ** per_slice(gamma)
    sigma = torch.where(_applies(n, generator, 0.1), _draw(n, generator, 0.0, 0.1), 0.0)
    if bool((sigma > 0).any()):
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        x = x + noise.to(x.device, x.dtype) * per_slice(sigma) * x.std(axes, keepdim=True)
    blur = torch.where(_applies(n, generator, 0.2), _draw(n, generator, 0.5, 1.0), 0.0)
    if bool((blur > 0).any()):
        blurred = gaussian_blur(x, per_slice(blur.clamp_min(0.1)).flatten())
        x = torch.where(per_slice(blur) > 0, blurred, x)
    return x


def colour_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    probability: float = 0.8,
    strength: float = 0.5,
) -> torch.Tensor:
    """Torchvision's brightness and contrast jitter on grey slices, as UniMatch draws it.

    Parameters
    ----------
    images
        ``(B, C, H, W)`` float normalised slices.
    generator
        Source of randomness.
    probability
        Chance that a slice is jittered at all.
    strength
        Brightness and contrast factors are drawn from ``[1 - strength, 1 + strength]``;
        contrast scales about the slice mean.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)``, same dtype and device.
    """
    n = images.shape[0]
    on = _applies(n, generator, probability)
    low, high = 1.0 - strength, 1.0 + strength
    brightness = torch.where(on, _draw(n, generator, low, high), 1.0)
    contrast = torch.where(on, _draw(n, generator, low, high), 1.0)
    shape = (n, 1, 1, 1)
    x = images * brightness.to(images.device, images.dtype).view(shape)
    mean = x.mean((1, 2, 3), keepdim=True)
    return mean + (x - mean) * contrast.to(images.device, images.dtype).view(shape)


def cutmix_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    probability: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """Random boxes for CutMix, one per slice, as UniMatch draws them.

    Parameters
    ----------
    n, height, width
        Number of masks and their size in pixels.
    generator
        Source of randomness; masks are made on its device.
    probability
        Chance that a slice gets a box; the others get an empty mask.
    area
        Range of the box's area, fraction of the slice.
    aspect
        Range of the box's height over width.

    Returns
    -------
    torch.Tensor
        ``(n, height, width)`` bool: ``True`` inside the box.
    """
    device = generator.device
    on = _applies(n, generator, probability)
    size = _draw(n, generator, *area) * height * width
    ratio = _draw(n, generator, *aspect)
    box_h = (size * ratio).sqrt().clamp(1, height).floor()
    box_w = (size / ratio).sqrt().clamp(1, width).floor()
    top = (_draw(n, generator, 0.0, 1.0) * (height - box_h + 1)).floor()
    left = (_draw(n, generator, 0.0, 1.0) * (width - box_w + 1)).floor()
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside_rows = (rows >= top.view(n, 1, 1)) & (rows < (top + box_h).view(n, 1, 1))
    inside_cols = (cols >= left.view(n, 1, 1)) & (cols < (left + box_w).view(n, 1, 1))
    return inside_rows & inside_cols & on.view(n, 1, 1)
