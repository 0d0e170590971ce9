"""The pipeline's edges under careless use: one run per workdir (the lock), identity by content,
results kept by fingerprint and restored when their config comes back, hand-edited artefacts
refused. Stand-in stages (no model) keep it fast; the real stages' reuse is in test_pipeline.py."""

import json
import os
import subprocess
import sys
import time

import ml_collections
import pytest

from rise_jax import launch, pipeline
from rise_jax.content_hash import file_sha256
from rise_jax.stages.registry import Stage
from rise_jax.workdir_lock import WorkdirBusy, hold_workdir, lock_path

# --- the workdir lock ------------------------------------------------------------------------


def test_a_second_launch_on_a_busy_workdir_is_refused_in_one_line_naming_the_holder(tmp_path, capsys):
    wd = str(tmp_path / "wd")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from rise_jax.workdir_lock import hold_workdir\n"
            "with hold_workdir(sys.argv[1]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            wd,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        from rise_jax.configs import demo

        with pytest.raises(SystemExit) as exit_info:
            launch.run_or_exit(launch.run, demo.get_config("test"), wd)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: workdir ")
        assert f"in use by process {holder.pid} on host " in err[0]
        assert not os.path.exists(os.path.join(wd, "pretrain"))  # nothing of the refused run was made
    finally:
        holder.kill()
        holder.wait()
    with hold_workdir(wd):  # the holder died: its lock is free again (and taken over)
        assert json.load(open(lock_path(wd)))["pid"] == os.getpid()


