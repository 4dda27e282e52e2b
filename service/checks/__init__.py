"""The checks every answer carries: not an MRI slice, unsure, unlike the training images."""
