"""mrtutor: the package behind the book *Model-based deep learning for MRI, rebuilt paper by paper*.

Small flat modules, one concept each: ``fft``, ``sense``, ``operators`` (forward operators beyond
MRI), ``masks``, ``cg``, ``recon``, ``metrics``, ``evaluate``, ``source`` (the package's code as the
chapters list it), ``data`` (a package of small modules: anatomy, acquisition, demo dataset, loaders,
downloads), ``config``, ``viz``, ``checkpoints``, ``recipes`` (how each method is trained),
``train`` (the loop they share) and, chapter by chapter, the methods of the five papers, each with
its recipes: ``modl`` (MoDL), ``deq`` and ``mol`` (MOL), ``npgd`` (neural proximal gradient descent),
``sgp`` and ``sgp_training`` (learned stepsizes for scaled gradient projection; recipes ``sgp`` and
``sgp_unet``, ``sgp_mri``), ``untrained`` (ConvDecoder, Deep Decoder and Deep Image Prior, fitted to one scan)
with ``fits`` (their stored reconstructions, in place of checkpoints), and ``unet`` (fastMRI's trained U-Net).
"""

__version__ = "0.1.0"
