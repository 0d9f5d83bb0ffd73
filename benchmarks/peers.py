"""Time the book's reconstructions against BART and sigpy on the same problems, at matched accuracy, in one run.

A reader who checks this book against the tools of the field reaches for BART (``bart pics``) and sigpy. Each pair
below solves the same problem with weights mapped between the conventions, checked on the results before any time
is reported:

* CG-SENSE, x = (A^H A + lam I)^-1 A^H y: ``recon.cg_sense(op, y, lam)``, ``bart pics -S -w 1 -l2 -r lam`` (the
  same normal equations; ``-w 1`` turns off BART's data scaling and ``-S`` undoes its image scaling) and
  ``sigpy.mri.app.SenseRecon(y, maps, lamda=lam, weights=mask)``, all for 100 iterations. Equal results: a relative
  difference of at most 1e-3. Each tool runs twice: on a 2-D variable-density mask and on a column mask of the same
  acceleration (fastMRI's sampling), where the book's operator needs only 1-D FFTs and the peers still run 2-D ones.
* Total variation, argmin 1/2 ||A x - y||^2 + lam TV(x): ``recon.tv(op, y, lam)`` and
  ``bart pics -S -w 1 -R T:3:0:lam``. The weights carry over unchanged, but the two total variations differ in a
  detail: BART's converged image scores about 1 % higher than ours under our isotropic TV and no lower under the
  anisotropic one, so its finite differences (their boundary or scale) are not exactly ours. The converged images
  agree to 1.5e-2 at the demo size and 2.7e-2 at 64 x 48.
* l1-wavelet, argmin 1/2 ||A x - y||^2 + lam ||W_d x||_1: ``recon.l1_wavelet(op, y, lam, wavelet="haar")`` and
  ``bart pics -S -w 1 -n --wavelet haar -R W:3:0:lam`` (``-n``: no random cycle spinning, which would change the
  problem every iteration). The weights carry over unchanged; the levels and the coarse band are chosen
  differently, so the converged images agree to about 1e-2 (8.4e-3 at the demo size).

TV and l1-wavelet run different algorithms (primal-dual and FISTA here, BART's ADMM and FISTA), so a fixed iteration
count would compare different accuracies. Each tool is timed instead at the fewest iterations, on a ladder of
doublings, that bring it within 1e-3 of its own converged image (2,000 iterations), and the two converged images are
compared to show that the problems match.

BART is called as a user calls it, through its command line with cfl files, and timed as a whole process; the book's
functions and sigpy are timed in this process. Every tool gets the same number of threads. The candidates are timed
in turn, round after round, so that a drift of the machine's speed hits them alike; the table gives medians, minima
and the median of the per-round ratios. BART is installed here by ``apt-get install bart`` when it is missing and
apt is available (``--no-install`` to skip that); without it its rows are skipped with a message.

Run: ``python benchmarks/peers.py [--rounds 5] [--sizes demo knee] [--no-install] [--record]``; ``--record``
keeps the tables for the book's page on speed (``benchmarks/record.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrtutor import config, masks, recon
from mrtutor.data.acquisition import birdcage_coil_maps
from mrtutor.sense import Sense
import record
from sense_normal import interleaved_seconds  # the same interleaved rounds as the normal-operator benchmark

# (coils, height, width, CG-SENSE iterations): the demo tier's size and fastMRI's knee size.
SIZES = {"demo": (8, 128, 128), "knee": (12, 320, 368)}
ACCELERATION = 4
CG_ITERATIONS = 100
LAM = {"cg_sense": 1e-2, "tv": 3e-3, "l1_wavelet": 3e-3}
CONVERGED_ITERATIONS = 2000
LADDER = (25, 50, 100, 200, 400, 800, 1600)
ACCURACY = 1e-3  # of each iterative solver, against its own converged image
MATCH = {"cg_sense": 1e-3, "tv": 3e-2, "l1_wavelet": 3e-2}  # between the tools' converged images


def write_cfl(stem: Path, array: np.ndarray) -> None:
    """BART's format: ``stem.hdr`` with the dimensions, ``stem.cfl`` with complex64 values in column-major order."""
    array = np.asarray(array, dtype=np.complex64)
    dims = list(array.shape) + [1] * (16 - array.ndim)
    Path(f"{stem}.hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    array.ravel(order="F").tofile(f"{stem}.cfl")


def read_cfl(stem: Path) -> np.ndarray:
    """The array of ``stem.hdr`` / ``stem.cfl``, trailing singleton dimensions dropped."""
    lines = Path(f"{stem}.hdr").read_text().splitlines()
    dims = [int(d) for d in lines[lines.index("# Dimensions") + 1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return np.fromfile(f"{stem}.cfl", dtype=np.complex64).reshape(dims, order="F")


def to_bart(coil_array: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> BART's (H, W, 1, C): read-out, phase encoding, slice, coils."""
    return np.transpose(coil_array.numpy(), (1, 2, 0))[:, :, None, :]


def problem(coils: int, height: int, width: int, mask_kind: str = "2d", seed: int = 0) -> dict:
    """A phantom with a smooth phase, birdcage coil maps, a 4x mask and a little noise: the measured k-space."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    magnitude = resize(shepp_logan_phantom(), (height, width), anti_aliasing=True)
    rows, cols = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    image = torch.tensor(magnitude * np.exp(1j * np.pi / 4 * (rows + cols)), dtype=torch.complex64)
    maps = torch.from_numpy(birdcage_coil_maps(coils, (height, width), rng))
    if mask_kind == "2d":
        mask = masks.variable_density_2d((height, width), ACCELERATION, seed)
    else:
        mask = masks.column_random((height, width), ACCELERATION, seed)
    op = Sense(maps[None], mask[None])
    noise = torch.randn(1, coils, height, width, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))
    kspace = op.forward(image[None]) + 0.002 * noise * mask
    return {"op": op, "kspace": kspace, "maps": maps, "mask": mask, "image": image}


def bart_available(install: bool) -> str | None:
    """The path of ``bart``, after ``apt-get install bart`` when it is missing and ``install`` is set."""
    if shutil.which("bart") is None and install and shutil.which("apt-get") is not None:
        print("bart is missing: apt-get install -y bart")
        subprocess.run(["apt-get", "install", "-y", "-q", "bart"], stdout=subprocess.DEVNULL, check=False)
    return shutil.which("bart")


class Bart:
    """``bart pics`` on one problem's k-space and maps, written once as cfl files in a temporary folder."""

    def __init__(self, case: dict, folder: Path, threads: int):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        write_cfl(folder / "kspace", to_bart(case["kspace"][0]))
        write_cfl(folder / "maps", to_bart(case["maps"]))
        self.shape = tuple(case["mask"].shape)

    def pics(self, *options: str) -> np.ndarray:
        command = ["bart", "pics", "-d", "0", "-S", "-w", "1", *options,
                   str(self.folder / "kspace"), str(self.folder / "maps"), str(self.folder / "image")]
        subprocess.run(command, env=self.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return read_cfl(self.folder / "image").reshape(self.shape)

    @staticmethod
    def options(method: str, iterations: int) -> tuple[str, ...]:
        lam = LAM[method]
        regulariser = {"cg_sense": ("-l2", "-r", f"{lam}"), "tv": ("-R", f"T:3:0:{lam}"),
                       "l1_wavelet": ("-n", "--wavelet", "haar", "-R", f"W:3:0:{lam}")}[method]
        return (*regulariser, "-i", str(iterations))


def ours(method: str, case: dict, iterations: int) -> np.ndarray:
    """The book's reconstruction of ``case`` by ``method`` after ``iterations`` iterations."""
    op, y, lam = case["op"], case["kspace"], LAM[method]
    if method == "cg_sense":
        x = recon.cg_sense(op, y, lam=lam, max_iter=iterations, tol=0.0)
    elif method == "tv":
        x = recon.tv(op, y, lam=lam, n_iter=iterations)
    else:
        x = recon.l1_wavelet(op, y, lam=lam, n_iter=iterations, wavelet="haar")
    return x[0].numpy()


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def same_result(tool: str, result: np.ndarray, reference: np.ndarray) -> str:
    """The note for ``tool``'s row, after checking that it solved the problem the book's CG-SENSE solved."""
    difference = relative(result, reference)
    if difference > MATCH["cg_sense"]:
        raise RuntimeError(f"{tool} and recon.cg_sense disagree: {difference:.1e} (at most {MATCH['cg_sense']:.0e})")
    return f"result differs by {difference:.1e}"


def iterations_to_accuracy(solve, converged: np.ndarray) -> tuple[int, float]:
    """The first count of ``LADDER`` whose image is within ``ACCURACY`` of ``converged``, and its distance."""
    for iterations in LADDER:
        distance = relative(solve(iterations), converged)
        if distance <= ACCURACY:
            return iterations, distance
    return LADDER[-1], distance


def compare_cg_sense(size: str, rounds: int, bart: bool, threads: int) -> tuple[str, list[dict]]:
    """Every tool on a 2-D variable-density mask and on a column mask (fastMRI's sampling) of equal acceleration.

    The book's operator takes its 1-D path on the column mask; BART and sigpy run 2-D FFTs on both, so each tool's
    row on the column mask is divided by the book's row on that same mask."""
    import sigpy.mri

    candidates, notes, references = {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for suffix, mask_kind in (("", "2d"), (", 1-D mask", "columns")):
            case = problem(*SIZES[size], mask_kind=mask_kind)
            ours_name = "recon.cg_sense" + suffix
            reference = ours("cg_sense", case, CG_ITERATIONS)
            candidates[ours_name] = lambda case=case: ours("cg_sense", case, CG_ITERATIONS)
            sigpy_run = lambda case=case: sigpy.mri.app.SenseRecon(
                case["kspace"][0].numpy(), case["maps"].numpy(), lamda=LAM["cg_sense"], weights=case["mask"].numpy(),
                max_iter=CG_ITERATIONS, show_pbar=False).run()
            candidates["sigpy SenseRecon" + suffix] = sigpy_run
            notes["sigpy SenseRecon" + suffix] = same_result("sigpy SenseRecon", sigpy_run(), reference)
            references["sigpy SenseRecon" + suffix] = ours_name
            if bart:
                tool = Bart(case, Path(folder) / mask_kind, threads)
                options = Bart.options("cg_sense", CG_ITERATIONS)
                name = f"bart pics -l2{suffix} (whole command)"
                notes[name] = same_result("bart pics -l2", tool.pics(*options), reference)
                candidates[name] = lambda tool=tool: tool.pics(*options)
                references[name] = ours_name
                if mask_kind == "2d":
                    start_up = "bart pics -l2, 1 iteration (whole command)"
                    candidates[start_up] = lambda tool=tool: tool.pics(*Bart.options("cg_sense", 1))
                    notes[start_up] = "start-up, reading the files and one iteration: BART's cost beyond its iterations"
                    references[start_up] = name
        notes["recon.cg_sense, 1-D mask"] = "the column-mask problem against the 2-D one: the 1-D path's gain"
        coils = torch.zeros(SIZES[size], dtype=torch.complex64)

        def fft_floor():  # each result dropped at once, as CG drops its old directions
            for _ in range(CG_ITERATIONS):
                torch.fft.ifft2(torch.fft.fft2(coils, norm="ortho"), norm="ortho")

        candidates["one FFT floor x 100"] = fft_floor
        notes["one FFT floor x 100"] = "bare fft2 + ifft2 over the coils, once per CG iteration"
        times = interleaved_seconds(candidates, rounds, warmup=1)
    c, h, w = SIZES[size]
    return (f"CG-SENSE, {c} coils x {h} x {w}, {ACCELERATION}x, lam {LAM['cg_sense']}, {CG_ITERATIONS} iterations "
            f"({size} size)", record.rows(times, notes, "recon.cg_sense", references))


def compare_regularised(method: str, size: str, rounds: int, bart: bool, threads: int) -> tuple[str, list[dict]]:
    case = problem(*SIZES[size])
    converged = ours(method, case, CONVERGED_ITERATIONS)
    count, distance = iterations_to_accuracy(lambda n: ours(method, case, n), converged)
    label = {"tv": "recon.tv", "l1_wavelet": "recon.l1_wavelet (haar)"}[method]
    candidates = {label: lambda: ours(method, case, count)}
    notes = {label: f"{count} iterations, {distance:.1e} from its converged image"}
    with tempfile.TemporaryDirectory() as folder:
        if bart:
            tool = Bart(case, Path(folder), threads)
            bart_converged = tool.pics(*Bart.options(method, CONVERGED_ITERATIONS))
            match = relative(bart_converged, converged)
            if match > MATCH[method]:
                raise RuntimeError(f"bart and the book solve different {method} problems: {match:.1e} (at most "
                                   f"{MATCH[method]:.0e})")
            bart_count, bart_distance = iterations_to_accuracy(lambda n: tool.pics(*Bart.options(method, n)),
                                                               bart_converged)
            name = f"bart pics -R {'T' if method == 'tv' else 'W'} (whole command)"
            candidates[name] = lambda: tool.pics(*Bart.options(method, bart_count))
            notes[name] = (f"{bart_count} iterations, {bart_distance:.1e} from its converged image, which is "
                           f"{match:.1e} from ours")
        times = interleaved_seconds(candidates, rounds, warmup=1)
    c, h, w = SIZES[size]
    return (f"{method}, {c} coils x {h} x {w}, {ACCELERATION}x, lam {LAM[method]}, each to {ACCURACY:.0e} of its "
            f"converged image ({size} size)", record.rows(times, notes, label))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["demo", "knee"])
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install bart when it is missing")
    parser.add_argument("--record", action="store_true", help="keep the tables for the book (book/speed.json)")
    args = parser.parse_args()
    config.reuse_freed_memory()  # for this process's tools (ours, sigpy); BART runs in its own
    threads = torch.get_num_threads()
    bart = bart_available(install=not args.no_install) is not None
    if not bart:
        print("bart is not available (no apt-get, or the install failed): its rows are skipped")
    print(f"{threads} threads for every tool, torch {torch.__version__}, {args.rounds} interleaved rounds after a warm-up")
    tables = {}
    for size in args.sizes:
        record.keep(tables, *compare_cg_sense(size, args.rounds, bart, threads))
    for method in ("tv", "l1_wavelet"):
        record.keep(tables, *compare_regularised(method, "demo", args.rounds, bart, threads))
    if args.record:
        record.save(tables)


if __name__ == "__main__":
    main()
