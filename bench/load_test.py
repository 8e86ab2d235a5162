"""Load test: N concurrent browser-like sessions against ONE real Streamlit server on loopback.

Usage:
    PYTHONPATH=. .venv/bin/python bench/load_test.py [--sessions 20] [--seconds 60] [--think 5,1]
        [--database-url URL] [--app-ref REF] [--browser-pages 3] [--seed 7]
        [--write [--analysis NOTES.md]]

What it does:
1. Creates a default-size demo database (`python -m metering ... init-db`, then `demo`) in a
   temporary SQLite file, unless `--database-url` names an existing one (e.g. PostgreSQL).
2. Starts `streamlit run app.py` on a free loopback port (from the working tree, or from a clean
   `git archive REF` snapshot with `--app-ref`, so other people's half-done edits do not break it).
3. Runs N protocol sessions concurrently for `--seconds`. Each session speaks to the server the way
   the browser does (checked against frames recorded from Chromium): an *open* is GET of the page
   HTML (on a session's first open also the JS/CSS it names, as a browser with an empty cache
   does), `/_stcore/health`, `/_stcore/host-config`, a new websocket on `/_stcore/stream` and a
   `rerun_script` BackMsg carrying the link's query string and page; a *filter* change is a
   `rerun_script` with every sidebar widget's state (one value changed) and the updated query
   string; a *page switch* is a `rerun_script` with the other page's script hash. Cached messages
   are remembered and their hashes sent back (`cached_message_hashes`) like the browser's cache.
   Page time = request sent (GET for an open) -> `script_finished` received, i.e. every element
   delivered. A run that delivers an exception or an error alert, a missing page, a wrong page, a
   reference to an unknown cached message or a timeout counts as a failure.
   Each session loops: open a shared link, then 4 actions (2 filter changes, 2 page switches, in a
   random order) with a think time of `--think` seconds (uniform 0.5x-1.5x) before each action.
   A comma list of think times runs one phase of `--seconds` each on the same server (the
   default 5,1: people reading the page, then a click a second per session).
4. Samples the server's RSS (VmRSS of the process and its children, every 0.5 s) and VmHWM.
5. Cross-check (b): `--browser-pages K` real headless Chromium pages (Playwright, Debian's
   /usr/bin/chromium) open one link per app page at the same time; then K protocol sessions open
   the same links. Browser time = `page.goto` -> the `script_finished` frame on its websocket.

`--write` replaces (or appends at the end) the section "## Load test (20 sessions)" of
docs/performance.md and touches nothing else in that file; `--analysis FILE` appends hand-written
notes to it (without it a rewrite drops the notes of the previous run).
Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PERF_DOC = ROOT / "docs" / "performance.md"
SECTION = "## Load test (20 sessions)"
CHROMIUM = "/usr/bin/chromium"
# page name -> url path (st.navigation url_path; "" is the default page)
PAGES = {"home": "", "lanes": "lanes", "projects": "projects", "keys": "keys",
         "forecast": "forecast", "invoice": "invoice", "data": "data"}
FILTER_KEYS = ("org", "period", "vs", "project", "env", "workload")
# how often each filter is the one changed (a person mostly narrows env / project / workload)
FILTER_WEIGHTS = {"env": 3, "project": 2, "workload": 2, "period": 2, "vs": 1, "org": 1}
REQUEST_TIMEOUT = 180.0
CONTEXT = {"timezone": "UTC", "timezone_offset": 0, "locale": "en-US", "is_embedded": False,
           "color_scheme": "light"}


# --------------------------------------------------------------------------------------------
# statistics


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of an empty list")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile p={p} is not within 0..100")
    s = sorted(values)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


@dataclass
class Sample:
    session: int
    action: str  # open | filter | switch
    page: str  # page name the request targeted
    start: float  # monotonic seconds
    ms: float
    ok: bool
    error: str | None = None
    messages: int = 0
    bytes: int = 0
    run_ms: float | None = None  # rerun_script sent -> script_finished (server's part)


# --------------------------------------------------------------------------------------------
# server process and memory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kib(pid: int, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{tid}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
                except (FileNotFoundError, ProcessLookupError):
                    pass
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def tree_rss_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmRSS") or 0 for p in process_tree(pid))


def tree_hwm_kib(pid: int) -> int:
    """Sum of VmHWM over the tree (an upper bound of the tree's simultaneous peak)."""
    return sum(_status_kib(p, "VmHWM") or 0 for p in process_tree(pid))


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (and its reaped children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / tick


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self._sample())
            self._stop_event.wait(self.interval)

    def _sample(self) -> tuple[float, int, float]:
        return time.monotonic(), tree_rss_kib(self.pid), cpu_seconds(self.pid)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.samples.append(self._sample())


class Server:
    """`streamlit run app.py` on a free loopback port; the pid is the Streamlit process itself."""

    def __init__(self, db_url: str, app_dir: Path, workdir: Path):
        self.db_url, self.app_dir = db_url, app_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "streamlit.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        streamlit = Path(sys.executable).parent / "streamlit"
        cmd = [str(streamlit)] if streamlit.exists() else [sys.executable, "-m", "streamlit"]
        cmd += ["run", "app.py", "--server.headless", "true", "--server.port", str(self.port),
                "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
        env = {**os.environ, "PYTHONPATH": str(self.app_dir), "METERING_DATABASE_URL": self.db_url}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.app_dir, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.base + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("streamlit did not start:\n" + self.log_tail())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def tracebacks(self) -> int:
        try:
            return self.log_path.read_text(errors="replace").count("Traceback (most recent call last)")
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


def make_demo(workdir: Path, small: bool = False) -> str:
    """A demo database in a temporary SQLite file, made by the CLI (init-db, then demo)."""
    url = f"sqlite:///{workdir / 'load.db'}"
    demo = ["demo"] + (["--days", "240", "--events", "60000", "--seed", "11"] if small else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["init-db"], demo):
        r = subprocess.run([sys.executable, "-m", "metering", "--database-url", url, *args],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"`metering {' '.join(args)}` failed: {r.stderr[-2000:]}")
    return url


def snapshot_app(ref: str, workdir: Path) -> Path:
    """A clean copy of the app at git REF (so concurrent edits in the checkout do not leak in)."""
    dest = workdir / "app"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


# --------------------------------------------------------------------------------------------
# the protocol client (one per simulated browser tab)


class RunFailed(Exception):
    pass


class ProtocolSession:
    """One browser tab, spoken over Streamlit's websocket protocol (BackMsg / ForwardMsg)."""

    def __init__(self, base: str, sid: int = 0):
        self.base, self.sid = base, sid
        self.ws = None
        self.cache: dict[str, object] = {}  # hash -> ForwardMsg, like the browser's message cache
        self.pages: dict[str, str] = {}  # url path -> page_script_hash
        self.widgets: dict[str, tuple[str, str, list[str]]] = {}  # query key -> (id, kind, options)
        self.query: dict[str, list[str]] = {}
        self.page_path = ""
        self.texts: list[str] = []  # metric values and markdown of the last run (for tests)
        self.last_run_ms: float | None = None
        self.static_loaded = False

    # -- transport
    async def _get(self, *paths: str) -> list[bytes]:
        """GET each path in turn (one connection each, like a browser's fetch); the bodies."""
        def fetch():
            bodies = []
            for path in paths:
                req = urllib.request.Request(self.base + path, headers={"Accept-Encoding": "gzip"})
                with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as r:
                    bodies.append(r.read())
                    if r.status != 200:
                        raise RunFailed(f"GET {path}: HTTP {r.status}")
            return bodies
        return await asyncio.to_thread(fetch)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def _connect(self) -> None:
        from websockets.asyncio.client import connect

        await self.close()
        self.ws = await connect(
            self.base.replace("http://", "ws://") + "/_stcore/stream", origin=self.base,
            subprotocols=["streamlit"], max_size=None, proxy=None, open_timeout=REQUEST_TIMEOUT,
            user_agent_header="loadtest (browser-like protocol client)",
        )

    # -- protocol
    def _client_state(self, page_hash: str = "", page_name: str = ""):
        from streamlit.proto.ClientState_pb2 import ClientState

        cs = ClientState(query_string=self._query_string(), page_script_hash=page_hash,
                         page_name=page_name)
        cs.context_info.CopyFrom(cs.context_info.__class__(url=self.base + "/", **CONTEXT))
        cs.cached_message_hashes.extend(self.cache)
        for key, (wid, kind, _options) in self.widgets.items():
            values = self.query.get(key, [])
            if kind == "selectbox":
                if values:
                    w = cs.widget_states.widgets.add(id=wid)
                    w.string_value = values[0]
            else:
                w = cs.widget_states.widgets.add(id=wid)
                w.string_array_value.data.extend(values)
        return cs

    def _query_string(self) -> str:
        return urlencode([(k, v) for k in sorted(self.query) for v in self.query[k]])

    async def _rerun(self, cs) -> tuple[int, int]:
        """Send rerun_script, read ForwardMsgs until the run is over; (messages, bytes)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        back = BackMsg()
        back.rerun_script.CopyFrom(cs)
        sent = time.monotonic()
        await self.ws.send(back.SerializeToString())
        n = nbytes = 0
        errors: list[str] = []
        ran_hash = None
        self.texts = []
        new_widgets: dict[str, tuple[str, str, list[str]]] = {}
        while True:
            raw = await self.ws.recv()
            n += 1
            nbytes += len(raw)
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if kind == "ref_hash":
                if msg.ref_hash not in self.cache:
                    errors.append(f"reference to unknown cached message {msg.ref_hash}")
                    continue
                cached = self.cache[msg.ref_hash]
                full = ForwardMsg()
                full.CopyFrom(cached)
                full.metadata.CopyFrom(msg.metadata)
                msg, kind = full, full.WhichOneof("type")
            elif msg.metadata.cacheable:
                self.cache[msg.hash] = msg
            if kind == "delta":
                self._element(msg, errors, new_widgets)
            elif kind == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages}
                ran_hash = msg.navigation.page_script_hash
            elif kind == "page_info_changed":
                self.query = parse_qs(msg.page_info_changed.query_string, keep_blank_values=True)
            elif kind == "page_not_found":
                errors.append(f"page not found: {msg.page_not_found.page_name!r}")
            elif kind == "script_finished":
                status = msg.script_finished
                if status == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    continue  # the app asked for a rerun; the page is done when that one ends
                if status == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    errors.append("script finished with a compile error")
                break
        self.last_run_ms = (time.monotonic() - sent) * 1000
        if new_widgets:
            self.widgets = new_widgets
        if ran_hash is not None:
            by_hash = {h: p for p, h in self.pages.items()}
            self.page_path = by_hash.get(ran_hash, self.page_path)
        if errors:
            raise RunFailed("; ".join(errors)[:500])
        return n, nbytes

    def _element(self, msg, errors: list[str], widgets: dict) -> None:
        from streamlit.proto.Alert_pb2 import Alert

        delta = msg.delta
        if delta.WhichOneof("type") != "new_element":
            return
        el = delta.new_element
        ek = el.WhichOneof("type")
        if ek == "exception":
            errors.append(f"exception {el.exception.type}: {el.exception.message}"[:300])
        elif ek == "alert" and el.alert.format == Alert.ERROR:
            errors.append(f"error alert: {el.alert.body}"[:300])
        elif ek == "metric":
            self.texts.append(el.metric.body)
        elif ek == "markdown":
            self.texts.append(el.markdown.body)
        elif ek in ("selectbox", "multiselect", "button_group"):
            w = getattr(el, ek)
            if w.query_param_key in FILTER_KEYS:
                if ek == "button_group":
                    options = [o.content for o in w.options]
                else:
                    options = list(w.options)
                widgets[w.query_param_key] = (w.id, ek, options)

    # -- user actions
    async def open(self, path: str, query: str) -> tuple[int, int]:
        """Open a shared link in a fresh tab: page HTML, health, host config, websocket, first run."""
        (html,) = await self._get(f"/{path}?{query}" if query else f"/{path}")
        if not self.static_loaded:
            # a fresh browser fetches the JS/CSS the page names once (served immutable, 1 year)
            assets = re.findall(r'(?:src|href)="\.?/?(static/[^"]+)"', html.decode(errors="replace"))
            await self._get(*(f"/{a}" for a in dict.fromkeys(assets)))
            self.static_loaded = True
        await self._get("/_stcore/health", "/_stcore/host-config")
        await self._connect()
        # a navigation reloads the JS app: its in-memory message cache and widget states start empty
        self.cache, self.widgets, self.query = {}, {}, parse_qs(query, keep_blank_values=True)
        n, b = await self._rerun(self._client_state(page_name=path))
        if self.page_path != path:
            raise RunFailed(f"opened /{path} but the server ran /{self.page_path}")
        return n, b

    def pick_filter_change(self, rng: random.Random) -> tuple[str, list[str]]:
        keys = [k for k in FILTER_WEIGHTS if k in self.widgets and self.widgets[k][2]]
        if not keys:
            raise RunFailed("no sidebar filter widgets were delivered")
        key = rng.choices(keys, weights=[FILTER_WEIGHTS[k] for k in keys])[0]
        _wid, kind, options = self.widgets[key]
        current = self.query.get(key, [])
        if kind == "multiselect":
            if current and rng.random() < 0.5:
                return key, []
            return key, [rng.choice(options)]
        if key == "period":
            options = options[:6]  # people look at recent months
        choices = [o for o in options if [o] != current] or options
        return key, [rng.choice(choices)]

    async def change_filter(self, key: str, values: list[str]) -> tuple[int, int]:
        self.query[key] = values
        if not values:
            del self.query[key]
        return await self._rerun(self._client_state(page_hash=self.pages.get(self.page_path, "")))

    async def switch_page(self, path: str) -> tuple[int, int]:
        if path not in self.pages:
            raise RunFailed(f"page /{path} is not in the navigation ({sorted(self.pages)})")
        n, b = await self._rerun(self._client_state(page_hash=self.pages[path]))
        if self.page_path != path:
            raise RunFailed(f"switched to /{path} but the server ran /{self.page_path}")
        return n, b


def page_name(path: str) -> str:
    return next(name for name, p in PAGES.items() if p == path)


async def timed(samples: list[Sample], sid: int, action: str, path: str, coro,
                session: ProtocolSession | None = None) -> bool:
    t0 = time.monotonic()
    try:
        n, b = await asyncio.wait_for(coro, REQUEST_TIMEOUT)
        samples.append(Sample(sid, action, page_name(path), t0, (time.monotonic() - t0) * 1000,
                              True, None, n, b, session.last_run_ms if session else None))
        return True
    except Exception as e:  # every failure is recorded, the session reopens a link
        err = f"{type(e).__name__}: {e}"[:500] if str(e) else type(e).__name__
        samples.append(Sample(sid, action, page_name(path), t0, (time.monotonic() - t0) * 1000,
                              False, err))
        return False


@dataclass
class Links:
    orgs: list[str]
    periods: list[str]
    envs: list[str]

    def random(self, rng: random.Random) -> tuple[str, str]:
        path = rng.choice(list(PAGES.values()))
        q = [("org", rng.choice(self.orgs)), ("period", rng.choice(self.periods[:4]))]
        r = rng.random()
        if r < 0.3 and self.envs:
            q.append(("env", rng.choice(self.envs)))
        elif r < 0.4:
            q.append(("vs", "last-year"))
        return path, urlencode(q)


async def discover(base: str) -> Links:
    """One tab opens the home page to learn the orgs, periods and environments a link can use."""
    s = ProtocolSession(base, -1)
    try:
        await s.open("", "")
        orgs = s.widgets.get("org", ("", "", []))[2]
        periods = s.widgets.get("period", ("", "", []))[2]
        envs = s.widgets.get("env", ("", "", []))[2]
        if not orgs or not periods:
            raise RuntimeError("the home page delivered no org/period selectors; is the database empty?")
        return Links(orgs, periods, envs)
    finally:
        await s.close()


async def session_loop(base: str, sid: int, links: Links, deadline: float, think: float,
                       seed: int, samples: list[Sample], start_delay: float) -> None:
    rng = random.Random(seed * 1000 + sid)
    s = ProtocolSession(base, sid)
    await asyncio.sleep(start_delay)

    async def pause() -> bool:
        if think > 0:
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))
        return time.monotonic() < deadline

    try:
        while time.monotonic() < deadline:
            path, query = links.random(rng)
            if not await timed(samples, sid, "open", path, s.open(path, query), s):
                await asyncio.sleep(0.5)
                continue
            actions = ["filter", "filter", "switch", "switch"]
            rng.shuffle(actions)
            for action in actions:
                if not await pause():
                    break
                if action == "filter":
                    try:
                        key, values = s.pick_filter_change(rng)
                    except RunFailed as e:
                        samples.append(Sample(sid, "filter", page_name(s.page_path), time.monotonic(),
                                              0.0, False, str(e)))
                        break
                    ok = await timed(samples, sid, "filter", s.page_path, s.change_filter(key, values), s)
                else:
                    target = rng.choice([p for p in PAGES.values() if p != s.page_path])
                    ok = await timed(samples, sid, "switch", target, s.switch_page(target), s)
                if not ok:
                    break
            if time.monotonic() < deadline:
                await pause()
    finally:
        await s.close()


async def run_load(base: str, links: Links, sessions: int, seconds: float, think: float,
                   seed: int) -> tuple[list[Sample], float]:
    samples: list[Sample] = []
    t0 = time.monotonic()
    deadline = t0 + seconds
    ramp = min(5.0, seconds / 10)
    await asyncio.gather(*(
        session_loop(base, i, links, deadline, think, seed, samples, ramp * i / max(1, sessions))
        for i in range(sessions)))
    return samples, time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# cross-check with real Chromium pages


def crosscheck_links(links: Links) -> tuple[str, list[str]]:
    """The shared link the cross-check opens (home), then the pages it switches to in order."""
    q = urlencode([("org", links.orgs[0]), ("period", links.periods[min(1, len(links.periods) - 1)])])
    return q, [p for p in PAGES.values() if p]


async def browser_tabs(base: str, k: int, query: str, paths: list[str], rounds: int) -> list[Sample]:
    """K Chromium tabs (one context each): open the home link, then click every page in the sidebar.

    ``ms`` is the user's view (navigation start or click -> ``script_finished`` frame received),
    ``run_ms`` the server's part (``rerun_script`` frame sent -> ``script_finished`` received).
    """
    from playwright.async_api import async_playwright
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    samples: list[Sample] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])

        async def one(i: int) -> None:
            ctx = await browser.new_context(viewport={"width": 1440, "height": 1000})
            page = await ctx.new_page()
            st = {"done": asyncio.Event(), "errors": [], "n": 0, "sent": None}

            def on_sent(payload) -> None:
                back = BackMsg()
                back.ParseFromString(payload.encode() if isinstance(payload, str) else payload)
                if back.WhichOneof("type") == "rerun_script" and st["sent"] is None:
                    st["sent"] = time.monotonic()

            def on_recv(payload) -> None:
                msg = ForwardMsg()
                msg.ParseFromString(payload.encode() if isinstance(payload, str) else payload)
                st["n"] += 1
                kind = msg.WhichOneof("type")
                if kind == "delta" and msg.delta.new_element.WhichOneof("type") == "exception":
                    st["errors"].append(msg.delta.new_element.exception.message[:200])
                if kind == "script_finished" and msg.script_finished in (
                        ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR):
                    st["done"].set()

            def on_ws(ws) -> None:
                ws.on("framesent", on_sent)
                ws.on("framereceived", on_recv)

            page.on("websocket", on_ws)

            async def step(rec: list[Sample], action: str, path: str, start) -> None:
                st["done"].clear()
                st["errors"].clear()
                st["n"], st["sent"] = 0, None
                t0 = time.monotonic()
                try:
                    await start()
                    await asyncio.wait_for(st["done"].wait(), REQUEST_TIMEOUT)
                    t1 = time.monotonic()
                    err = "; ".join(st["errors"]) or None
                    rec.append(Sample(i, action, page_name(path), t0, (t1 - t0) * 1000, err is None,
                                      err, st["n"], run_ms=(t1 - (st["sent"] or t0)) * 1000))
                except Exception as e:
                    rec.append(Sample(i, action, page_name(path), t0, (time.monotonic() - t0) * 1000,
                                      False, f"{type(e).__name__}: {e}"[:300]))

            try:
                warm: list[Sample] = []
                for r in range(rounds + 1):  # round 0 warms the server's caches, not timed
                    rec = samples if r else warm
                    await step(rec, "open", "", lambda: page.goto(f"{base}/?{query}"))
                    for path in paths:
                        link = page.locator(f'[data-testid="stSidebar"] a[href$="/{path}"]').first
                        await step(rec, "switch", path, link.click)
                samples.extend(x for x in warm if not x.ok)  # its failures still count
            finally:
                await ctx.close()

        try:
            await asyncio.gather(*(one(i) for i in range(k)))
        finally:
            await browser.close()
    return samples


async def protocol_tabs(base: str, k: int, query: str, paths: list[str], rounds: int) -> list[Sample]:
    """The same walk as ``browser_tabs`` by K protocol sessions."""
    samples: list[Sample] = []

    async def one(i: int) -> None:
        s = ProtocolSession(base, k + i)
        try:
            warm: list[Sample] = []
            for r in range(rounds + 1):  # round 0 warms the server's caches, not timed
                rec = samples if r else warm
                if await timed(rec, i, "open", "", s.open("", query), s):
                    for path in paths:
                        await timed(rec, i, "switch", path, s.switch_page(path), s)
            samples.extend(x for x in warm if not x.ok)  # its failures still count
        finally:
            await s.close()

    await asyncio.gather(*(one(i) for i in range(k)))
    return samples


async def crosscheck(base: str, k: int, links: Links, rounds: int = 2) -> dict[str, list[Sample]]:
    """Browser tabs and protocol sessions at the same time, so both see the same server state."""
    query, paths = crosscheck_links(links)
    b, p = await asyncio.gather(browser_tabs(base, k, query, paths, rounds),
                                protocol_tabs(base, k, query, paths, rounds))
    return {"browser": b, "protocol": p}


# --------------------------------------------------------------------------------------------
# report


@dataclass
class Phase:
    """One load phase: N sessions with one think time, on the already running server."""

    sessions: int
    seconds: float
    think: float
    samples: list[Sample]
    wall: float
    mem: list[tuple[float, int, float]]  # (monotonic s, tree VmRSS KiB, server CPU s)
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    server_cpu: float
    client_cpu: float

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def cpu_windows(self) -> list[float]:
        """Server CPU use (cores) in each sampling interval."""
        pairs = zip(self.mem, self.mem[1:], strict=False)
        return [(c1 - c0) / (t1 - t0) for (t0, _, c0), (t1, _, c1) in pairs if t1 > t0]


@dataclass
class LoadRun:
    phases: list[Phase]
    db: str
    app: str
    started: str
    hwm_kib: int
    server_tracebacks: int
    links: Links
    cross: dict[str, list[Sample]] = field(default_factory=dict)

    @property
    def failures(self) -> list[Sample]:
        return [s for ph in self.phases for s in ph.failures]


def stats(samples: list[Sample]) -> dict:
    ms = [s.ms for s in samples if s.ok]
    out = {"n": len(samples), "failed": sum(1 for s in samples if not s.ok)}
    if ms:
        out.update(p50=percentile(ms, 50), p95=percentile(ms, 95), max=max(ms))
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def table(rows: list[tuple[str, list[Sample]]], head: str) -> list[str]:
    lines = [f"| {head} | requests | failed | p50 ms | p95 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, ss in rows:
        st = stats(ss)
        lines.append(f"| {name} | {st['n']} | {st['failed']} | {_fmt(st.get('p50'))} | "
                     f"{_fmt(st.get('p95'))} | {_fmt(st.get('max'))} |")
    return lines


def phase_report(ph: Phase) -> list[str]:
    by_page: dict[str, list[Sample]] = defaultdict(list)
    by_action: dict[str, list[Sample]] = defaultdict(list)
    for s in ph.samples:
        by_page[s.page].append(s)
        by_action[s.action].append(s)
    mem_mib = [kib / 1024 for _, kib, _ in ph.mem]
    cpu = ph.cpu_windows()
    done = len(ph.ok)
    la = "/".join(f"{x:.2f}" for x in ph.load_before), "/".join(f"{x:.2f}" for x in ph.load_after)
    out = [
        f"### {ph.sessions} sessions, think time {ph.think:g} s",
        "",
        f"{ph.wall:.1f} s (requests started before the deadline run to the end): "
        f"{len(ph.samples)} requests, **{len(ph.failures)} failed**, throughput "
        f"**{done / ph.wall:.2f} completed page runs/s**. Server CPU {ph.server_cpu:.1f} s = "
        f"{ph.server_cpu / ph.wall:.2f} cores on average"
        + (f", {percentile(cpu, 95):.2f} p95 / {max(cpu):.2f} max over the 0.5 s windows" if cpu else "")
        + (f", **{ph.server_cpu / done:.3f} CPU s per page run**" if done else "")
        + f"; load-test client {ph.client_cpu:.1f} s CPU. Load average (1/5/15 min) before {la[0]}, "
        f"after {la[1]}.",
        "",
        f"Server memory (VmRSS of the Streamlit process and its children, every 0.5 s): start "
        f"{mem_mib[0]:,.0f} MiB, peak {max(mem_mib):,.0f} MiB, end {mem_mib[-1]:,.0f} MiB.",
        "",
    ]
    if done:
        mean_ms = sum(x.ms for x in ph.ok) / done
        predicted = (ph.sessions / (done / ph.wall) - ph.think) * 1000
        out += [f"Queueing check (Little's law, closed loop): sessions / throughput - think time = "
                f"{predicted:,.0f} ms predicted mean page time, {mean_ms:,.0f} ms measured. One core's "
                f"ceiling at this CPU cost: 1 / {ph.server_cpu / done:.3f} s = "
                f"{done / ph.server_cpu:.1f} page runs/s (measured {done / ph.wall:.2f}).", ""]
    out += table([(a, by_action[a]) for a in ("open", "filter", "switch") if a in by_action], "action")
    out.append("")
    opens = [x for x in by_action.get("open", []) if x.ok and x.run_ms is not None]
    if opens:
        pre = [x.ms - x.run_ms for x in opens]
        runs = [x.run_ms for x in opens]
        out += [f"An open splits into HTTP GETs + websocket handshake (p50 {percentile(pre, 50):,.0f} ms, "
                f"p95 {percentile(pre, 95):,.0f} ms) and the first script run of the new session "
                f"(p50 {percentile(runs, 50):,.0f} ms, p95 {percentile(runs, 95):,.0f} ms).", ""]
    out += table([(f"{n} (`/{p}`)", by_page[n]) for n, p in PAGES.items() if n in by_page], "page")
    out.append("")
    if ph.samples:
        t0 = min(s.start for s in ph.samples)
        halves = ([s.ms for s in ph.ok if s.start - t0 < ph.wall / 2],
                  [s.ms for s in ph.ok if s.start - t0 >= ph.wall / 2])
        if all(halves):
            out.append("p50 / p95 of requests started in the first half "
                       f"{percentile(halves[0], 50):,.0f} / {percentile(halves[0], 95):,.0f} ms, "
                       f"second half {percentile(halves[1], 50):,.0f} / "
                       f"{percentile(halves[1], 95):,.0f} ms.")
            out.append("")
    if ph.failures:
        counts = Counter(s.error for s in ph.failures)
        out.append("Failures (most common first):")
        out += [f"- {n} x {err}" for err, n in counts.most_common(8)]
        out.append("")
    return out


def cross_report(cross: dict[str, list[Sample]]) -> list[str]:
    b, p = cross.get("browser", []), cross.get("protocol", [])
    k = len({s.session for s in b})
    out = [
        "### Cross-check with real Chromium",
        "",
        f"{k} headless Chromium tabs (Playwright, /usr/bin/chromium) and {k} protocol sessions at the "
        "same time, each opening the home link then clicking through every page: one warm-up round "
        "(not recorded, so neither side gains from the other filling the server's caches), then two "
        "recorded rounds. *user* = "
        "navigation start / click -> `script_finished` received (a browser open also loads and starts "
        "the JS app); *run* = `rerun_script` sent -> `script_finished` received (the server's part; "
        "for filter changes and page switches the load test's page time is this).",
        "",
        "| request | browser user p50 ms | browser run p50 ms | protocol run p50 ms "
        "| browser run / protocol run |",
        "|---|---:|---:|---:|---:|",
    ]
    ratios = []
    for action, name in [("open", "home")] + [("switch", n) for n in PAGES if n != "home"]:
        bb = [s for s in b if s.action == action and s.page == name and s.ok]
        pp = [s.run_ms for s in p if s.action == action and s.page == name and s.ok]
        if bb and pp:
            brun = percentile([s.run_ms for s in bb], 50)
            ratio = brun / percentile(pp, 50)
            ratios.append(ratio)
            out.append(f"| {action} {name} | {percentile([s.ms for s in bb], 50):,.0f} | {brun:,.0f} "
                       f"| {percentile(pp, 50):,.0f} | {ratio:.2f} |")
    out.append("")
    if ratios:
        out.append(f"Median over requests of browser run / protocol run: {percentile(ratios, 50):.2f}; "
                   f"failures: browser {sum(not s.ok for s in b)}, protocol {sum(not s.ok for s in p)}.")
        out.append("")
    return out


def report(r: LoadRun, command: str = "") -> str:
    out = [
        f"Written by `{command or 'PYTHONPATH=. .venv/bin/python bench/load_test.py'}` on {r.started}. "
        f"App: {r.app}, one `streamlit run app.py` on a loopback port. Database: {r.db}. "
        f"Server VmHWM over its whole life {r.hwm_kib / 1024:,.0f} MiB; tracebacks in the server log: "
        f"{r.server_tracebacks}.",
        "",
    ]
    for ph in r.phases:
        out += phase_report(ph)
    if r.cross:
        out += cross_report(r.cross)
    return "\n".join(out)


def write_section(body: str, path: Path = PERF_DOC) -> None:
    """Replace the section SECTION (or append it at the end); other sections stay byte-identical."""
    text = path.read_text() if path.exists() else "# Performance\n"
    block = f"{SECTION}\n\n{body.rstrip()}\n"
    m = re.search(rf"^{re.escape(SECTION)}[ \t]*\n", text, flags=re.M)
    if m:
        nxt = re.search(r"^## ", text[m.end():], flags=re.M)
        end = m.end() + nxt.start() if nxt else len(text)
        tail = text[end:]
        new = text[:m.start()] + block + ("\n" + tail if tail else "")
    else:
        new = text.rstrip("\n") + "\n\n" + block
    path.write_text(new)


# --------------------------------------------------------------------------------------------
# entry point


def run_phase(server: Server, links: Links, sessions: int, seconds: float, think: float,
              seed: int) -> Phase:
    load_before = os.getloadavg()
    sampler = MemorySampler(server.pid)
    sampler.start()
    ccpu0 = time.process_time()
    samples, wall = asyncio.run(run_load(server.base, links, sessions, seconds, think, seed))
    client_cpu = time.process_time() - ccpu0
    sampler.stop()
    server_cpu = sampler.samples[-1][2] - sampler.samples[0][2]
    return Phase(sessions, seconds, think, samples, wall, sampler.samples, load_before,
                 os.getloadavg(), server_cpu, client_cpu)


def run(sessions: int = 20, seconds: float = 60, thinks: tuple[float, ...] = (1.0,),
        database_url: str | None = None, app_ref: str | None = None, browser_pages: int = 3,
        seed: int = 7, small_demo: bool = False) -> LoadRun:
    workdir = Path(tempfile.mkdtemp(prefix="loadtest-"))
    try:
        if database_url is None:
            t = time.monotonic()
            database_url = make_demo(workdir, small=small_demo)
            db_label = (f"fresh {'small' if small_demo else 'default-size'} demo in a temporary SQLite "
                        f"file (made in {time.monotonic() - t:.0f} s)")
        else:
            db_label = "`" + re.sub(r"//[^@/]*@", "//", database_url) + "` (existing)"
        app_dir = snapshot_app(app_ref, workdir) if app_ref else ROOT
        app_label = f"`git archive {app_ref}` snapshot" if app_ref else "the working tree"
        if app_ref:
            rev = subprocess.run(["git", "rev-parse", "--short", app_ref], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip()
            app_label += f" ({rev})"
        server = Server(database_url, app_dir, workdir)
        server.start()
        try:
            started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            links = asyncio.run(discover(server.base))
            phases = [run_phase(server, links, sessions, seconds, think, seed) for think in thinks]
            hwm = tree_hwm_kib(server.pid)
            cross = asyncio.run(crosscheck(server.base, browser_pages, links)) if browser_pages else {}
            return LoadRun(phases, db_label, app_label, started, hwm, server.tracebacks(), links, cross)
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _thinks(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of seconds") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} has a negative think time")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60, help="length of each phase")
    ap.add_argument("--think", type=_thinks, default=(5.0, 1.0),
                    help="mean think time before each action, s; a comma list runs one phase each")
    ap.add_argument("--database-url", help="reuse this database instead of a fresh SQLite demo")
    ap.add_argument("--app-ref", help="run the app from `git archive REF` instead of the working tree")
    ap.add_argument("--browser-pages", type=int, default=3, help="Chromium cross-check tabs (0: skip)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--analysis", help="file whose text is appended to the written section")
    ap.add_argument("--write", action="store_true", help=f"write '{SECTION}' in docs/performance.md")
    a = ap.parse_args(argv)
    for name in ("sessions", "seconds"):
        if getattr(a, name) <= 0:
            ap.error(f"--{name} must be > 0, got {getattr(a, name)}")
    if a.browser_pages < 0:
        ap.error(f"--browser-pages must be >= 0, got {a.browser_pages}")
    r = run(a.sessions, a.seconds, a.think, a.database_url, a.app_ref, a.browser_pages, a.seed)
    command = ("PYTHONPATH=. .venv/bin/python bench/load_test.py "
               + " ".join(x for x in (argv if argv is not None else sys.argv[1:])
                          if x != "--write" and not x.endswith(".md")))
    command = re.sub(r" --analysis\s*$", "", command)
    body = report(r, command)
    if a.analysis:
        body += "\n" + Path(a.analysis).read_text()
    print(body)
    if a.write:
        write_section(body)
        print(f"wrote '{SECTION}' in {PERF_DOC}")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
