"""The live run widget and the runs table, driven by real runs (local processes, one container).

The widget's state is what a user sees: the header (status badge, phase, elapsed, ETA), the
progress bar, the SVG charts, the log tail and the final summary.  Throttling is tested with an
injected clock; the real-time behaviour (latency, CPU) is measured in bench/bench_widget.py.
"""
from __future__ import annotations

import math
import re
import secrets
import time

import nbformat
import pytest

from celltrain import Environment, Workspace, states
from celltrain.views.format import MAX_DISPLAY_POINTS, best_value, last_traceback, panel_key
from celltrain.views.widget import RunWidget, show_run

TRAIN = """
import os, time
from celltrain import log, progress
for i in progress(range({steps}), desc="epoch 1"):
    log("loss", 1.0 / (i + 1)); log("val_loss", 1.2 / (i + 1)); log("acc", i / {steps})
    print("step", i, flush=True)
    time.sleep({sleep})
os.makedirs("outputs", exist_ok=True)
open("outputs/model.pt", "w").write("weights")
print("done", flush=True)
"""

FOREVER = """
import time
from celltrain import log
i = 0
while True:
    log("loss", 1.0 / (i + 1)); i += 1
    print("tick", i, flush=True)
    time.sleep(0.02)
"""


class FakeClock:
    """The throttle's clock, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def no_run_left_behind(request):
    """Runs that loop forever are canceled whatever the test's outcome."""
    ws = request.getfixturevalue("workspace") if "workspace" in request.fixturenames else None
    yield
    for run in ws.runs(status=states.ACTIVE) if ws is not None else ():
        run.cancel(grace=1, wait=False)


