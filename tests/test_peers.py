"""The peer benchmark's plumbing: BART's cfl files, and the mapping of each problem onto ``bart pics``."""

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # peers.py shares sense_normal.py's timing loop, as a script would
spec = importlib.util.spec_from_file_location("peers", REPO / "benchmarks" / "peers.py")
peers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers)


def test_cfl_files_round_trip_in_column_major_order(tmp_path):
    array = (np.arange(24) + 1j * np.arange(24)[::-1]).reshape(2, 3, 1, 4).astype(np.complex64)
    peers.write_cfl(tmp_path / "a", array)
    assert (tmp_path / "a.hdr").read_text().splitlines()[1].split()[:5] == ["2", "3", "1", "4", "1"]
    np.testing.assert_array_equal(peers.read_cfl(tmp_path / "a"), array)
    # column-major: the first index runs fastest in the file, as BART reads it
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.cfl", dtype=np.complex64)[:2], array[:2, 0, 0, 0])


def test_the_benchmark_problem_is_the_book_operator_at_four_fold():
    case = peers.problem(4, 32, 24)
    assert case["kspace"].shape == (1, 4, 32, 24)
    assert case["mask"].sum().item() == pytest.approx(32 * 24 / peers.ACCELERATION, rel=0.05)
    columns = peers.problem(4, 32, 24, mask_kind="columns")["mask"]
    assert (columns == columns[:1]).all()  # the same columns in every row: the 1-D path of Sense.normal


@pytest.mark.skipif(shutil.which("bart") is None, reason="BART is not installed (apt-get install bart)")
@pytest.mark.parametrize("method", ["cg_sense", "tv", "l1_wavelet"])
def test_bart_pics_solves_the_same_problem_as_the_book(method, tmp_path):
    case = peers.problem(4, 64, 48)
    iterations = 100 if method == "cg_sense" else 1000
    tool = peers.Bart(case, tmp_path, threads=1)
    difference = peers.relative(tool.pics(*peers.Bart.options(method, iterations)), peers.ours(method, case, iterations))
    assert difference <= peers.MATCH[method], difference


def test_interleaved_rounds_rotate_so_no_candidate_always_follows_the_same_one():
    from sense_normal import interleaved_seconds

    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved_seconds(fns, rounds=3, warmup=0)
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]



def test_a_peer_whose_result_differs_stops_the_benchmark():
    reference = np.ones(8, dtype=np.complex64)
    assert peers.same_result("a peer", reference * (1 + 1e-5), reference) == "result differs by 1.0e-05"
    with pytest.raises(RuntimeError, match="a peer and recon.cg_sense disagree: 1.0e-02"):
        peers.same_result("a peer", reference * 1.01, reference)
