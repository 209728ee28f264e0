"""The firmware keeps to what MicroPython has, and runs the way it would on the Pico.

No MicroPython interpreter is available to the tests (Debian ships none), so
this checks the source against the features MicroPython lacks, and runs the
framing module and the firmware's logic the way the board loads them: flat
modules, no ``binascii.crc_hqx``, and ``time.ticks_ms`` that wraps at 2**30.
"""

from __future__ import annotations

import ast
import builtins
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.firmware import framing as cpython_framing
from firmware_bridge.simhw import SimHardware

FIRMWARE = Path(cpython_framing.__file__).parent
ALLOWED_IMPORTS = {
    "framing.py": {"struct", "binascii", "time"},
    "app.py": {"framing", "firmware_bridge.firmware"},
    "hw.py": {"time", "machine"},
    "main.py": {"app", "hw"},
}
TICKS_PERIOD = 1 << 30  # MicroPython's ticks_ms() wraps here on the rp2 port


def _tree(name: str) -> ast.Module:
    return ast.parse((FIRMWARE / name).read_text(), filename=name)


@pytest.mark.parametrize("name", sorted(ALLOWED_IMPORTS))
def test_imports_only_what_the_board_has(name: str) -> None:
    imported = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= ALLOWED_IMPORTS[name], f"{name} imports {sorted(imported - ALLOWED_IMPORTS[name])}"


@pytest.mark.parametrize("name", sorted(ALLOWED_IMPORTS))
def test_no_syntax_micropython_lacks(name: str) -> None:
    problems = []
    for node in ast.walk(_tree(name)):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.JoinedStr):
            problems.append(f"{line}: f-string")
        elif isinstance(node, ast.NamedExpr):
            problems.append(f"{line}: walrus")
        elif isinstance(node, ast.Match):
            problems.append(f"{line}: match")
        elif isinstance(node, ast.Raise) and node.cause is not None:
            problems.append(f"{line}: raise ... from")
        elif isinstance(node, ast.ClassDef) and node.decorator_list:
            problems.append(f"{line}: class decorator (dataclass?)")
        elif isinstance(node, (ast.AnnAssign,)) or (isinstance(node, ast.arg) and node.annotation is not None):
            problems.append(f"{line}: annotation")
        elif isinstance(node, ast.FunctionDef) and node.returns is not None:
            problems.append(f"{line}: return annotation")
    assert problems == []


