import math

import pandas as pd
import pytest

from perturbscope.audit import format_table
from perturbscope.audit.summary import summarize_records


def records():
    # 10 images: 8 correct; of those 5 attacked successfully; random flips at a=2 for 1, a=10 for 4
    return pd.DataFrame({
        "correct":     [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        "adv_success": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        "flips_a2":    [0, 3, 0, 0, 0, 0, 0, 0, 0, 0],
        "flips_a10":   [9, 1, 0, 4, 2, 7, 0, 0, 5, 0],  # rows 5 and 8 are not in A: ignored
    }).astype(bool).assign(flips_a2=lambda d: d.flips_a2.astype(int),
                          flips_a10=[9, 1, 0, 4, 2, 7, 0, 0, 5, 0])


def test_paper_percentages_from_hand_made_records():
    s = summarize_records(records(), (2, 10))
    assert (s["n_images"], s["n_correct"], s["n_adversarial"]) == (10, 8, 5)
    assert s["accuracy"] == pytest.approx(80.0)
    assert s["adversarial_susceptibility"] == pytest.approx(62.5)
    assert s["random_susceptibility"][2.0] == pytest.approx(20.0)
    assert s["random_susceptibility"][10.0] == pytest.approx(80.0)
    table = format_table({"test": s}, (2, 10))
    assert "62.50" in table and "80.00" in table


def test_empty_denominators_are_nan_not_zero():
    df = pd.DataFrame({"correct": [False, False], "adv_success": [False, False], "flips_a1": [0, 0]})
    s = summarize_records(df, (1,))
    assert s["accuracy"] == 0.0
    assert math.isnan(s["adversarial_susceptibility"])
    assert math.isnan(s["random_susceptibility"][1.0])


def test_missing_columns_named():
    with pytest.raises(ValueError, match="flips_a5"):
        summarize_records(records(), (5,))
