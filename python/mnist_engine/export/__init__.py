"""The exporters: a trained model in, a verified ``.mnw`` file out (docs/FORMAT.md).

One module per framework, each importing its framework only when an export runs:
- keras.py: Keras models and ``.keras`` files (``mnist_engine.export_keras``);
- sklearn.py: scikit-learn's MLPClassifier and MLPRegressor (``mnist_engine.export_sklearn``);
- onnx/: ONNX graphs, PyTorch's among them (``mnist_engine.export_onnx``): exporter.py reads the
  graph as one chain, graph.py holds its tensors and constants, builder.py walks it and hands each
  node to its op family (dense, elementwise, products, moving, spatial);
- common.py: what they share: layer drafts and the folding of affine maps into them, hidden-unit
  order, the reference rows and the proof that the engine reproduces the framework, the errors.

The public names live on the package root (``mnist_engine.export_keras`` and so on) and in
tools/export_weights.py and ``mnist-engine export``.
"""
