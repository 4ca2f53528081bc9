"""fastnn.machine: the facts kept with every benchmark result, read from /proc/cpuinfo and threadpoolctl."""
from fastnn import machine

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
physical id\t: 0
core id\t\t: 0

processor\t: 2
model name\t: AMD EPYC 9R14 96-Core Processor
physical id\t: 0
core id\t\t: 1
"""


def test_cpu_model_and_physical_cores_from_cpuinfo(tmp_path):
    """Two logical CPUs on core 0 (SMT siblings) and one on core 1: two physical cores."""
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert machine.cpu_model(path) == "AMD EPYC 9R14 96-Core Processor"
    assert machine.physical_cores(path) == 2


def test_without_cpuinfo_platform_answers(tmp_path):
    assert machine.cpu_model(tmp_path / "absent")  # platform's name, never empty
    assert machine.physical_cores(tmp_path / "absent") is None


def test_facts_name_the_blas_kernels_and_the_openblas_environment(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    facts = machine.machine_facts(threads=3)
    assert facts["threads"] == 3
    assert facts["openblas_env"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": None}
    # SciPy's BLAS is loaded before threadpoolctl looks: the one the compiled backends call
    assert any("scipy" in (b["file"] or "") or "scipy" in (b["prefix"] or "") for b in facts["blas"])
    text = "\n".join(machine.describe(facts))
    assert "3 threads used" in text and "OPENBLAS_CORETYPE=Haswell" in text and "OPENBLAS_L2_SIZE unset" in text
