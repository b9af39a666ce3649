"""The SQLite results store: runs by config hash, atomic units, exact record round trips, export."""

import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from perturbscope.experiments.store import (
    ResultsStore,
    UnitAlreadyDone,
    config_hash,
    parse_unit_key,
    unit_key,
)


def _records(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    eps = rng.uniform(0.5, 3.0, n)
    eps[::3] = np.nan
    return pd.DataFrame({
        "split": "test", "index": np.arange(n), "label": rng.integers(0, 2, n),
        "correct": rng.random(n) > 0.2, "adv_success": ~np.isnan(eps), "eps_l2": eps,
        "eps_l1": eps * 20.123456789012345, "eps_source": "line_search",
        "flips_a1": rng.integers(0, 5, n), "rand_frac_a1": rng.random(n)})


def test_open_run_same_config_resumes_changed_config_is_new(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as st:
        cfg = {"a": 1, "b": [1.0, 2.0], "c": {"x": None}}
        rid, created = st.open_run("exp", cfg)
        assert created and rid == config_hash(cfg)[:12]
        # key order does not matter; tuples and lists hash alike
        assert st.open_run("exp", {"c": {"x": None}, "b": (1.0, 2.0), "a": 1}) == (rid, False)
        rid2, created2 = st.open_run("exp", {**cfg, "a": 2})
        assert created2 and rid2 != rid
        runs = st.runs()
        assert list(runs.columns[:4]) == ["run_id", "name", "config_hash", "created"]
        assert runs["name"].tolist() == ["exp", "exp-2"]
        assert st.resolve("exp") == rid and st.resolve("exp-2") == rid2 and st.resolve(rid2[:6]) == rid2
        assert st.run_config("exp-2") == {**cfg, "a": 2}
        assert "torch" in st.versions(rid) and "python" in st.versions(rid)
        with pytest.raises(ValueError, match="ambiguous"):
            st.resolve("ex")
        with pytest.raises(ValueError, match="no run matches"):
            st.resolve("nope")
        with pytest.raises(ValueError, match="run name"):
            st.open_run("bad name!", cfg)


def test_records_round_trip_exactly_and_units(tmp_path):
    path = tmp_path / "r.sqlite"
    df = _records(12)
    with ResultsStore(path) as st:
        rid, _ = st.open_run("exp", {"k": 1})
        keys = [unit_key((7, 8), "test"), unit_key((0, 1), "test")]
        assert keys[0] == "pair=7-8/split=test"
        st.plan_units(rid, keys)
        assert st.pending_units(rid) == keys and st.done_units(rid) == []
        assert st.commit_unit(rid, keys[0], df, seconds=1.5, meta={"forwards": 7}) == 12
        assert st.pending_units(rid) == [keys[1]]
        with pytest.raises(UnitAlreadyDone, match="already done"):
            st.commit_unit(rid, keys[0], df)
    with ResultsStore(path) as st:  # reopened: everything persisted
        got = st.records("exp")
        assert got["pair"].unique().tolist() == ["7-8"] and got["unit_key"].unique().tolist() == [keys[0]]
        expect = df.copy()
        pd.testing.assert_frame_equal(got[df.columns.tolist()], expect, check_dtype=False)
        assert got["correct"].dtype == bool and got["eps_l2"].isna().sum() == 4
        assert got["eps_l1"].iloc[1] == df["eps_l1"].iloc[1]  # bit-exact float through JSON
        u = st.units("exp").set_index("unit_key")
        assert u.loc[keys[0], "status"] == "done" and u.loc[keys[0], "n_records"] == 12
        assert u.loc[keys[0], "meta"] == {"forwards": 7} and u.loc[keys[1], "status"] == "pending"


def test_commit_is_one_transaction(tmp_path):
    """A failure while writing records leaves neither records nor a done status."""
    with ResultsStore(tmp_path / "r.sqlite") as st:
        rid, _ = st.open_run("exp", {"k": 1})
        key = unit_key((1, 2), "train")
        st.plan_units(rid, [key])
        # inject a failure at the 5th record insert, after the unit row and 4 records are written
        st._con.execute("CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.image_index = 4 "
                        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        with pytest.raises(sqlite3.IntegrityError, match="injected"):
            st.commit_unit(rid, key, _records(5))
        assert st.pending_units(rid) == [key]
        assert st._q("SELECT COUNT(*) FROM records")[0][0] == 0
        st._con.execute("DROP TRIGGER boom")
        with pytest.raises(ValueError, match="duplicate"):
            st.commit_unit(rid, key, pd.concat([_records(3), _records(3)]))
        st.commit_unit(rid, key, _records(5))
        assert st.done_units(rid) == [key]


def test_summaries_match_hand_counts(tmp_path):
    # 10 images: 8 correct; of those 4 adversarial (one incorrect image has adv_success True:
    # must not count); flips at alpha 1 on 1 of the 4, at alpha 2 on 3 of the 4
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    adv = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0], bool)
    eps = np.where(adv, [1.0, 2.0, 3.0, 6.0, 0, 0, 0, 0, 9.0, 0], np.nan)
    df = pd.DataFrame({"split": "train", "index": np.arange(10), "correct": correct, "adv_success": adv,
                       "eps_l2": eps, "eps_l1": eps * 10, "eps_linf": eps / 10,
                       "flips_a1": [3, 0, 0, 0, 0, 0, 0, 0, 5, 0],
                       "flips_a2": [3, 1, 0, 9, 0, 0, 0, 0, 5, 0]})
    with ResultsStore(tmp_path / "r.sqlite") as st:
        rid, _ = st.open_run("exp", {"audit": {"alphas": [1.0, 2.0]}})
        st.commit_unit(rid, "pair=3-4/split=train", df)
        s = st.summaries(rid)
    assert len(s) == 1
    r = s.iloc[0]
    assert (r["pair"], r["split"]) == ("3-4", "train")
    assert (r["n_images"], r["n_correct"], r["n_adversarial"]) == (10, 8, 4)
    assert r["accuracy"] == 80.0 and r["adversarial_susceptibility"] == 50.0
    assert r["random_a1"] == 25.0 and r["random_a2"] == 75.0
    assert r["eps_l2_mean"] == 3.0 and math.isclose(r["eps_l2_sd"], math.sqrt(14 / 3))
    assert math.isclose(r["eps_l1_mean"], 30.0) and math.isclose(r["eps_linf_sd"], math.sqrt(14 / 3) / 10)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(tmp_path, fmt):
    with ResultsStore(tmp_path / "r.sqlite") as st:
        rid, _ = st.open_run("exp", {"k": 1})
        st.commit_unit(rid, "pair=7-8/split=test", _records(9, 1))
        st.commit_unit(rid, "pair=0-1/split=test", _records(4, 2))
        out = st.export("exp", tmp_path / f"rec.{fmt}", fmt=fmt)
        want = st.records(rid)
    got = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(got) == 13 and list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    with ResultsStore(tmp_path / "r.sqlite") as st, pytest.raises(ValueError, match="fmt"):
        st.export("exp", tmp_path / "x.json", fmt="json")


def test_wal_mode_and_bad_paths(tmp_path):
    st = ResultsStore(tmp_path / "sub" / "r.sqlite")
    assert st._q("PRAGMA journal_mode")[0][0] == "wal"
    st.close()
    with pytest.raises(ValueError, match="directory"):
        ResultsStore(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="not a perturbscope results store"):
        ResultsStore(junk)
    with pytest.raises(TypeError):
        ResultsStore(3)
    assert parse_unit_key("pair=7-8/split=test") == {"pair": "7-8", "split": "test"}
    with pytest.raises(ValueError, match="malformed"):
        parse_unit_key("pair7-8")
    assert isinstance(sqlite3.sqlite_version, str)


def test_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "theirs.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO customers VALUES (1, 'x')")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(ValueError, match="not a perturbscope results store.*customers"):
        ResultsStore(db)
    with pytest.raises(ValueError, match="not a perturbscope results store"):
        ResultsStore(db, read_only=True)
    assert db.read_bytes() == before  # no tables added, not switched to WAL
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["customers"]
    con.close()