def wait_for(predicate, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    raise AssertionError("condition not met in time")


def polyline_points(svg: str) -> dict[str, int]:
    """Points per drawn series in the chart HTML."""
    out = {}
    for label, points in re.findall(r'data-label="([^"]+)" points="([^"]*)"', svg):
        out[label] = out.get(label, 0) + len(points.split())
    return out


def submit(workspace, make_source, code, **kwargs):
    src = make_source(code)
    return workspace.experiment("widget").submit("train.py", src, target="local", **kwargs)


def test_widget_follows_a_run_to_its_summary(workspace, make_source):
    run = submit(workspace, make_source, TRAIN.format(steps=30, sleep=0.03))
    w = RunWidget(run, poll_s=0.05).start()
    assert w.wait(60), "the final state is drawn when the run ends"
    w.close()
    assert "Completed" in w.header.value and run.id in w.header.value
    assert "elapsed" in w.header.value
    assert w.bar.value == 1.0 and w.bar.bar_style == "success"
    assert "30/30" in w.bar_text.value and "epoch 1" in w.bar_text.value
    # train and val of one quantity share a panel; every point is drawn (few enough).
    assert polyline_points(w.chart.value) == {"loss": 30, "val_loss": 30, "acc": 30}
    assert w.chart.value.count("<svg") == 2
    assert "done" in w.log_short.value and "step 0" not in w.log_short.value
    w.log_box.selected_index = 0            # expanding the log shows all of its tail
    assert "step 0" in w.log_long.value and "done" in w.log_long.value
    # The summary: final and best values, output files.
    assert "outputs/model.pt" in w.summary.value
    summary = w.model.summary()
    assert summary["metrics"]["loss"]["final"] == pytest.approx(1 / 30)
    assert summary["metrics"]["acc"]["best"] == pytest.approx(29 / 30)
    assert summary["files"] == ["outputs/model.pt"]
    assert w.cancel_button.layout.display == "none"
    # The model keeps the exact values of the store.
    assert w.model.series["loss"].values.tolist() == [v for _, v, _ in run.metric("loss")]


def test_redraws_are_throttled_by_the_clock_and_nothing_is_lost(workspace, make_source):
    run = submit(workspace, make_source, FOREVER)
    clock = FakeClock()
    w = RunWidget(run, live=False, get_time=clock, max_fps=5)
    try:
        wait_for(lambda: run.status == "Running" and run.metric("loss"))
        assert w.refresh(), "the first state is drawn at once"
        drawn = w.model.redraws
        points_before = w.model.series["loss"].n
        # The clock stands still: new points keep arriving and are read, but not drawn.
        for _ in range(10):
            time.sleep(0.05)
            assert w.refresh() == set()
        assert w.model.redraws == drawn
        assert w.model.series["loss"].n > points_before
        assert "metrics" in w.model.changed
        # 0.1 s later: still too early for 5 redraws a second.
        clock.now += 0.1
        assert w.refresh() == set()
        # 0.2 s after the last redraw: everything pending is drawn in one go.
        clock.now += 0.1
        parts = w.refresh()
        assert {"metrics", "log"} <= parts
        assert w.model.redraws == drawn + 1
        assert polyline_points(w.chart.value)["loss"] == w.model.series["loss"].n
        # Redraws per second of clock never exceed max_fps, however often it polls.
        start, redraws = clock.now, w.model.redraws
        for _ in range(40):
            clock.now += 0.05
            time.sleep(0.02)
            w.refresh()
        assert w.model.redraws - redraws <= (clock.now - start) * 5 + 1
        # The chart's toggles redraw it: x by time, log scale.
        clock.now += 1
        w.x_axis.value = "time"
        w.refresh()
        assert "seconds since start" in w.chart.value
        clock.now += 1
        w.log_y.value = True
        w.refresh()
        assert "loss (log)" in w.chart.value
    finally:
        run.cancel(grace=1)
        w.close()


def test_cancel_button_cancels_the_run(workspace, make_source):
    run = submit(workspace, make_source, FOREVER)
    w = RunWidget(run, poll_s=0.05).start()
    try:
        wait_for(lambda: w.model.status == "Running" and w.model.series)
        w.cancel_button.click()
        assert w.cancel_button.disabled
        assert w.wait(60)
        assert run.status == "Canceled"
        assert "Canceled" in w.header.value and "canceled by the user" in w.header.value
    finally:
        w.close()


def test_cancel_click_is_handled_while_a_cell_waits(workspace, make_source, tmp_path):
    """In a real kernel a cell blocks in w.wait() (as %%train does); the front end's click
    message for Cancel still cancels the run, and code sent meanwhile runs after the cell."""
    from jupyter_client.manager import start_new_kernel
    src = make_source(FOREVER)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))

    def execute(code, during=None):
        msg_id, outputs, acted, started = kc.execute(code), [], False, time.monotonic()
        while True:
            if during and not acted and time.monotonic() - started > 2:
                during()
                acted = True
            try:
                msg = kc.get_iopub_msg(timeout=0.5)
            except Exception:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                outputs.append(msg["content"]["text"].strip())
            elif msg["msg_type"] == "error":
                raise AssertionError(msg["content"]["evalue"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return outputs
    try:
        execute(f"from celltrain import Workspace\nws = Workspace({str(workspace.path)!r})\n"
                f"run = ws.experiment('k').submit('train.py', {str(src)!r}, target='local')\n"
                "w = run.show()")
        button = execute("print(w.cancel_button.model_id)")[0]

        def click():   # exactly what ipywidgets' front end sends for a Button click
            kc.shell_channel.send(kc.session.msg("comm_msg", {
                "comm_id": button, "data": {"method": "custom", "content": {"event": "click"}}}))
        started = time.monotonic()
        out = execute("print('waited', w.wait(120), run.status)", during=click)
        assert out == ["waited True Canceled"]
        assert time.monotonic() - started < 60, "canceled long before the wait's timeout"
        assert execute("print(1 + 1)") == ["2"], "the kernel goes on as usual"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_failed_run_shows_reason_and_traceback(workspace, make_source):
    run = submit(workspace, make_source, """
        from celltrain import log
        log("loss", 0.5)
        def configure(lr):
            raise ValueError(f"learning rate {lr} is negative")
        configure(-1)
    """)
    w = RunWidget(run, poll_s=0.05).start()
    assert w.wait(60)
    w.close()
    assert run.status == "Failed"
    assert "Failed" in w.header.value and w.bar.bar_style == "danger"
    assert "ValueError: learning rate -1 is negative" in w.summary.value
    assert "Traceback (most recent call last)" in w.summary.value
    assert "configure" in w.model.summary()["traceback"]
    static = w.static_bundle(w.model.summary())
    assert "ValueError: learning rate -1 is negative" in static["text/plain"]


def test_reattach_shows_the_whole_history_then_live(workspace, make_source):
    run = submit(workspace, make_source, TRAIN.format(steps=60, sleep=0.05))
    wait_for(lambda: len(run.metric("loss")) >= 20)
    # As after a kernel restart: a new Workspace object, a new handle, a new widget.
    again = Workspace(workspace.path).run(run.id)
    w = RunWidget(again, poll_s=0.05)
    w.refresh(force=True)
    first = w.model.series["loss"].n
    assert first >= 20, "the history so far is there at once"
    w.start()
    assert w.wait(60)
    w.close()
    assert w.model.series["loss"].n == 60 > first
    assert w.model.series["loss"].steps.tolist() == list(range(60))


def test_100k_points_are_kept_exactly_and_drawn_downsampled(workspace, make_source):
    run = submit(workspace, make_source, """
        import math
        from celltrain import log
        for i in range(100_000):
            log("loss", 1.0 + math.sin(i / 1000) + (50.0 if i == 54321 else 0.0))
    """)
    assert run.wait(timeout=120) == "Completed"
    w = RunWidget(run, live=False)
    tic = time.perf_counter()
    w.refresh(force=True)
    first_draw = time.perf_counter() - tic
    assert w.model.series["loss"].n == 100_000
    assert w.model.series["loss"].values.max() == pytest.approx(51.0 + math.sin(54.321))
    drawn = polyline_points(w.chart.value)["loss"]
    assert drawn <= MAX_DISPLAY_POINTS
    assert len(w.chart.value) < 100_000, "the chart sent to the browser stays small"
    # A redraw of 100k points (read once) costs the kernel milliseconds, not seconds.
    tic = time.perf_counter()
    w.model.mark("metrics")
    w.model._last_redraw = float("-inf")
    w.refresh()
    print(f"first draw {first_draw:.3f}s, redraw {time.perf_counter() - tic:.4f}s")
    w.close()


def test_registered_model_shows_in_the_summary(workspace, make_source):
    run = submit(workspace, make_source, TRAIN.format(steps=3, sleep=0))
    assert run.wait(timeout=60) == "Completed"
    clock = FakeClock()
    w = RunWidget(run, live=False, get_time=clock)
    w.refresh()
    assert "Registered model" not in w.summary.value
    # The registry's table (issue 5 owns the registry API; the contract is this table).
    with workspace.store.write() as conn:
        conn.execute("INSERT INTO models (name, version, run_id, created, path, sha256) "
                     "VALUES ('birds', 1, ?, ?, 'outputs/model.pt', 'abc')",
                     (run.id, time.time()))
    clock.now += 1
    w.refresh()
    assert ("Registered model:</b> birds v1: <code>ws.model(&#x27;birds&#x27;, version=1)"
            ".load(model=...)") in w.summary.value
    w.close()


def test_helpers_name_panels_best_values_and_tracebacks():
    assert panel_key("val_loss") == panel_key("train/loss") == panel_key("loss_val") == "loss"
    assert panel_key("gpu/mem") == "gpu/mem"
    assert best_value("val_loss", [3, 1, 2]) == 1
    assert best_value("accuracy", [0.1, 0.9, 0.5]) == 0.9
    assert best_value("lr", [0.1, 0.01]) is None
    log = "x\nTraceback (most recent call last):\n  File \"a.py\"\n    f()\nKeyError: 'k'\nafter"
    assert last_traceback(log).endswith("KeyError: 'k'")
    assert last_traceback("no errors") is None


def test_svg_charts_ticks_gaps_and_log_scale():
    from celltrain.views.charts import log_ticks, nice_ticks, svg_panel
    assert nice_ticks(0, 1) == [0.0, 0.5, 1.0]
    assert nice_ticks(0.13, 0.87) == [0.2, 0.4, 0.6000000000000001, 0.8] or \
        [round(t, 6) for t in nice_ticks(0.13, 0.87)] == [0.2, 0.4, 0.6, 0.8]
    assert [round(10 ** t, 6) for t in log_ticks(-1.5, 0)] == [0.05, 0.1, 0.2, 0.5, 1]
    assert [round(10 ** t, 6) for t in log_ticks(-2, 0)] == [0.01, 0.1, 1]   # decades only
    # Steps are whole numbers: no tick at 0.5 for two epochs, and one point is not -1..1.
    assert nice_ticks(0, 2, integer=True) == [0, 1, 2]
    svg = svg_panel("loss", [("loss", [0, 1], [1.0, 0.5])])
    assert re.findall(r'text-anchor="middle">([^<]*)</text>', svg) == ["0", "1"]
    svg = svg_panel("loss", [("loss", [3], [1.0])])
    assert re.findall(r'text-anchor="middle">([^<]*)</text>', svg) == ["3"]
    # A None value (NaN) breaks the line instead of drawing it to zero.
    svg = svg_panel("loss", [("loss", [0, 1, 2, 3, 4], [1.0, 0.5, math.nan, 0.3, 0.2])])
    assert svg.count("<polyline") == 2
    # Log scale skips values at or below zero and says so in the title.
    svg = svg_panel("loss", [("loss", [0, 1, 2], [0.0, 0.1, 0.01])], log_y=True)
    assert "loss (log)" in svg and polyline_points(svg) == {"loss": 2}


def test_svg_chart_legend_axes_readout_and_smoothing():
    from celltrain.views.charts import ema, svg_panel
    # TensorBoard's EMA: the first value is itself (debiased), a NaN stays out of the average.
    assert ema([1.0, 1.0, 1.0], 0.9).tolist() == pytest.approx([1.0, 1.0, 1.0])
    smoothed = ema([0.0, math.nan, 1.0], 0.5)
    assert smoothed[0] == 0 and math.isnan(smoothed[1]) and smoothed[2] == pytest.approx(2 / 3)
    svg = svg_panel("loss", [("loss", [0, 1, 2], [3.0, 2.0, 1.0]),
                             ("val_loss", [0, 1, 2], [3.5, 2.5, 1.5])])
    plot_top = float(re.search(r'class="plot" x="[^"]+" y="([^"]+)"', svg).group(1))
    legend_y = [float(y) for y in re.findall(r'class="legend-item"><rect x="[^"]+" y="([^"]+)"',
                                             svg)]
    assert len(legend_y) == 2 and max(legend_y) + 12 < plot_top, "the legend is above the plot"
    assert '>step</text>' in svg and re.search(r'class="axis-label y"[^>]*>loss</text>', svg)
    # One readout per logged step, naming each series' value there.
    assert re.findall(r'class="hover" data-x="([^"]+)"', svg) == ["0", "1", "2"]
    assert "<tspan" in svg and ">val_loss 2.5</tspan>" in svg
    # Smoothing adds the EMA and keeps the raw values, faint.
    svg = svg_panel("loss", [("loss", [0, 1, 2], [3.0, 1.0, 2.0])], smoothing=0.5)
    assert 'class="series raw" stroke-opacity="0.25" data-label="loss"' in svg
    assert 'class="series smoothed" data-smoothed="loss"' in svg


def test_static_copy_survives_in_the_saved_notebook(workspace, make_source, tmp_path):
    """A real kernel runs run.show(); the saved notebook holds the final charts and summary."""
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    src = make_source(TRAIN.format(steps=20, sleep=0.02))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"from celltrain import Workspace\nws = Workspace({str(workspace.path)!r})\n"
            f"run = ws.experiment('nb').submit('train.py', {str(src)!r}, target='local')\n"
            "print('cell output stays')\nrun.show()"),
        nbformat.v4.new_code_cell("w = _\nassert w.wait(120)\nrun.status"),
    ]
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    kinds = [o.output_type for o in outputs]
    assert "stream" in kinds and outputs[[o.output_type for o in outputs].index("stream")] \
        .text == "cell output stays\n"
    widget_out = [o for o in outputs if "application/vnd.jupyter.widget-view+json"
                  in o.get("data", {})]
    static_out = [o for o in outputs if o.output_type == "display_data"
                  and "text/html" in o.data and "celltrain-static" in o.data["text/html"]]
    assert len(widget_out) == 1 and len(static_out) == 1, "shown once, not again as the value"
    assert not [o for o in outputs if o.output_type == "execute_result"]
    static = static_out[0].data
    assert "Completed" in static["text/html"] and "data:image/png;base64," in static["text/html"]
    assert "image/png" in static and "loss: final 0.05" in static["text/plain"]
    nb_path = tmp_path / "saved.ipynb"
    nbformat.write(nb, nb_path)
    # nbconvert (as nbviewer and GitHub show it): no kernel, no widget state.
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(nb_path, as_version=4))
    assert "data:image/png;base64," in body and "Completed" in body
    assert "outputs/model.pt" in body


