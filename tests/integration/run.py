#!/usr/bin/python3
"""Integration test runner.

  /usr/bin/python3 tests/integration/run.py [-j N] [FILTER...]

Discovers tests/integration/test_*.py and their top-level test_* functions (plain
functions using assert). A FILTER is a substring of "file.py::test_name". Each test
runs in its own process group with a hard timeout (a function's `timeout` attribute,
else 30 s): at the deadline it is interrupted (traceback and logs printed), and a
few seconds later the whole group, gateway included, is killed. Prints one
line per test, the output of failures, and ends with the plain line "N passed, M failed";
exits 1 if anything failed or nothing ran.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(HERE), "lib")
DEFAULT_TIMEOUT = 30.0
GRACE = 3.0  # after SIGUSR1 at the deadline, the test gets this long to print and clean up


sys.path[:0] = [LIB, HERE]


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def discover():
    """[(file, name, timeout)] in file order, then definition order."""
    out = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        mod = load(os.path.join(HERE, fn))
        funcs = [(getattr(f, "__code__").co_firstlineno, n, f) for n, f in vars(mod).items()
                 if n.startswith("test_") and callable(f) and hasattr(f, "__code__")
                 and f.__module__ == mod.__name__]
        for _, name, f in sorted(funcs, key=lambda t: t[0]):
            out.append((fn, name, float(getattr(f, "timeout", DEFAULT_TIMEOUT))))
    return out


class HardTimeout(BaseException):
    pass


def on_timeout(signum, frame):
    raise HardTimeout("hard timeout: the runner interrupted this test")


def run_one(fn, name):
    """Child side: runs one test; exit status 0 on pass. SIGUSR1 from the runner at the
    deadline interrupts it, so the traceback and logs are still printed."""
    import harness
    signal.signal(signal.SIGUSR1, on_timeout)
    ok = False
    try:
        mod = load(os.path.join(HERE, fn))
        getattr(mod, name)()
        ok = True
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        text = harness.dump_all()
        if text:
            print(text)
    finally:
        harness.cleanup_all()
    sys.stdout.flush()
    os._exit(0 if ok else 1)


def spawn(fn, name):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--one", fn, name],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass


def main(argv):
    if len(argv) >= 3 and argv[0] == "--one":
        run_one(argv[1], argv[2])
    jobs = 1
    if len(argv) >= 2 and argv[0] == "-j":
        jobs, argv = max(1, int(argv[1])), argv[2:]
    filters = argv
    tests = [t for t in discover()
             if not filters or any(f in "%s::%s" % (t[0], t[1]) for f in filters)]
    passed = failed = 0
    pending = list(tests)
    running = []  # (proc, fn, name, deadline, start, output chunks)
    t_all = time.monotonic()
    import threading

    def reader(p, chunks):
        for chunk in iter(lambda: p.stdout.read(4096), b""):
            chunks.append(chunk)

    while pending or running:
        while pending and len(running) < jobs:
            fn, name, tmo = pending.pop(0)
            p = spawn(fn, name)
            chunks = []
            th = threading.Thread(target=reader, args=(p, chunks), daemon=True)
            th.start()
            now = time.monotonic()
            running.append((p, fn, name, now + tmo, now, chunks, th, tmo, []))
        time.sleep(0.02)
        for item in list(running):
            p, fn, name, deadline, start, chunks, th, tmo = item[:8]
            rc = p.poll()
            now = time.monotonic()
            if rc is None and now > deadline and not item[8]:
                item[8].append(now)  # first time past the deadline: ask for a traceback
                try:
                    p.send_signal(signal.SIGUSR1)
                except OSError:
                    pass
            timed_out = bool(item[8])
            if rc is None and not (timed_out and now > item[8][0] + GRACE):
                continue
            kill_group(p)  # whatever the test left behind in its group
            p.wait()
            th.join(2)
            running.remove(item)
            dt = time.monotonic() - start
            out = b"".join(chunks).decode("utf-8", "replace")
            if rc == 0:
                passed += 1
                print("PASS %s::%s (%.2fs)" % (fn, name, dt), flush=True)
            else:
                failed += 1
                why = "TIMEOUT after %.0fs" % tmo if timed_out else "exit %s" % rc
                print("FAIL %s::%s (%.2fs) %s" % (fn, name, dt, why), flush=True)
                for line in out.rstrip().splitlines():
                    print("    " + line)
                sys.stdout.flush()
    print("integration: %.1fs" % (time.monotonic() - t_all))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
