"""Our hash-grid kernels (Instant-NGP's multiresolution hash encoding) and their twins, behind one seam.

* :mod:`cuda.hashgrid_ref` - the layout (``HashGridSpec``, tiny-cuda-nn's) and the pure-PyTorch reference
  ``hash_encode_ref``, which every other way is tested against;
* ``hashgrid_cpu.cpp`` - the C++/OpenMP CPU kernel (forward, backward into the table and the points);
* ``hashgrid_cuda.cu`` - the CUDA kernel (compile-checked with nvcc; never run on this project's machines);
* :mod:`cuda.hashgrid` - ``hash_encode``: validates inputs (``ValueError``) and runs either kernel through one
  ``autograd.Function``; :mod:`cuda.build` compiles them on first use, never at import;
* :mod:`cuda.hashgrid_graph` - the ONNX twin: the same lookup in standard ONNX ops, what an exported
  student computes;
* :mod:`cuda.backend` - ``HashGrid``, the module teacher and student hold, and the backend seam
  (``auto`` = tiny-cuda-nn -> cuda -> cpu -> torch; ``graph`` on request). All hold one flat float32
  ``params`` in tiny-cuda-nn's layout, so checkpoints move between backends.

Tests: ``tests/test_hashgrid_ref.py``, ``tests/test_hashgrid_kernels.py``, ``tests/test_hashgrid_graph.py``;
what each covers: ``cuda/README.md``.
"""
