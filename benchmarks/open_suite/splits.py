"""The split helpers live in the package (``kikimimi demo`` uses them too); re-exported here so the suite's
scripts and tests keep ``import splits``."""

from kikimimi.data.splits import (
    SPLITS,
    LeakageError,
    check_disjoint_files,
    check_no_leakage,
    covering_group_split,
    split_counts,
    summarise_rows,
)

__all__ = ["SPLITS", "LeakageError", "check_no_leakage", "check_disjoint_files", "covering_group_split",
           "split_counts", "summarise_rows"]
