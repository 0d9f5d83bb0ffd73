"""Chapter 1 in JupyterLab, in a real browser, used as a student uses it (``make lab``).

The test starts JupyterLab (quick tier) on a temporary copy of chapter 1 and Debian's headless Chromium,
and drives the page through the Chrome DevTools protocol with websocket-client (a dependency of
jupyter_server, so nothing is added). It runs the cells above the widget cell and the widget cell, clicks
*Run Interact*, drags the acceleration slider, clicks again, and checks that the figure's PNG changed and
that the page asked nothing of the internet. Skipped when chromium or jupyterlab is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTER = REPO / "notebooks" / "01_forward_model.ipynb"

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)", allow_module_level=True)
if importlib.util.find_spec("jupyterlab") is None:
    pytest.skip("jupyterlab is not installed (make setup installs requirements.txt)", allow_module_level=True)
websocket = pytest.importorskip("websocket", reason="websocket-client (a jupyter_server dependency) is missing")

sys.path.insert(0, str(REPO / "book"))
from screenshots import CHROMIUM_FLAGS  # noqa: E402  (the flags that keep Chromium itself off the network)

STARTUP_S = 60  # server start, Chromium start, JupyterLab's page and the kernel
CELLS_S = 150  # the chapter's cells up to the widget, and one reconstruction per click, on a slow machine
LOCAL_URL_PREFIXES = ("http://127.0.0.1:", "data:", "blob:")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {timeout} s waiting for {what}")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM (JupyterLab then shuts its kernels down), SIGKILL if that takes more than 15 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def jupyterlab(root: Path):
    """JupyterLab on ``root`` at a free port with a fresh token, quick tier; yields the notebook URL's prefix."""
    port, token = free_port(), secrets.token_hex(16)
    state = root.parent / "jupyter"  # settings, workspaces and runtime files of this server only
    env = {
        **os.environ,
        "MRTUTOR_MODE": "quick",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        # window.jupyterapp: the test runs cells through JupyterLab's own commands, those of the Run menu
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:  # containers and CI run as root, which JupyterLab refuses without this
        command.append("--allow-root")
    log = root.parent / "jupyterlab.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.poll() is not None or http_ok(f"{base}/api/status?token={token}"), STARTUP_S,
                   f"JupyterLab to answer (log: {log})")
        assert server.poll() is None, f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-2000:]}"
        yield base, token
    finally:
        stop_process_group(server)


class DevTools:
    """A Chrome DevTools protocol session with one page: commands, script evaluation, mouse input."""

    def __init__(self, websocket_url: str):
        # Chromium refuses websocket clients that send an Origin it was not told to allow.
        self.socket = websocket.create_connection(websocket_url, timeout=CELLS_S, suppress_origin=True)
        self.last_id = 0
        self.requested_urls: list[str] = []

    def call(self, method: str, **params):
        self.last_id += 1
        self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("method") == "Network.requestWillBeSent":
                self.requested_urls.append(message["params"]["request"]["url"])
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"page script failed: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        return wait_until(lambda: self.evaluate(expression), timeout, what)

    def mouse(self, kind: str, x: float, y: float, buttons: int) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=buttons, clickCount=1)

    def click(self, point: dict) -> None:
        self.mouse("mouseMoved", point["x"], point["y"], 0)
        self.mouse("mousePressed", point["x"], point["y"], 1)
        self.mouse("mouseReleased", point["x"], point["y"], 0)

    def drag(self, start: dict, end: dict, steps: int = 10) -> None:
        self.mouse("mouseMoved", start["x"], start["y"], 0)
        self.mouse("mousePressed", start["x"], start["y"], 1)
        for step in range(1, steps + 1):
            fraction = step / steps
            x, y = (start[k] + fraction * (end[k] - start[k]) for k in ("x", "y"))
            self.mouse("mouseMoved", x, y, 1)
        self.mouse("mouseReleased", end["x"], end["y"], 0)

    def close(self) -> None:
        self.socket.close()


