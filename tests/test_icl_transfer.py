"""experiments/icl_transfer.py's cells: the lr grid's continuations above its top (`lrhigh`) and
below its bottom (`lrlow`) are cells beside each shape they continue, with the same recipe and only
the new lrs."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import icl_transfer  # noqa: E402


def test_continuations_continue_their_shapes_grid_by_factors_of_two():
    cells = icl_transfer.cells()
    grid = [float(lr) for lr in icl_transfer.LRS_LOW + icl_transfer.LRS + icl_transfer.LRS_HIGH]
    assert all(b == 2 * a for a, b in zip(grid, grid[1:]))
    for axis, lrs in icl_transfer.CONTINUED.items():
        continued = {name: flags for name, (a, flags) in cells.items() if a == axis}
        assert continued, f"no {axis} cells"
        for name, flags in continued.items():
            base = name.removesuffix("_" + axis)
            assert base in cells, f"{name} continues no cell of the other axes"
            base_flags = cells[base][1]
            assert icl_transfer.flag_values(flags, "--lr") == lrs
            assert [f for f in flags if f not in lrs] == [f for f in base_flags if f not in icl_transfer.LRS], \
                "the same recipe and shape"
            assert icl_transfer.members_of(flags) == icl_transfer.members_of(base_flags) // 4, "2 lrs of the 8"
    high = [flags for name, (axis, flags) in cells.items() if axis == "lrhigh"]
    assert {icl_transfer.flag_values(f, "--width")[0] for f in high if icl_transfer.flag_values(f, "--param") == ["sp"]} == {"32"}
