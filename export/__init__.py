"""ONNX export of the student, and a runtime that needs only numpy and ONNX Runtime.

Importing this package imports nothing heavy: ``export.runtime`` must stay free of torch and of the
training packages.
"""
