"""BIDS tabular files (participants.tsv, sessions.tsv): tab-separated, 'n/a' for a missing value."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from deepwml.utils.atomic import write_text
from deepwml.utils.errors import DeepWMLError


def read_tsv(path: Path) -> Optional[pd.DataFrame]:
    """A BIDS TSV as text columns (n/a as missing), or None when absent; one that cannot be read is an error naming it."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DeepWMLError(f"cannot read as a BIDS table ({e})", path) from None


def write_tsv(table: pd.DataFrame, path: Path) -> None:
    """``table`` as a BIDS TSV, written atomically."""
    # 10 significant digits: the figures, without binary noise such as 3.6750000000000003
    write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.10g"))