def test_a_container_run_streams_into_the_widget(docker_workspace, make_source):
    """One real container: phases, live points while it runs, the summary at the end."""
    src = make_source(TRAIN.format(steps=40, sleep=0.05))
    run = docker_workspace.experiment("widget-docker").submit(
        "train.py", src, environment=Environment(base_image="celltrain/base:offline"),
        gpus="none")
    w = RunWidget(run, poll_s=0.05).start()
    seen_live = []

    def live_points():
        if w.model.status == "Running" and w.model.series:
            seen_live.append(w.model.series["loss"].n)
        return len(seen_live) >= 1
    wait_for(live_points, timeout=120)
    assert w.wait(180)
    w.close()
    assert run.status == "Completed", run.reason
    assert seen_live[0] < 40, "points showed while the container was running"
    details = [h["detail"] or "" for h in run.history()]
    assert any("image cached" in d or "image built" in d for d in details)
    assert polyline_points(w.chart.value)["loss"] == 40
    assert "outputs/model.pt" in w.summary.value


def test_preparing_shows_the_image_build_as_it_goes(docker_workspace, docker_client,
                                                   make_source):
    """A real image build (a setup step on the offline base image): its log shows as it runs."""
    token = secrets.token_hex(4)
    src = make_source(TRAIN.format(steps=3, sleep=0))
    env = Environment(base_image="celltrain/base:offline",
                      setup=[f"echo widget build {token}", "sleep 3", "echo second step"])
    run = docker_workspace.experiment("widget-build").submit("train.py", src, environment=env,
                                                             gpus="none")
    w = RunWidget(run, poll_s=0.05).start()
    headers = []
    try:
        deadline = time.monotonic() + 240
        while not w.wait(0.05) and time.monotonic() < deadline:
            headers.append(w.header.value)
        assert run.status == "Completed", run.reason
        assert any("Preparing" in h and f"building image: widget build {token}" in h
                   or "Preparing" in h and "building image: + sleep 3" in h for h in headers)
        assert any((h["detail"] or "").startswith("image built") for h in run.history())
    finally:
        w.close()
        image = run.record["image"]
        if image and image.startswith("celltrain/env:"):
            docker_client.images.remove(image, force=True)


