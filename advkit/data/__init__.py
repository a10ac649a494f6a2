"""Image and dataset I/O: read/write images, dataset sources behind one interface."""

from advkit.data.images import (
    IMAGE_EXTENSIONS,
    ImageConversionWarning,
    from_uint8_hwc,
    read_image,
    read_image_uint8,
    resize_center_crop,
    to_uint8_hwc,
    write_png,
)
from advkit.data.store import (
    PairDataset,
    PairStore,
    PairStoreWriter,
    merge_stores,
    quantize_delta,
    reconstruct_adv,
)
from advkit.data.sources import (
    CIFAR10_CLASSES,
    SAMPLE_IMAGES,
    ImageSource,
    iter_batches,
    open_source,
    resolve_classes,
    select_indices,
)

__all__ = [
    "PairDataset",
    "PairStore",
    "PairStoreWriter",
    "merge_stores",
    "quantize_delta",
    "reconstruct_adv",
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_IMAGES",
    "ImageConversionWarning",
    "ImageSource",
    "from_uint8_hwc",
    "iter_batches",
    "open_source",
    "read_image",
    "read_image_uint8",
    "resize_center_crop",
    "resolve_classes",
    "select_indices",
    "to_uint8_hwc",
    "write_png",
]