@contextlib.contextmanager
def headless_chromium(profile: Path):
    """Headless Chromium with its DevTools port chosen by itself (read back from its profile); yields a page."""
    command = [CHROMIUM, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
               "--window-size=1400,1000", "about:blank"]
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    page = None
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.is_file() and port_file.read_text().count("\n") >= 1, STARTUP_S,
                   "Chromium's DevTools port")
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = DevTools(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
        yield page
    finally:
        if page is not None:
            page.close()
        stop_process_group(browser)


# JavaScript run in the page. `notebook()` is the open chapter (found among the main area's widgets: a headless
# page has no focus, so JupyterLab's currentWidget stays empty), `widgetCell()` the cell holding interact_manual.
PAGE_HELPERS = """
window.notebookPanel = () => window.jupyterapp && [...jupyterapp.shell.widgets('main')]
    .find(w => w.context && w.context.path === '%s');
window.notebook = () => notebookPanel().content;
window.widgetCell = () => notebook().widgets.find(c => c.model.sharedModel.getSource().includes('interact_manual'));
window.cellErrors = () => notebook().widgets.filter(c => c.model.type === 'code')
    .flatMap(c => c.model.outputs.toJSON()).filter(o => o.output_type === 'error')
    .map(o => `${o.ename}: ${o.evalue}`);
window.centre = (element) => {
    const box = element.getBoundingClientRect();
    return {x: box.left + box.width / 2, y: box.top + box.height / 2};
};
window.runButton = () => [...widgetCell().node.querySelectorAll('.widget-interact button')]
    .find(b => b.textContent.trim() === 'Run Interact');
window.accelerationSlider = () => [...widgetCell().node.querySelectorAll('.widget-slider')]
    .find(s => s.querySelector('.widget-label').textContent.trim() === 'acceleration');
// Counts the finished runs of the widget's function: interact_manual disables its button while the function runs.
window.countFinishedRuns = () => {
    window.finishedRuns = 0;
    new MutationObserver(() => { if (!runButton().disabled) finishedRuns += 1; })
        .observe(runButton(), {attributes: true, attributeFilter: ['disabled']});
};
// What the widget's output area shows: its PNG images (the figure) and its text (a traceback, if any).
window.interactOutput = () => {
    const output = widgetCell().node.querySelector('.widget-interact .widget-output');
    return {pngs: [...output.querySelectorAll('img[src^="data:image/png"]')].map(i => i.src), text: output.innerText};
};
""" % CHAPTER.name

KERNEL_IDLE = """(() => {
    const panel = window.notebookPanel && notebookPanel();  // undefined until the new page has loaded
    const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
    return Boolean(kernel && kernel.status === 'idle' && panel.content.widgets.length > 0);
})()"""

# Select the widget cell, scroll to it, and queue Run > Run All Above Selected Cell, then the cell itself.
RUN_TO_WIDGET = """(async () => {
    const nb = notebook(), cell = widgetCell();
    nb.activeCellIndex = nb.widgets.indexOf(cell);
    await nb.scrollToCell(cell, 'start');
    jupyterapp.commands.execute('notebook:run-all-above');
    jupyterapp.commands.execute('notebook:run-cell');
})()"""

WIDGET_READY_OR_ERROR = "cellErrors().length ? cellErrors() : (runButton() ? 'ready' : null)"

# The centre of an element after scrolling it into the middle of the window, so the mouse can reach it.
VISIBLE_CENTRE = "(async () => {{ const e = {element}; e.scrollIntoView({{block: 'center'}}); "
VISIBLE_CENTRE += "await new Promise(r => requestAnimationFrame(r)); return centre(e); }})()"


def run_interact(page: DevTools) -> dict:
    """Click Run Interact, wait until the function has run, and return what the widget's output area shows."""
    runs = page.evaluate("finishedRuns")
    page.click(page.evaluate(VISIBLE_CENTRE.format(element="runButton()")))
    page.wait_for(f"finishedRuns > {runs}", CELLS_S, "the widget's function to run after Run Interact")
    output = page.evaluate("interactOutput()")
    assert output["pngs"], f"Run Interact showed no figure: {output['text'][-2000:]}"
    return output


def drag_acceleration_slider(page: DevTools) -> tuple[str, str]:
    """Drag the acceleration slider's handle three quarters along its track; return the readout before, after."""
    readout = "accelerationSlider().querySelector('.widget-readout').textContent.trim()"
    before = page.evaluate(readout)
    handle = page.evaluate(VISIBLE_CENTRE.format(element="accelerationSlider().querySelector('.noUi-handle')"))
    track = page.evaluate("accelerationSlider().querySelector('.noUi-target').getBoundingClientRect().toJSON()")
    page.drag(handle, {"x": track["left"] + 0.75 * track["width"], "y": handle["y"]})
    after = page.wait_for(f"{readout} !== {json.dumps(before)} && {readout}", 10, "the slider's readout to change")
    return before, after


def test_chapter_1_widget_recomputes_the_figure_in_jupyterlab(tmp_path):
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(CHAPTER, root)  # the server saves into its copy, never into notebooks/
    with jupyterlab(root) as (base, token), headless_chromium(tmp_path / "chromium") as page:
        page.call("Network.enable")  # to record every request the page makes
        page.call("Page.enable")  # without it the helpers below are not added to the new page
        page.call("Page.addScriptToEvaluateOnNewDocument", source=PAGE_HELPERS)
        page.call("Page.navigate", url=f"{base}/lab/tree/{CHAPTER.name}?token={token}")
        page.wait_for(KERNEL_IDLE, STARTUP_S, "chapter 1 open with an idle kernel")
        page.evaluate(RUN_TO_WIDGET)
        ready = page.wait_for(WIDGET_READY_OR_ERROR, CELLS_S, "the widget cell's Run Interact button")
        assert ready == "ready", f"a cell above the widget failed: {ready}"
        page.evaluate("countFinishedRuns()")

        first = run_interact(page)
        before, after = drag_acceleration_slider(page)
        second = run_interact(page)

        assert float(after) > float(before), f"dragging right moved the acceleration from {before} to {after}"
        assert second["pngs"] != first["pngs"], "the figure is the same at the new acceleration"
        online = [url for url in page.requested_urls if not url.startswith(LOCAL_URL_PREFIXES)]
        assert not online, f"JupyterLab's page asked the internet for {online}"