# -- the runs table -------------------------------------------------------------------------------
def test_runs_table_sorts_and_overlays_selected_runs(workspace, make_source):
    runs = []
    for steps in (5, 10, 20):
        runs.append(submit(workspace, make_source, TRAIN.format(steps=steps, sleep=0),
                           params={"steps": steps}))
    for run in runs:
        assert run.wait(timeout=60) == "Completed"
    table = workspace.runs_table()
    assert "param:steps" in table.columns and "metric:val_loss" in table.columns
    table.sort("metric:loss")                      # ascending: lowest final loss first
    assert [r["run"] for r in table.sorted_rows()] == [runs[2].id, runs[1].id, runs[0].id]
    table.sort("metric:loss")                      # again: reversed
    assert [r["run"] for r in table.sorted_rows()][0] == runs[0].id
    widget = table.widget
    assert table._headers["metric:loss"].description.endswith("▼")
    # Ticking two runs overlays their curves, one line per run per metric.
    table._checkboxes[runs[0].id].value = True
    table._checkboxes[runs[2].id].value = True
    drawn = polyline_points(table.compare.value)
    assert drawn[f"{runs[0].id} loss"] == 5 and drawn[f"{runs[2].id} val_loss"] == 20
    assert drawn[runs[2].id] == 20           # acc: alone in its panel, labelled by run
    table._checkboxes[runs[0].id].value = False
    assert f"{runs[0].id} loss" not in polyline_points(table.compare.value)
    # Static fallback: an HTML table with every run.
    page = table.to_html()
    assert all(r.id in page for r in runs) and "Completed" in page
    # A new run shows after Refresh.
    newer = submit(workspace, make_source, TRAIN.format(steps=2, sleep=0))
    newer.wait(timeout=60)
    table.refresh()
    assert newer.id in {r["run"] for r in table.rows}
    assert table.selected == [runs[2].id]
    widget.close()


