"""experiments/icl_transfer.py's cells: the lr grid's continuation above its top (`lrhigh`) is a
cell beside each shape it continues, with the same recipe and only the new lrs."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import icl_transfer  # noqa: E402


def test_lrhigh_cells_continue_their_shapes_grid_by_factors_of_two():
    cells = icl_transfer.cells()
    high = {name: flags for name, (axis, flags) in cells.items() if axis == "lrhigh"}
    assert high, "no lrhigh cells"
    grid = [float(lr) for lr in icl_transfer.LRS + icl_transfer.LRS_HIGH]
    assert all(b == 2 * a for a, b in zip(grid, grid[1:]))
    for name, flags in high.items():
        base = name.removesuffix("_lrhigh")
        assert base in cells, f"{name} continues no cell of the other axes"
        base_flags = cells[base][1]
        assert icl_transfer.flag_values(flags, "--lr") == icl_transfer.LRS_HIGH
        assert [f for f in flags if f not in icl_transfer.LRS_HIGH] == \
            [f for f in base_flags if f not in icl_transfer.LRS], "the same recipe and shape"
        assert icl_transfer.members_of(flags) == len(icl_transfer.LRS_HIGH) * len(icl_transfer.SEEDS)
    assert {icl_transfer.flag_values(f, "--width")[0] for f in high.values() if icl_transfer.flag_values(f, "--param") == ["sp"]} == {"32"}
