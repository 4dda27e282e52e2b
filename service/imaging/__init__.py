"""Bytes to model input: decoding (JPEG, PNG, DICOM), the brain crop and resize, overlays."""
