"""Paths of the committed CT samples (medkit/data/samples/ct, see the README there)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CT = ROOT / "medkit" / "data" / "samples" / "ct"
TS = CT / "totalsegmentator"
NIFTI = TS / "example_ct_sm.nii.gz"  # 122 x 101 x 30 at 3 mm
NIFTI_SEG = TS / "example_seg.nii.gz"  # TotalSegmentator labels on NIFTI
DICOM = TS / "example_ct_dicom"  # 20-slice 512 x 512 series
DICOM_SEG = TS / "example_seg_dicom.nii.gz"
DCMQI = CT / "dcmqi" / "ct-3slice"  # 3 slices 512 x 512 at 1 mm
DCMQI_LIVER = CT / "dcmqi" / "liver_seg.nrrd"
LIVER_TOTALSEG = 5