def test_runs_table_rejects_bad_input_clearly(workspace):
    with pytest.raises(ValueError, match="cannot sort by 'speed'.*the columns are run"):
        workspace.runs_table(sort_by="speed")
    with pytest.raises(ValueError, match="limit takes a positive number"):
        workspace.runs_table(limit=0)


def test_show_run_returns_the_widget_and_lingers_only_while_open(workspace, make_source):
    run = submit(workspace, make_source, TRAIN.format(steps=3, sleep=0))
    run.wait(timeout=60)
    w = show_run(run)
    assert isinstance(w, RunWidget) and w.wait(10)
    assert w._thread.is_alive(), "it keeps looking for a registered model"
    w.close()
    assert not w._thread.is_alive()



def test_a_distributed_run_shows_each_rank_and_charts_the_picked_one(workspace, make_source):
    """The rank strip names every rank's state and exit code; the picker swaps the charts to
    another rank's series (rank 0's by default), read from the store."""
    src = make_source("""
        import os, torch.distributed as dist
        from celltrain import log
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        for step in range(5 + 3 * rank):              # rank 1 logs more points than rank 0
            log("loss", float(rank * 10 + step), step=step)
        dist.destroy_process_group()
    """)
    run = workspace.experiment("widget").submit("train.py", src, target="local",
                                                procs_per_node=2)
    w = RunWidget(run, poll_s=0.05).start()
    assert w.wait(240), "the final state is drawn when the run ends"
    assert run.status == states.COMPLETED, (run.reason, run.logs())
    assert 'data-rank="0"' in w.ranks_strip.value and 'data-rank="1"' in w.ranks_strip.value
    assert w.ranks_strip.value.count("completed (0)") == 2
    assert w.rank_picker.layout.display is None
    assert [v for _, v in w.rank_picker.options] == [0, 1]
    assert polyline_points(w.chart.value) == {"loss": 5}
    w.rank_picker.value = 1
    assert polyline_points(w.chart.value) == {"loss": 8}
    assert w.model.series["loss"].values.tolist() == [10.0 + s for s in range(8)]
    w.close()


