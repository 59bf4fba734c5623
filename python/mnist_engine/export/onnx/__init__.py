"""The ONNX exporter (``mnist_engine.export_onnx``; its entry point is exporter.py). ``onnx`` is
imported only when an export runs."""
