"""Data: the embedded demo dataset (real brain anatomy, simulated multi-coil acquisition), images for
robustness tests, and loaders for the real datasets (fastMRI, MoDL brain), all yielding one layout.

Sample layout (every dataset here; DESIGN.md conventions, CPU tensors, so a ``DataLoader`` batches
them into (B, ...)):

* ``kspace`` (C, H, W) complex64: the measured, noisy k-space, centred, ALREADY MASKED
  (``mask * fully_sampled_kspace``);
* ``mask`` (H, W) float32: the 0/1 centred sampling mask that was applied;
* ``maps`` (C, H, W) complex64: coil sensitivities (unit sum of squares on the object);
* ``target`` (H, W) complex64: the reference image, magnitude max 1;
* ``scale`` (float): the factor the raw data were multiplied by to make ``max |target| = 1``;
* ``subject`` (str), ``slice_id`` (str), ``fname`` (str), ``slice`` (int): where it came from.

``dataset.fully_sampled(i)`` gives the same sample with the unmasked k-space and a mask of ones.

Submodules, one concept each (imports flow down this list, never up):

* ``files``: the cache directory ``data_root()``, ``DataFileError``, atomic writes, file and array
  digests, h5 handles;
* ``numerics``: numpy twins of ``mrtutor.fft`` and seeded random generators;
* ``anatomy``: the Colin27 and MNI152 heads (``load_head``, ``synthetic_head``), their slices and the
  slab split (``slice_table``);
* ``acquisition``: the simulated multi-coil scan (``simulate_acquisition``), phase and coil maps;
* ``datasets``: ``KspaceDataset``, the base of every dataset, and its masks (``NamedMask``);
* ``fastmri``: ``FastMRIDataset`` (fastMRI files and the demo files) and cached ESPIRiT maps;
* ``modl``: ``ModlDataset`` (the MoDL brain ``dataset.hdf5``);
* ``demo``: the embedded demo dataset (``demo_dataset``, ``build_demo_data``, ``subject_split``, ``subject_indices``),
  with the notes on how it is simulated and split;
* ``single_coil``: the single-coil version of any of them (``SingleCoil``: one coil measuring the
  reference image's Fourier coefficients, as in Neural PGD's experiment);
* ``natural``: super-resolution pairs (``superresolution_dataset``): crops of scikit-image's
  photographs and the demo brain slices with their 2x2 block means, for Neural PGD's Sec. 5.3;
* ``sparse_recovery``: chapter 5's problems (inpainting, Fourier, deblurring, CT) on photographs and
  brain slices, with their converged l1-synthesis solutions, cached (``sparse_recovery_dataset``);
* ``ood``: out-of-distribution images through the same acquisition (``ood_samples``);
* ``downloads``: ``download`` (resumable, checksummed, atomic) and ``download_modl_dataset``.

Every public name is importable from ``mrtutor.data`` itself.
"""

from mrtutor.data.files import DataFileError, data_root, file_digest
from mrtutor.data.anatomy import (
    COLIN27_FILE,
    HEAD_LAYERS,
    MIN_AREA_FRACTION,
    MNI152_FILENAME,
    ORIENTATIONS,
    SLAB_MM,
    SLAB_PATTERN,
    SPLITS,
    SUBJECTS,
    load_head,
    mni152_file,
    slice_table,
    synthetic_head,
)
from mrtutor.data.acquisition import (
    COIL_RADII,
    FIELD_OF_VIEW_MM,
    OVERSAMPLE,
    birdcage_coil_maps,
    simulate_acquisition,
    smooth_phase,
)
from mrtutor.data.datasets import KspaceDataset, MaskFn, NamedMask
from mrtutor.data.fastmri import FastMRIDataset, espirit_maps_file
from mrtutor.data.modl import ModlDataset
from mrtutor.data.demo import (
    ACQUISITION,
    VERSION,
    build_demo_data,
    demo_dataset,
    demo_dir,
    demo_manifest,
    subject_indices,
    subject_split,
)
from mrtutor.data.ood import OOD_NAMES, ood_samples
from mrtutor.data.single_coil import SingleCoil
from mrtutor.data.natural import (PHOTOGRAPHS, SuperResolutionDataset, brain_slices, photograph, random_crop,
                                  superresolution_dataset)
from mrtutor.data.sparse_recovery import SparseRecoveryDataset, forward_operator, sparse_recovery_dataset
from mrtutor.data.downloads import MODL_ZENODO_RECORD, download, download_modl_dataset

__all__ = [
    # files
    "DataFileError",
    "data_root",
    "file_digest",
    # anatomy
    "COLIN27_FILE",
    "HEAD_LAYERS",
    "MIN_AREA_FRACTION",
    "MNI152_FILENAME",
    "ORIENTATIONS",
    "SLAB_MM",
    "SLAB_PATTERN",
    "SPLITS",
    "SUBJECTS",
    "load_head",
    "mni152_file",
    "slice_table",
    "synthetic_head",
    # acquisition
    "COIL_RADII",
    "FIELD_OF_VIEW_MM",
    "OVERSAMPLE",
    "birdcage_coil_maps",
    "simulate_acquisition",
    "smooth_phase",
    # datasets
    "KspaceDataset",
    "MaskFn",
    "NamedMask",
    # fastmri, modl
    "FastMRIDataset",
    "espirit_maps_file",
    "ModlDataset",
    # demo
    "ACQUISITION",
    "VERSION",
    "build_demo_data",
    "demo_dataset",
    "demo_dir",
    "demo_manifest",
    "subject_indices",
    "subject_split",
    # single coil
    "SingleCoil",
    # natural
    "PHOTOGRAPHS",
    "SuperResolutionDataset",
    "brain_slices",
    "photograph",
    "random_crop",
    "superresolution_dataset",
    # sparse recovery
    "SparseRecoveryDataset",
    "forward_operator",
    "sparse_recovery_dataset",
    # ood
    "OOD_NAMES",
    "ood_samples",
    # downloads
    "MODL_ZENODO_RECORD",
    "download",
    "download_modl_dataset",
]
