"""Write an RGB array as a DICOM WSI series with wsidicom (tests, benchmarks, small exports).

wsidicom writes the files (``WsiDicom.save``): the level-0 instance from the array, the lower
pyramid levels it computes (``add_missing_levels``) and a label instance. The array reaches it
as a wsidicom ``ImageData`` (:class:`ArrayImageData`: tiles cut from the array, padded white),
uncompressed (Explicit VR Little Endian, lossless) or JPEG baseline. Not used by any reader.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from wsidicom.geometry import Point, Size, SizeMm
from wsidicom.instance import NumpyImageData
from wsidicom.metadata import LossyCompression


class ArrayImageData(NumpyImageData):
    """An ``(H, W, 3)`` uint8 array as tiled wsidicom image data with a pixel spacing."""

    def __init__(self, array: np.ndarray, tile: int, mpp: float, jpeg: bool) -> None:
        self._tile, self._mm, self._jpeg = tile, mpp / 1000.0, jpeg
        super().__init__(np.ascontiguousarray(array, dtype=np.uint8))

    @property
    def transfer_syntax(self) -> UID:
        return JPEGBaseline8Bit if self._jpeg else ExplicitVRLittleEndian

    @property
    def photometric_interpretation(self) -> str:
        return "YBR_FULL_422" if self._jpeg else "RGB"

    @property
    def tile_size(self) -> Size:
        return Size(self._tile, self._tile)

    @property
    def pixel_spacing(self) -> SizeMm:
        return SizeMm(self._mm, self._mm)

    @property
    def lossy_compression(self) -> list[LossyCompression] | None:
        return None

    def get_decoded_tile(
        self, tile_point: Point, z: float, path: str, cache: bool = True
    ) -> np.ndarray:
        t = self._tile
        tile = np.full((t, t, 3), 255, np.uint8)
        part = self._pixels[tile_point.y * t : (tile_point.y + 1) * t, tile_point.x * t :][:, :t]
        tile[: part.shape[0], : part.shape[1]] = part
        return tile

    def get_encoded_tile(self, tile: Point, z: float, path: str) -> bytes:
        return self.encoder.encode(self.get_decoded_tile(tile, z, path))


def write_dicom_wsi(
    image: np.ndarray,
    folder: Path,
    *,
    tile: int = 256,
    mpp: float = 0.25,
    manufacturer: str = "napari-xt",
    label: np.ndarray | None = None,
    jpeg: bool = False,
) -> list[Path]:
    """Write ``image`` ((H, W, 3) uint8, ``mpp`` micrometers per pixel) as one DICOM WSI series
    (every level, and ``label`` when given) into ``folder``; returns the files written."""
    from PIL import Image
    from wsidicom import WsiDicom, WsiInstance
    from wsidicom import metadata as md
    from wsidicom.instance import WsiDataset
    from wsidicom.instance.dataset import ImageType
    from wsidicom.metadata.schema.dicom.wsi import WsiMetadataDicomSchema
    from wsidicom.source import Source

    meta = md.WsiMetadata(
        study=md.Study(uid=generate_uid()),
        series=md.Series(uid=generate_uid()),
        patient=md.Patient(),
        equipment=md.Equipment(manufacturer=manufacturer, model_name="wsidicom"),
        slide=md.Slide(
            identifier="slide", samples=[md.SlideSample(identifier="sample", uid=generate_uid())]
        ),
        pyramid=md.Pyramid(image=md.Image(), optical_paths=[md.OpticalPath()], uid=generate_uid()),
        label=md.Label(),
        frame_of_reference_uid=generate_uid(),
        dimension_organization_uids=[generate_uid()],
    )
    base = WsiMetadataDicomSchema().dump(meta, ImageType.VOLUME)
    data = ArrayImageData(image, tile, mpp, jpeg)
    levels = [WsiInstance.create_instance(data, copy.deepcopy(base), ImageType.VOLUME, 0)]
    labels = (
        [WsiInstance.create_label(Image.fromarray(label), copy.deepcopy(base))]
        if label is not None
        else []
    )

    class ArraySource(Source):
        @property
        def base_dataset(self) -> WsiDataset:
            return WsiDataset(base)

        @property
        def level_instances(self) -> list[Any]:
            return levels

        @property
        def label_instances(self) -> list[Any]:
            return labels

        @property
        def overview_instances(self) -> list[Any]:
            return []

        @property
        def thumbnail_instances(self) -> list[Any]:
            return []

        @property
        def annotation_instances(self) -> list[Any]:
            return []

        def close(self) -> None:
            pass

    folder.mkdir(parents=True, exist_ok=True)
    return [Path(str(p)) for p in WsiDicom(ArraySource()).save(folder, add_missing_levels=True)]
