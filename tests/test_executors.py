"""Executors: the local one, and Ray (against a local Ray instance) giving the same records."""

import importlib.util
import math

import pandas as pd
import pytest

from perturbscope.audit import AuditConfig
from perturbscope.experiments.executors import LocalExecutor, make_executor
from perturbscope.experiments.reproduce import ReproduceConfig, run_reproduction
from perturbscope.experiments.store import ResultsStore
from perturbscope.train import TrainConfig

HAS_RAY = importlib.util.find_spec("ray") is not None


def tiny() -> ReproduceConfig:
    return ReproduceConfig.scaled_down(
        source="fashion-mnist-subset", pairs=((7, 8), (3, 4)), train_images=64, audit_images=10, width=0.125,
        train=TrainConfig(epochs=3, batch_size=16), audit=AuditConfig(draws=20, steps=32))


def test_local_executor_and_factory():
    ex = make_executor("local")
    assert isinstance(ex, LocalExecutor)
    assert list(ex.map(math.sqrt, [4.0, 9.0, 16.0])) == [(0, 2.0), (1, 3.0), (2, 4.0)]
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("dask")
    with pytest.raises(ValueError, match="no options"):
        make_executor("local", address="auto")


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'perturbscope[ray]')")
def test_ray_gives_the_same_records_as_local(tmp_path):
    import ray

    from perturbscope.experiments.executors import RayExecutor

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ex = RayExecutor()
        assert ex.describe()["cluster_cpus"] == 1.0
        # jobs come back in completion order with their positions
        assert sorted(ex.map(math.sqrt, [1.0, 4.0, 9.0])) == [(0, 1.0), (1, 2.0), (2, 3.0)]
        with pytest.raises(ValueError, match="math domain error"):  # a job's error reaches the caller
            list(ex.map(math.sqrt, [1.0, -1.0]))
        with ResultsStore(tmp_path / "ray.sqlite") as st:
            out_r = run_reproduction(tiny(), st, executor=ex, progress=False, threads=1)
            assert sorted(out_r.units_run) == sorted(tiny().unit_keys())
            rec_ray = st.records(out_r.run_id)
            model_ray = st.get_artifact(out_r.run_id, "model/pair=3-4")[0]
            assert st.units(out_r.run_id)["meta"].map(lambda m: m["executor"]).eq("ray").all()
    finally:
        ray.shutdown()
    with ResultsStore(tmp_path / "local.sqlite") as st:
        out_l = run_reproduction(tiny(), st, executor=LocalExecutor(), progress=False, threads=1)
        rec_local = st.records(out_l.run_id)
        model_local = st.get_artifact(out_l.run_id, "model/pair=3-4")[0]
    assert out_l.run_id == out_r.run_id  # where it runs is not part of the configuration
    assert model_ray == model_local  # bitwise-equal trained weights
    # Ray yields in completion order; the store gives plan order: same rows, same numbers
    pd.testing.assert_frame_equal(rec_ray, rec_local)
    assert len(rec_local) == 40 and rec_local["adv_success"].any()


def test_ray_missing_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"perturbscope\[ray\]"):
        make_executor("ray")