def test_store_marks_itself_and_reopens(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as st:
        st.open_run("exp", {"k": 1})
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x50534350
    con.close()
    with ResultsStore(path) as st:
        assert list(st.runs()["name"]) == ["exp"]


def test_records_deleted_by_hand_are_detected_and_the_unit_redone(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as st:
        rid, _ = st.open_run("exp", {"k": 1})
        keys = [unit_key((1, 2), "train"), unit_key((1, 2), "test")]
        st.plan_units(rid, keys)
        st.commit_unit(rid, keys[0], _records(10))
        st.commit_unit(rid, keys[1], _records(6))
    con = sqlite3.connect(path)
    con.execute("DELETE FROM records WHERE unit_key=? AND image_index >= 5", (keys[0],))
    con.commit()
    con.close()
    with ResultsStore(path, read_only=True) as ro:
        assert ro.damaged_units(rid) == [keys[0]]
        with pytest.raises(ValueError, match="do not match"):
            ro.records(rid)
        with pytest.raises(ValueError, match="read-only"):
            ro.pending_units(rid)
    with ResultsStore(path) as st:
        assert st.pending_units(rid) == [keys[0]]  # put back to pending, its records removed
        assert st._q("SELECT COUNT(*) FROM records WHERE unit_key=?", (keys[0],))[0][0] == 0
        assert len(st.records(rid)) == 6
        st.commit_unit(rid, keys[0], _records(10))
        assert st.pending_units(rid) == [] and len(st.records(rid)) == 16


def test_read_only_store_on_a_read_only_file(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as st:
        rid, _ = st.open_run("exp", {"k": 1})
        st.commit_unit(rid, unit_key((1, 2), "train"), _records(4))
    for f in tmp_path.iterdir():
        f.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with ResultsStore(path, read_only=True) as ro:
            assert len(ro.records("exp")) == 4
    finally:
        tmp_path.chmod(0o755)


def test_export_format_follows_the_file_name(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as st:
        rid, _ = st.open_run("exp", {"k": 1})
        st.commit_unit(rid, unit_key((1, 2), "train"), _records(4))
        assert pd.read_parquet(st.export(rid, tmp_path / "UP.PARQUET")).shape[0] == 4
        assert pd.read_csv(st.export(rid, tmp_path / "x.CSV")).shape[0] == 4
        for bad in ("x.xlsx", "noext"):
            with pytest.raises(ValueError, match="csv or .parquet|.csv or .parquet"):
                st.export(rid, tmp_path / bad)
            assert not (tmp_path / bad).exists()
        with pytest.raises(ValueError, match="not parquet"):
            st.export(rid, tmp_path / "a.csv", fmt="parquet")
        (tmp_path / "d.csv").mkdir()
        with pytest.raises(ValueError, match="directory"):
            st.export(rid, tmp_path / "d.csv")
