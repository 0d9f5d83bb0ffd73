"""mrtutor: the package behind the book *Model-based deep learning for MRI, rebuilt paper by paper*.

Small flat modules, one concept each: ``fft``, ``sense``, ``masks``, ``cg``, ``recon``, ``metrics``,
``evaluate``, ``data``, ``config``, ``viz``, ``checkpoints``, ``train`` and, chapter by chapter, the
methods of the five papers: ``modl`` (MoDL), ``deq`` and ``mol`` (MOL).
"""

__version__ = "0.1.0"