def test_a_run_of_one_process_shows_no_rank_strip_or_picker(workspace, make_source):
    run = submit(workspace, make_source, TRAIN.format(steps=3, sleep=0))
    w = RunWidget(run, live=False)
    assert run.wait(timeout=60) == states.COMPLETED
    w.refresh(force=True)
    assert w.ranks_strip.value == "" and w.rank_picker.layout.display == "none"


def test_eta_counts_down_and_is_gone_once_a_step_overruns_it_and_slow_rates_read_per_step(
        workspace):
    """Issue 15 item 7: "ETA 0:00" for 50 s while at epoch 1/2, and "0.0268 it/s"."""
    from celltrain.views.format import format_rate
    from celltrain.views.run_view import RunView
    view = RunView(workspace.store, "no-run")
    view.record = {"status": states.RUNNING,
                   "progress": {"n": 1, "total": 2, "rate": 1 / 37, "eta": 37.0, "t": 1000.0}}
    assert view.progress(now=1010.0)["eta"] == pytest.approx(27.0)
    assert view.progress(now=1037.5)["eta"] is None      # overrun: no "0:00"
    assert view.progress(now=1090.0)["eta"] is None
    assert format_rate(1 / 37) == "37 s/it" and format_rate(0.5, "epoch") == "2 s/epoch"
    assert format_rate(12.5) == "12.5 it/s" and format_rate(1.0) == "1 it/s"


