"""`--workers N` on one machine: a keras-tuner chief and N workers as child processes on loopback.

keras-tuner's distributed mode does the work: the chief serves trials from its oracle over gRPC,
each worker asks for a trial, trains it and reports back. This module only starts the processes
with keras-tuner's environment variables, passes their output through with a prefix, restarts a
worker that dies (keras-tuner hands a restarted worker, same ID, the trial it was running), and
stops everything once the workers are done or one has died too often.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from mnist_lab.cli import check_port_free
from mnist_lab.errors import UserError

TUNER_ID_ENV, ORACLE_IP_ENV, ORACLE_PORT_ENV = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
SUPERVISED_ENV = "MNIST_LAB_SUPERVISED"  # set for a chief started by --workers: its parent reports
LOOPBACK = "127.0.0.1"
SEARCH_SCRIPT = Path(__file__).resolve().parents[1] / "tuning" / "search_mlp.py"
POLL_SECONDS = 0.5
STOP_SECONDS = 10  # after SIGTERM, before SIGKILL


def free_port():
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def check_port(host, port):
    """Fail in one line if the chief could not listen on host:port (as given in its environment)."""
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise UserError(f"{ORACLE_PORT_ENV}={port}: expected a port from 1 to 65535") from None
    check_port_free(host, number, f"port {number}")


def child_argv(config):
    """The search's own flags, for the chief and the workers."""
    argv = ["--tuner", config.tuner, "--epochs", str(config.epochs), "--final-epochs", str(config.final_epochs),
            "--seed", str(config.seed), "--validation-size", str(config.validation_size),
            "--directory", str(config.directory), "--project-name", config.project_name,
            "--reports-dir", str(config.reports_dir)]
    for flag, value in (("--max-trials", config.max_trials), ("--subset", config.subset),
                        ("--data-dir", config.data_dir), ("--output", config.output)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


class Child:
    """One chief or worker process, its output passed through line by line with its name in front."""

    def __init__(self, name, env, argv):
        self.name, self.env, self.argv, self.restarts = name, env, argv, 0
        self.start()

    def start(self):
        self.process = subprocess.Popen([sys.executable, str(SEARCH_SCRIPT), *self.argv], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
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


def supervise(config, log=print):
    """Run the search as a chief and `config.workers` workers; return when it is over or cannot go on.

    Raises UserError if the chief dies: the search stays on disk and the same command resumes it.
    """
    port = config.port or free_port()
    check_port(LOOPBACK, port)
    shared = {**os.environ, ORACLE_IP_ENV: LOOPBACK, ORACLE_PORT_ENV: str(port), "PYTHONUNBUFFERED": "1"}
    argv = child_argv(config)
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
