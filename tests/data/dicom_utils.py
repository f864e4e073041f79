"""Write real DICOM files from the shared images (for reader tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def write_dicom(path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int = 16,
                window: tuple[float, float] | None = None, patient: str = "P1", sex: str = "F",
                age: str = "045Y", institution: str = "Test Hospital", view: str = "PA", with_pixels: bool = True) -> str:
    """Save ``pixels`` ((H, W) gray or (H, W, 3) uint8 RGB) as a Secondary Capture / CR DICOM file."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientSex, ds.PatientAge = patient, sex, age
    ds.InstitutionName, ds.ViewPosition = institution, view
    ds.Modality = "CR" if pixels.ndim == 2 else "XC"
    if with_pixels:
        ds.Rows, ds.Columns = pixels.shape[:2]
        if pixels.ndim == 3:
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit, ds.PixelRepresentation = 7, 0
            ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint8)).tobytes()
        else:
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
            ds.BitsAllocated = ds.BitsStored = bits
            ds.HighBit, ds.PixelRepresentation = bits - 1, 0
            dtype = np.uint16 if bits == 16 else np.uint8
            ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
            if window is not None:
                ds.WindowCenter, ds.WindowWidth = window
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def gray_from_jpeg(path, size: int | None = None) -> np.ndarray:
    img = Image.open(path).convert("L")
    if size:
        img = img.resize((size, size))
    return np.asarray(img)


def write_unknown_vr_dicom(path, source: str) -> str:
    """Copy a real explicit-VR DICOM with SamplesPerPixel's VR replaced by an unknown one ("U)"): pydicom reads
    the file and fails only when the element is parsed, inside the transform chain (a fuzzing find)."""
    raw = open(source, "rb").read()
    at = raw.index(b"\x28\x00\x02\x00US")  # (0028,0002) SamplesPerPixel, VR "US"
    with open(path, "wb") as fh:
        fh.write(raw[:at + 4] + b"U)" + raw[at + 6:])
    return str(path)