def test_a_stale_lock_is_taken_over_with_a_message_and_the_lock_is_reentrant(tmp_path, capfd):
    wd = str(tmp_path)
    os.makedirs(os.path.join(wd, ".rise"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(lock_path(wd), "w") as fh:
        json.dump({"pid": int(dead.stdout), "host": "here", "started": "2026-01-01 00:00:00"}, fh)
    with hold_workdir(wd):
        with hold_workdir(wd):  # the launcher and the pipeline both take it
            pass
        assert json.load(open(lock_path(wd)))["pid"] == os.getpid()  # still held after the inner block
        fd = os.open(lock_path(wd), os.O_RDWR)  # another opener (another launch) is refused
        try:
            import fcntl

            with pytest.raises(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert f"taking over the lock of process {dead.stdout.strip()} on host here" in capfd.readouterr().err
    assert open(lock_path(wd)).read() == ""  # released: emptied, not deleted


def test_workdir_busy_is_a_user_error():
    assert issubclass(WorkdirBusy, launch.USER_ERRORS)


# --- content identity ------------------------------------------------------------------------


def test_a_file_is_identified_by_its_content_even_when_size_and_mtime_are_kept(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(bytes(64))
    st = os.stat(f)
    first = file_sha256(str(f))
    assert file_sha256(str(f)) == first  # memoised
    f.write_bytes(b"\x01" * 64)  # other weights of the same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... with the old modification time (cp -p)
    assert file_sha256(str(f)) != first


# --- results kept by fingerprint, with stand-in stages ------------------------------------------

RUNS: list[str] = []


def _make(config, wd):
    """Writes out/a.txt from a.x (and a partial state file first); a.x == 'fail' fails after it."""
    RUNS.append("make")
    os.makedirs(wd.path("out"), exist_ok=True)
    with open(wd.path("out", "state.txt"), "w") as fh:
        fh.write(f"partial {config.a.x}")
    if config.a.x == "fail":
        raise RuntimeError("diverged")
    with open(wd.path("out", "a.txt"), "w") as fh:
        fh.write(f"a={config.a.x}")


def _use(config, wd):
    RUNS.append("use")
    with open(wd.path("out", "a.txt")) as fh:
        a = fh.read()
    with open(wd.path("out", "b.txt"), "w") as fh:
        fh.write(f"{a} b={config.b.y}")
    with open(wd.path("out", "figure.png"), "w") as fh:  # a figure beside it (Stage.kept)
        fh.write(f"figure of {a}")


FAKE = {
    "make": Stage(
        "make",
        ("a",),
        _make,
        outputs=lambda wd: (wd.path("out", "a.txt"),),
        state=lambda wd: (wd.path("out", "state.txt"),),
    ),
    "use": Stage(
        "use",
        ("b",),
        _use,
        reads=("make",),
        outputs=lambda wd: (wd.path("out", "b.txt"),),
        kept=lambda wd: (wd.path("out", "figure.png"),),
    ),
}


@pytest.fixture
def fake_pipeline(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "REGISTRY", FAKE)
    monkeypatch.setattr(pipeline, "ORDER", tuple(FAKE))
    RUNS.clear()
    messages: list[str] = []

    def run(x="1", y="1", stages="make,use", **top):
        c = ml_collections.ConfigDict({"stages": stages, "force": False, "keep_results": 1, "a": {"x": x}})
        c.b = {"y": y}
        c.update(top)
        RUNS.clear()
        messages.clear()
        return pipeline.run_pipeline(c, str(tmp_path), log=messages.append)

    return run, str(tmp_path), messages


def _read(wd, name):
    with open(os.path.join(wd, "out", name)) as fh:
        return fh.read()


def test_an_undone_edit_restores_the_kept_results_without_recomputing(fake_pipeline):
    run, wd, messages = fake_pipeline
    assert run() == {"make": "ran", "use": "ran"}
    made = os.stat(os.path.join(wd, "out", "a.txt")).st_mtime_ns
    assert run(x="2") == {"make": "ran", "use": "ran"} and _read(wd, "b.txt") == "a=2 b=1"
    assert any("config changed since its artefact was made (a.x); kept it" in m for m in messages)
    time.sleep(0.01)
    assert run() == {"make": "restored", "use": "restored"} and RUNS == []
    assert _read(wd, "b.txt") == "a=1 b=1" and _read(wd, "figure.png") == "figure of a=1"  # figures too
    assert os.stat(os.path.join(wd, "out", "a.txt")).st_mtime_ns == made  # the very file, moved back
    assert any(m.startswith("[1/2 make] restored the result made from this config") for m in messages)
    assert run(x="2") == {"make": "restored", "use": "restored"}  # and the other one was kept in turn


def test_a_failed_run_keeps_the_previous_result_and_going_back_costs_nothing(fake_pipeline):
    run, wd, _ = fake_pipeline
    run()
    with pytest.raises(RuntimeError, match="diverged"):
        run(x="fail")
    assert _read(wd, "state.txt") == "partial fail"  # the failed run's state, in place to resume
    assert run() == {"make": "restored", "use": "skipped"} and RUNS == []  # use never left
    assert _read(wd, "state.txt") == "partial 1"


def test_keep_results_zero_drops_earlier_results_once_a_new_one_completes(fake_pipeline):
    run, wd, _ = fake_pipeline
    run(keep_results=0)
    run(x="2", keep_results=0)
    assert not os.path.exists(os.path.join(wd, ".rise", "kept", "make"))
    assert run(keep_results=0) == {"make": "ran", "use": "ran"}


def test_a_hand_edited_artefact_is_refused_by_its_readers_and_its_writer(fake_pipeline):
    run, wd, _ = fake_pipeline
    run()
    with open(os.path.join(wd, "out", "a.txt"), "w") as fh:
        fh.write("a=edited")
    for stages in ("use", "make,use"):
        with pytest.raises(pipeline.PipelineError, match=r"out/a.txt changed since stage make wrote it: rerun make"):
            run(y="2", stages=stages)
    assert RUNS == []
    assert run(force=True) == {"make": "ran", "use": "ran"}
    assert _read(wd, "b.txt") == "a=1 b=1"


def test_progress_messages_number_the_stages(fake_pipeline):
    run, _, messages = fake_pipeline
    run()
    assert "[1/2 make] running" in messages and "[2/2 use] running" in messages
