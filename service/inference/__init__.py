"""The model and its lifecycle: runtimes, loading, versions, hot reload, batching, Grad-CAM."""
