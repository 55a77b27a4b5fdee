"""Who this process is in a search, and `--workers N`: a keras-tuner chief and N workers on loopback.

keras-tuner's distributed mode does the work: the chief serves trials from its oracle over gRPC,
each worker asks for a trial, trains it and reports back; the KERASTUNER_* environment variables
say which a process is. `Role.from_environment()` reads them once, at the start of a search.

`supervise` starts the chief and the workers as child processes running this same command, passes
their output through with a prefix, restarts a worker that dies (keras-tuner hands a restarted
worker, same ID, the trial it was running), and stops everything once the workers are done or one
has died too often.
"""

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

from mnist_lab.errors import UserError
from mnist_lab.flags import check_port_free, free_port

TUNER_ID_ENV, ORACLE_IP_ENV, ORACLE_PORT_ENV = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
SUPERVISED_ENV = "MNIST_LAB_SUPERVISED"  # set for a chief started by --workers: its parent reports
LOOPBACK = "127.0.0.1"
POLL_SECONDS = 0.5
STOP_SECONDS = 10  # after SIGTERM, before SIGKILL


@dataclass(frozen=True)
class Role:
    """This process's part in a search: the whole of it, keras-tuner's chief, or one of its workers."""

    tuner_id: Optional[str] = None  # keras-tuner's ID ("chief", "worker1", ...); None: not distributed
    oracle_ip: str = ""
    oracle_port: str = ""  # as the environment gives it; `check_port` says if it is no port
    supervised: bool = False  # a chief that `--workers` started: the process that started it reports

    @classmethod
    def from_environment(cls, environ=None):
        environ = os.environ if environ is None else environ
        if ORACLE_IP_ENV not in environ or TUNER_ID_ENV not in environ:
            return cls()
        return cls(tuner_id=environ[TUNER_ID_ENV], oracle_ip=environ[ORACLE_IP_ENV],
                   oracle_port=environ.get(ORACLE_PORT_ENV, ""), supervised=bool(environ.get(SUPERVISED_ENV)))

    @property
    def distributed(self):
        return self.tuner_id is not None

    @property
    def is_chief(self):
        return self.distributed and "chief" in self.tuner_id  # keras-tuner's own test

    @property
    def is_worker(self):
        return self.distributed and not self.is_chief

    @property
    def finishes(self):
        """Whether this process reports, retrains and exports, rather than only running or serving trials."""
        return not self.is_worker and not (self.is_chief and self.supervised)

    def supervises(self, config):
        """Whether this process starts a chief and `config.workers` workers (`--workers N`)."""
        return not self.distributed and config.workers > 0

    def check_port(self, config):
        """Fail in one line, before anything is discarded, if the chief could not listen on its port."""
        if self.is_chief:
            check_port(self.oracle_ip, self.oracle_port)
        elif self.supervises(config) and config.port:
            check_port(LOOPBACK, config.port)


def check_port(host, port):
    """Fail in one line if the chief could not listen on host:port (as given in its environment)."""
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise UserError(f"{ORACLE_PORT_ENV}={port}: expected a port from 1 to 65535") from None
    check_port_free(host, number, f"port {number}")


def die_with_parent(parent):
    """For Popen's preexec_fn: the child gets SIGTERM when `parent` dies, however it dies (Linux).

    Without it, a SIGKILLed `--workers` process would leave its chief running under PID 1, holding
    its port and memory.
    """
    def arrange():
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


class Child:
    """One chief or worker process, its output passed through line by line with its name in front."""

    def __init__(self, name, env, argv):
        self.name, self.env, self.argv, self.restarts = name, env, argv, 0
        self.start()

    def start(self):
        self.process = subprocess.Popen([sys.executable, "-m", "mnist_lab.tuning", *self.argv], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                        preexec_fn=die_with_parent(os.getpid()))
        self.reader = threading.Thread(target=self._forward, args=(self.process.stdout,), daemon=True)
        self.reader.start()

    def _forward(self, stream):
        for line in stream:
            print(f"[{self.name}] {line}", end="", flush=True)

    def poll(self):
        return self.process.poll()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(STOP_SECONDS)


def supervise(config, argv, log=print):
    """Run the search as a chief and `config.workers` workers; return when it is over or cannot go on.

    The children run this command's own flags, `argv`: their environment makes one the chief and
    the others workers, and in them the flags that only this process acts on (--workers, --port,
    --worker-restarts, --fresh) do nothing. Raises UserError if the chief dies: the search stays
    on disk and the same command resumes it.
    """
    port = config.port or free_port(LOOPBACK)
    check_port(LOOPBACK, port)
    # PYTHONSAFEPATH: `python -m` would put the working folder first on sys.path, and a folder there
    # named like one of the project's packages (a `models/` output folder) would shadow it.
    # no_grpc_proxy: gRPC would send the workers' calls to the chief, on loopback, through any http_proxy
    # set (and wait there, silent, for good).
    bypass = os.environ.get("no_grpc_proxy") or os.environ.get("no_proxy") or ""
    shared = {**os.environ, ORACLE_IP_ENV: LOOPBACK, ORACLE_PORT_ENV: str(port), "PYTHONUNBUFFERED": "1",
              "PYTHONSAFEPATH": "1", "no_grpc_proxy": ",".join(filter(None, [bypass, LOOPBACK, "localhost"]))}
    log(f"distributed search: a chief oracle on {LOOPBACK}:{port} and {config.workers} worker(s)")
    chief = Child("chief", {**shared, TUNER_ID_ENV: "chief", SUPERVISED_ENV: "1"}, argv)
    workers = [Child(f"worker{i}", {**shared, TUNER_ID_ENV: f"worker{i}"}, argv)
               for i in range(1, config.workers + 1)]
    try:
        while True:
            time.sleep(POLL_SECONDS)
            codes = [worker.poll() for worker in workers]
            if all(code == 0 for code in codes):
                return
            if chief.poll() not in (None, 0):  # 0: it told every worker to stop; they are on their way out
                raise UserError(f"the chief oracle exited (code {chief.poll()}) before the search ended; "
                                "the trials so far are saved: run the same command to resume")
            for worker, code in zip(workers, codes):
                if code in (None, 0):
                    continue
                if chief.poll() is not None:  # the search is over: nothing to restart a worker for
                    log(f"{worker.name} exited (code {code}) after the chief ended the search")
                    return
                if worker.restarts >= config.worker_restarts:
                    log(f"{worker.name} died (exit code {code}) {worker.restarts + 1} times; ending the "
                        "search with the trials that completed (the same command resumes the rest)")
                    return
                worker.restarts += 1
                log(f"{worker.name} died (exit code {code}); restarting it ({worker.restarts} of "
                    f"{config.worker_restarts}): it retries the trial it was running")
                worker.start()
    finally:
        for child in (*workers, chief):
            child.stop()
