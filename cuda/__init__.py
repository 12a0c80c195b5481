"""Our own kernels (C++/OpenMP for the CPU, CUDA for the GPU), each with a ``*_ref`` PyTorch twin.

Nothing here compiles at import time.
"""
