"""mrtutor: the package behind the book *Model-based deep learning for MRI, rebuilt paper by paper*.

Small flat modules, one concept each: ``fft``, ``sense``, ``masks``, ``cg``, ``recon``, ``metrics``,
``data``, ``config`` and, chapter by chapter, the networks of the five papers.
"""

__version__ = "0.1.0"
