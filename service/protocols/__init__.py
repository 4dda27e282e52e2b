"""Wire formats other than the plain upload: TF Serving/SageMaker JSON, the Open Inference Protocol, DICOM results."""
