"""Child process of tests/test_fuzz_loading.py: loads a batch of files under a memory limit and a per-case time
limit, and reports one JSON line per case. Run as ``python fuzz_worker.py light|weights manifest.json``.

``light`` imports jaxformers/safe_pickle.py alone (numpy only: starts in a fraction of a second) and reads every
file with load_pickled_data. ``weights`` imports jaxformers.modeling_utils and uses the reader from_pretrained
uses for the file's name. Outcomes: ``loaded``, ``error`` (with type and message), ``memory`` (MemoryError
under the address-space limit) or ``hang`` (the per-case timer fired). A crash or a hang the timer cannot stop
shows in the parent as a signal or a timeout, after the ``start`` line of the case responsible.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import sys
from pathlib import Path

CASE_SECONDS = 10
HEADROOM_BYTES = 1 << 30  # address space allowed beyond what the imports took


class Hang(BaseException):  # not an Exception: no reader's `except Exception` may swallow it
    pass


def _on_alarm(signum, frame):
    raise Hang()


def _light_reader():
    spec = importlib.util.spec_from_file_location(
        "safe_pickle", Path(__file__).resolve().parents[1] / "jaxformers" / "safe_pickle.py")
    module = sys.modules["safe_pickle"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda path: module.load_pickled_data(path)


def _weights_reader():
    from jaxformers import modeling_utils

    readers = {"pytorch_model.bin": modeling_utils.read_torch_bin, "model.safetensors": modeling_utils.read_safetensors,
               "flax_model.msgpack": modeling_utils.read_msgpack}
    return lambda path: readers[os.path.basename(path)](path)


def _limit_address_space() -> None:
    with open("/proc/self/status") as status:
        size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = size_kb * 1024 + HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(kind: str, manifest: str) -> None:
    read = _light_reader() if kind == "light" else _weights_reader()
    with open(manifest) as stream:
        paths = json.load(stream)
    _limit_address_space()
    signal.signal(signal.SIGALRM, _on_alarm)
    for index, path in enumerate(paths):
        print(json.dumps({"start": index}), flush=True)
        signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        try:
            read(path)
            result = {"outcome": "loaded"}
        except Hang:
            result = {"outcome": "hang"}
        except MemoryError:
            result = {"outcome": "memory"}
        except Exception as error:  # classified by the parent: type and whether the file is named
            result = {"outcome": "error", "type": type(error).__name__, "message": str(error)[:2000],
                      "bases": [cls.__name__ for cls in type(error).__mro__]}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(json.dumps({"index": index, **result}), flush=True)
    print(json.dumps({"done": len(paths)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
