"""The program table stays bounded: ended programs beyond the kept ones leave no trace."""

from __future__ import annotations

from thunder_scheduling.program_table import ProgramTable


def test_ended_programs_are_forgotten_beyond_the_kept_ones() -> None:
    for keep in (0, 10):
        table = ProgramTable(keep)
        for i in range(5000):
            table.end(table.create(f"p{i}", float(i)))
        assert len(table) == 0 and len(list(table.ended())) == keep
        assert table.remembered_ids() == keep
        again = table.create("p4999", 9999.0)  # still kept (keep > 0): a new incarnation
        assert again.incarnation == (1 if keep else 0)