def test_picking_a_rank_that_logged_nothing_clears_the_charts(workspace, make_source):
    src = make_source("""
        import torch.distributed as dist
        from celltrain import log
        dist.init_process_group("gloo")
        if dist.get_rank() == 0:
            log("loss", 1.0, step=0)
            log("loss", 0.5, step=1)
        dist.destroy_process_group()
    """)
    run = workspace.experiment("widget").submit("train.py", src, target="local",
                                                procs_per_node=2)
    assert run.wait(timeout=240) == states.COMPLETED, (run.reason, run.logs())
    w = RunWidget(run, live=False)
    w.refresh(force=True)
    assert polyline_points(w.chart.value) == {"loss": 2}
    w.rank_picker.value = 1
    assert polyline_points(w.chart.value) == {} and w.model.series == {}


def test_a_failed_build_names_its_cause_once_in_the_header(docker_workspace, make_source):
    """A real build that fails (pip finds no such package): the header says pip's own words,
    the 25 lines of build log sit in the summary's closed <details>, the log tail is not
    repeated, and the static copy's head names the cause too."""
    src = make_source(TRAIN.format(steps=3, sleep=0))
    env = Environment(base_image="celltrain/base:offline",
                      pip=["celltrain-no-such-package==9.9"])
    run = docker_workspace.experiment("widget-build").submit("train.py", src, environment=env,
                                                             gpus="none")
    w = RunWidget(run, poll_s=0.05).start()
    try:
        assert w.wait(300)
    finally:
        w.close()
    assert run.status == "Failed"
    cause = "No matching distribution found for celltrain-no-such-package==9.9"
    assert cause in w.header.value, w.header.value
    assert "celltrain-failure-details" in w.summary.value
    head, details = w.summary.value.split("<details", 1)
    assert "image build failed" not in head and "image build failed" in details
    assert w.log_short.value == ""
    static = w.static_bundle(w.model.summary())["text/html"]
    assert cause in static.split("<details", 1)[0]


def test_a_failures_traceback_shows_once_with_the_rest_folded(workspace, make_source):
    run = submit(workspace, make_source, """
        raise ValueError("0.1234 is not a learning rate")
    """)
    w = RunWidget(run, poll_s=0.05).start()
    assert w.wait(60)
    w.close()
    shown = re.sub(r"<[^>]*>", "", w.header.value + w.log_short.value
                   + w.summary.value.split("<details", 1)[0])       # the text, not tooltips
    assert shown.count("0.1234 is not a learning rate") == 1, shown
    assert "ValueError: 0.1234 is not a learning rate" in w.header.value
    assert "Traceback (most recent call last)" in w.summary.value.split("<details", 1)[1]
