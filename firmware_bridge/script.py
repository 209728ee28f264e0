"""Scripts for the simulated microcontroller (``gridpatrol mcu-sim --script FILE``).

One command per line; ``#`` starts a comment. Times are seconds::

    link /tmp/front-end          # optional, before any step: a symlink to the pty that follows replugs
    at 1.5 zone 1 alarm          # at 1.5 s from the start: loop 1 in alarm
    after 2 zone 1 normal        # 2 s after the line before
    at 5 zone 0 tamper-cut       # normal | alarm | tamper-short | tamper-cut
    at 6 adc 2 30000             # a raw ADC reading (read_u16 scale) on loop 2
    at 7 button 0 press          # press | release | hold SECONDS
    at 8 button 1 hold 2
    at 9 tap 0 04A1B2C3 0.5      # card uid (hex) on tag reader 0, lying there 0.5 s (default 0.3)
    at 10 wiegand 1 26 123 45678 # 26- or 34-bit card: facility, card number (parity made right)
    at 11 wiegand-raw 1 26 0x2F7B26E  # raw bits as given (bad parity on purpose, odd lengths)
    at 12 dropout 4              # no byte through either way for 4 s
    at 17 unplug 2               # close the pty; a new one 2 s later
    at 20 reboot                 # the firmware restarts (outputs off, a fresh hello)
    at 21 noise 16               # 16 random bytes to the Pi; or: noise hex 00FF12
    at 22 drop tx 1 zone         # lose the next zone frame to the Pi (rx: from the Pi)
    repeat                       # last line: start again from the top, for ever

A mistake raises :class:`ScriptError` naming the file and the line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_bridge.firmware import framing
from firmware_bridge.firmware.framing import BridgeError
from firmware_bridge.sim import TAP_S, McuSim, wiegand_frame


class ScriptError(BridgeError, ValueError):
    """A simulator script is wrong; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    command: str
    args: tuple[Any, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Script:
    steps: tuple[Step, ...]
    repeat: bool = False
    link: str | None = None
    source: str = "<script>"

    @property
    def length_s(self) -> float:
        return max((s.at_s for s in self.steps), default=0.0)


def load_script(path: str | Path) -> Script:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"{path}: cannot read: {exc}") from None
    return parse_script(text, source=str(path))


def parse_script(text: str, *, source: str = "<script>") -> Script:
    steps: list[Step] = []
    repeat = False
    link: str | None = None
    clock = 0.0
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue

        def fail(problem: str, number: int = number) -> ScriptError:
            return ScriptError(f"{source}:{number}: {problem}")

        if repeat:
            raise fail("nothing may follow 'repeat'")
        head = words[0]
        if head == "repeat" and len(words) == 1:
            repeat = True
            continue
        if head == "link":
            if steps or link is not None or len(words) != 2:
                raise fail("'link PATH' comes once, before the first step")
            link = words[1]
            continue
        if head not in ("at", "after") or len(words) < 3:
            raise fail(f"expected 'at SECONDS COMMAND ...', 'after SECONDS COMMAND ...', 'link PATH' or 'repeat', not {raw.strip()!r}")
        offset = _seconds(words[1], fail, allow_zero=True)
        clock = offset if head == "at" else clock + offset
        if head == "at" and steps and clock < steps[-1].at_s:
            raise fail(f"at {offset:g} s is before the line before ({steps[-1].at_s:g} s)")
        command, args = words[2], words[3:]
        steps.append(Step(clock, command, _parse_args(command, args, fail), number))
    if repeat and (not steps or steps[-1].at_s <= 0):
        raise ScriptError(f"{source}: 'repeat' needs a script that lasts longer than 0 s")
    return Script(tuple(steps), repeat, link, source)


def _seconds(word: str, fail: Any, *, allow_zero: bool = False) -> float:
    try:
        value = float(word)
    except ValueError:
        raise fail(f"{word!r} is not a number of seconds") from None
    if not value == value or value < 0 or (value == 0 and not allow_zero) or value == float("inf"):
        raise fail(f"{word!r} is not a usable number of seconds")
    return value


def _int(word: str, fail: Any, what: str) -> int:
    try:
        value = int(word, 0)
    except ValueError:
        raise fail(f"{what} {word!r} is not an integer") from None
    if value < 0:
        raise fail(f"{what} {word!r} must not be negative")
    return value