def test_hw_and_its_cpython_stand_in_have_the_same_methods() -> None:
    (cls,) = [n for n in _tree("hw.py").body if isinstance(n, ast.ClassDef) and n.name == "Hardware"]
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    counts = {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    stand_in = {name for name in vars(SimHardware) if not name.startswith("_") and callable(getattr(SimHardware, name))}
    firmware_only = {"set_zone", "pulse_wiegand"}  # the simulator's own controls
    assert methods == stand_in - firmware_only
    sim = SimHardware(_MemoryUart())
    assert all(isinstance(getattr(sim, name), int) for name in counts)


# -- loading the way the board does ------------------------------------------------


class _MicroTime(types.ModuleType):
    """``time`` as MicroPython has it: ticks that wrap, and ticks_diff for them."""

    def __init__(self, start: int) -> None:
        super().__init__("time")
        self.now = start

    def ticks_ms(self) -> int:
        return self.now % TICKS_PERIOD

    def ticks_diff(self, a: int, b: int) -> int:
        half = TICKS_PERIOD // 2
        return ((a - b + half) % TICKS_PERIOD) - half


class _MemoryUart:
    def __init__(self) -> None:
        self.inbox = bytearray()
        self.outbox = bytearray()

    def read(self) -> bytes | None:
        data, self.inbox = bytes(self.inbox), bytearray()
        return data or None

    def write(self, data: bytes) -> None:
        self.outbox += data

    def wait(self, seconds: float) -> None:
        pass


def _board(start_ms: int) -> tuple[dict[str, types.ModuleType], _MicroTime]:
    """framing.py and app.py loaded as flat modules, with MicroPython's time and no crc_hqx."""
    micro_time = _MicroTime(start_ms)
    modules: dict[str, types.ModuleType] = {"time": micro_time}
    real_import = builtins.__import__

    def board_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if name in modules:
            return modules[name]
        if name == "struct":
            return real_import(name, globals, locals, fromlist, level)
        raise ImportError(f"no module named {name!r} on the board")

    board_builtins = dict(vars(builtins), __import__=board_import)
    for name in ("framing", "app"):
        module = types.ModuleType(name)
        module.__dict__["__builtins__"] = board_builtins
        source = (FIRMWARE / f"{name}.py").read_text()
        exec(compile(source, str(FIRMWARE / f"{name}.py"), "exec"), module.__dict__)
        modules[name] = module
    return modules, micro_time


def test_framing_on_the_board_uses_its_own_crc_and_ticks() -> None:
    modules, _ = _board(0)
    framing = modules["framing"]
    assert framing._crc_hqx is None
    assert framing.crc16(b"123456789") == 0x29B1
    wire = framing.encode_frame({"t": "zone", "n": 3, "input": 1, "state": "alarm"})
    assert wire == cpython_framing.encode_frame({"t": "zone", "n": 3, "input": 1, "state": "alarm"})


def test_resend_timing_survives_the_ticks_wrapping() -> None:
    modules, _ = _board(0)
    framing = modules["framing"]
    mcu = framing.Endpoint()
    start = TICKS_PERIOD - 100  # 100 ms before ticks_ms() wraps to 0
    mcu.send({"t": "zone", "input": 0, "state": "alarm"})
    mcu.poll(start)
    mcu.take_output()
    assert mcu.poll(50) == 50  # 150 ms later, after the wrap
    assert mcu.take_output() == b""
    mcu.poll(100)  # 200 ms later
    assert cpython_framing.Deframer().feed(mcu.take_output()) == [{"t": "zone", "input": 0, "state": "alarm", "n": 0}]


def test_the_firmware_runs_as_loaded_on_the_board_across_a_ticks_wrap() -> None:
    modules, micro_time = _board(TICKS_PERIOD - 1500)
    app_module = modules["app"]
    assert app_module.framing is modules["framing"]  # the flat import, as on the Pico
    uart = _MemoryUart()
    hw = SimHardware(uart, zones=2, buttons=1, wiegand=1, tags=0, outputs=1, clock=lambda: micro_time.ticks_ms() / 1000)
    board = app_module.App(hw)
    pi = cpython_framing.Endpoint()
    got: list[dict] = []

    def run(ms: int) -> None:
        for _ in range(ms // 5):
            micro_time.now += 5
            board.step()
            got.extend(pi.receive(bytes(uart.outbox), micro_time.now))
            uart.outbox.clear()
            pi.poll(micro_time.now)
            uart.inbox += pi.take_output()

    run(300)
    pi.send({"t": "out", "output": 0, "on": True, "ms": 2000})
    hw.set_zone(1, "alarm")
    run(1000)  # ticks_ms() wraps in here
    assert hw.outputs == [True]
    run(1100)
    assert hw.outputs == [False]  # its own timer, counted across the wrap
    kinds = [(f["t"], f.get("input"), f.get("state")) for f in got if f["t"] != "hb"]
    assert kinds == [
        ("hello", None, None),
        ("button", 0, "released"),  # 20 ms of debounce, before the loops' 50 ms
        ("zone", 0, "normal"),
        ("zone", 1, "normal"),
        ("zone", 1, "alarm"),
    ]
    beats = [f["uptime_ms"] for f in got if f["t"] == "hb"]
    assert beats == [1000, 2000]
    assert sys.modules.get("framing") is None  # nothing leaked into this interpreter
