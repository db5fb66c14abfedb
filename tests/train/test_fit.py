import json
import os
import platform
import subprocess
import sys

import pytest

# A fresh process allocates, fills and frees a 20 MiB buffer (the size of a training step's
# larger tensors at batch 2,500) ten times, and counts the page faults of the last nine.
_REPEATED_BUFFERS = """
import ctypes, json, resource
import numpy as np
ctypes.CDLL("libc.so.6").prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: count 4 KiB pages, not huge pages
from sclatent.train._fit import _steady_malloc
steady = _steady_malloc()
np.ones(20 * 2**17)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    np.ones(20 * 2**17)
print(json.dumps({"steady": steady, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env = env | {"SCLATENT_MALLOPT": "1"} | env_extra
    out = subprocess.run(
        [sys.executable, "-c", _REPEATED_BUFFERS], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings are glibc's")
def test_training_buffers_stay_in_the_process_unless_the_user_set_malloc():
    ours = _run({})
    users = _run({"MALLOC_TRIM_THRESHOLD_": str(128 * 2**10)})  # a user's own setting is left alone
    assert ours["steady"] is True
    assert users["steady"] is False
    assert _run({"SCLATENT_MALLOPT": "0"})["steady"] is False
    # 9 buffers of 20 MiB are 46,080 pages of 4 KiB: under the user's thresholds each buffer goes
    # back to the kernel and is faulted in again; with sclatent's it is reused (measured 0)
    assert users["faults"] > 40_000, users
    assert ours["faults"] < 100, ours