def _parse_args(command: str, args: list[str], fail: Any) -> tuple[Any, ...]:
    def need(count: int, form: str) -> None:
        if len(args) != count:
            raise fail(f"'{command}' takes {form}")

    if command == "zone":
        need(2, "INPUT STATE")
        if args[1] not in framing.ZONE_STATES:
            raise fail(f"zone state {args[1]!r} is not one of {', '.join(framing.ZONE_STATES)}")
        return (_int(args[0], fail, "input"), args[1])
    if command == "adc":
        need(2, "INPUT VALUE")
        value = _int(args[1], fail, "value")
        if value > 65535:
            raise fail(f"ADC value {value} is above 65535")
        return (_int(args[0], fail, "input"), value)
    if command == "button":
        if len(args) == 2 and args[1] in ("press", "release"):
            return (_int(args[0], fail, "input"), args[1], 0.0)
        if len(args) == 3 and args[1] == "hold":
            return (_int(args[0], fail, "input"), "hold", _seconds(args[2], fail))
        raise fail("'button' takes INPUT press|release, or INPUT hold SECONDS")
    if command == "tap":
        if len(args) not in (2, 3):
            raise fail("'tap' takes INPUT UID [SECONDS]")
        try:
            uid = bytes.fromhex(args[1])
        except ValueError:
            raise fail(f"uid {args[1]!r} is not hex bytes") from None
        if not 1 <= len(uid) <= 10:
            raise fail(f"uid {args[1]!r} must be 1 to 10 bytes")
        return (_int(args[0], fail, "input"), uid, _seconds(args[2], fail) if len(args) == 3 else TAP_S)
    if command == "wiegand":
        need(4, "INPUT BITS FACILITY CARD")
        try:
            data = wiegand_frame(_int(args[1], fail, "bits"), _int(args[2], fail, "facility"), _int(args[3], fail, "card"))
        except ValueError as exc:
            raise fail(str(exc)) from None
        return (_int(args[0], fail, "input"), int(args[1], 0), data)
    if command == "wiegand-raw":
        need(3, "INPUT BITS DATA")
        bits = _int(args[1], fail, "bits")
        data = _int(args[2], fail, "data")
        if not 1 <= bits <= 64 or data >= 1 << bits:
            raise fail(f"{bits} bits cannot carry {args[2]}")
        return (_int(args[0], fail, "input"), bits, data)
    if command in ("dropout", "unplug"):
        need(1, "SECONDS")
        return (_seconds(args[0], fail),)
    if command == "reboot":
        need(0, "nothing")
        return ()
    if command == "noise":
        if len(args) == 1:
            count = _int(args[0], fail, "count")
            if not 1 <= count <= 4096:
                raise fail("noise takes 1 to 4096 bytes")
            return (count,)
        if len(args) == 2 and args[0] == "hex":
            try:
                return (bytes.fromhex(args[1]),)
            except ValueError:
                raise fail(f"{args[1]!r} is not hex bytes") from None
        raise fail("'noise' takes COUNT, or hex HEX")
    if command == "drop":
        if len(args) not in (2, 3) or args[0] not in ("rx", "tx"):
            raise fail("'drop' takes rx|tx COUNT [TYPE]")
        return (args[0], _int(args[1], fail, "count"), args[2] if len(args) == 3 else None)
    raise fail(f"unknown command {command!r}")


def check_script(script: Script, sim: McuSim) -> None:
    """Raise ScriptError if a step names an input the simulator does not have."""
    counts = {
        "zone": ("zone", sim.hw.zone_count),
        "adc": ("zone", sim.hw.zone_count),
        "button": ("button", sim.hw.button_count),
        "tap": ("tag reader", sim.hw.tag_count),
        "wiegand": ("wiegand reader", sim.hw.wiegand_count),
        "wiegand-raw": ("wiegand reader", sim.hw.wiegand_count),
    }
    for step in script.steps:
        if step.command in counts:
            what, count = counts[step.command]
            if not 0 <= step.args[0] < count:
                raise ScriptError(f"{script.source}:{step.line}: {what} {step.args[0]} does not exist (the simulator has {count})")


def run_step(sim: McuSim, step: Step) -> None:
    """Carry out one step on the simulator."""
    a = step.args
    match step.command:
        case "zone":
            sim.set_zone(a[0], a[1])
        case "adc":
            sim.set_adc(a[0], a[1])
        case "button":
            if a[1] == "press":
                sim.press(a[0])
            elif a[1] == "release":
                sim.release(a[0])
            else:
                sim.hold(a[0], a[2])
        case "tap":
            sim.tap(a[0], a[1], a[2])
        case "wiegand" | "wiegand-raw":
            sim.wiegand(a[0], a[1], a[2])
        case "dropout":
            sim.dropout(a[0])
        case "unplug":
            sim.unplug(a[0])
        case "reboot":
            sim.reboot()
        case "noise":
            sim.noise(a[0])
        case "drop":
            sim.drop(a[0], a[1], a[2])


def play(sim: McuSim, script: Script) -> None:
    """Schedule every step of ``script`` on the running simulator (and again, with ``repeat``)."""
    check_script(script, sim)

    def schedule() -> None:
        for step in script.steps:
            sim.after(step.at_s, functools.partial(run_step, sim, step))
        if script.repeat:
            sim.after(script.length_s, schedule)

    schedule()
