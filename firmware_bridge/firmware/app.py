"""The front-end firmware's logic: loops, buttons, Wiegand, tags, outputs and the link.

Runs unchanged under MicroPython on a Raspberry Pi Pico (``main.py`` hands it
``hw.Hardware()``) and under CPython, where the simulator and the tests hand it
``firmware_bridge.simhw.SimHardware``. It imports only the framing module; all
hardware access goes through the ``hw`` object (see ``hw.py`` for its methods).
No typing imports, dataclasses, enums or f-strings: MicroPython has none of them.
"""

try:
    from firmware_bridge.firmware import framing
except ImportError:  # on the Pico the modules sit side by side
    import framing  # type: ignore[import-not-found, no-redef]

FW_VERSION = "gridpatrol-pico/1.0.0"

HB_MS = 1000
IDLE_MS = 2  # sleep between passes of the main loop
ZONE_SAMPLE_MS = 10
ZONE_DEBOUNCE_MS = 50  # a loop state must hold this long before it is reported
BUTTON_DEBOUNCE_MS = 20
WIEGAND_GAP_MS = 25  # a Wiegand frame ends after this much silence on D0/D1
WIEGAND_MIN_BITS = 4  # shorter bursts are glitches on the wires, not frames
WIEGAND_MAX_BITS = 64
TAG_POLL_MS = 100
TAG_REPEAT_MS = 500  # a card left on a reader is reported again this often

# Supervised loop with double end-of-line resistors: a 4.7 kOhm pull-up to
# 3.3 V feeds the ADC pin; in the field, 4.7 kOhm in series with the loop and
# 4.7 kOhm across the detector's normally closed contact. The pin then sits at
# R / (4.7k + R) of full scale: short 0 -> 0, normal 4.7k -> 0.50,
# alarm 9.4k -> 0.67, cut -> 1.0. The bands split halfway between those points
# (read_u16 scale, 0..65535), which leaves room for 5 % resistors and ADC noise.
SHORT_BELOW = 16384  # < 0.25 of full scale
NORMAL_BELOW = 38229  # < 0.583
ALARM_BELOW = 54613  # < 0.833; at or above: cut


def classify(u16):
    """An ADC reading of a supervised loop -> its state."""
    if u16 < SHORT_BELOW:
        return framing.TAMPER_SHORT
    if u16 < NORMAL_BELOW:
        return framing.NORMAL
    if u16 < ALARM_BELOW:
        return framing.ALARM
    return framing.TAMPER_CUT


class Debouncer:
    """A reading must hold ``hold_ms`` before it becomes the ``value``."""

    def __init__(self, hold_ms):
        self.hold_ms = hold_ms
        self.value = None  # None until the first reading has held
        self._candidate = None
        self._since = 0

    def update(self, reading, now_ms):
        """Return True when ``value`` changed."""
        if reading != self._candidate:
            self._candidate = reading
            self._since = now_ms
            return False
        if reading != self.value and framing.ticks_diff(now_ms, self._since) >= self.hold_ms:
            self.value = reading
            return True
        return False


class WiegandCapture:
    """Bits from a reader's D0/D1 interrupts -> whole frames after a silence.

    ``bit`` runs inside a hard interrupt on the Pico, so it allocates nothing:
    bits go into a preallocated buffer.
    """

    def __init__(self):
        self.buf = bytearray(WIEGAND_MAX_BITS)
        self.count = 0
        self.overflow = False
        self.last_ms = 0

    def bit(self, value, now_ms):
        if self.count < WIEGAND_MAX_BITS:
            self.buf[self.count] = value
            self.count += 1
        else:
            self.overflow = True
        self.last_ms = now_ms

    def take(self, now_ms):
        """(bits, data) of a finished frame, first bit most significant; else None.

        Returns ``(0, 0)`` for a burst that was too short or too long: the
        caller counts it.
        """
        if self.count == 0 or framing.ticks_diff(now_ms, self.last_ms) < WIEGAND_GAP_MS:
            return None
        count = self.count
        overflow = self.overflow
        data = 0
        for i in range(count):
            data = (data << 1) | self.buf[i]
        self.count = 0
        self.overflow = False
        if overflow or count < WIEGAND_MIN_BITS:
            return (0, 0)
        return (count, data)


class App:
    """The firmware: call ``step()`` over and over (``run()`` does, on the Pico)."""

    def __init__(self, hw, fw=FW_VERSION):
        self.hw = hw
        self.fw = fw
        # Never give a frame up: a card or a press has no other copy, and the Pi acks every frame it reads.
        self.link = framing.Endpoint(max_resends=None)
        self.stats = {"wiegand_dropped": 0, "bad_out": 0, "unknown_type": 0, "syncs": 0}
        self.zones = [Debouncer(ZONE_DEBOUNCE_MS) for _ in range(hw.zone_count)]
        self.buttons = [Debouncer(BUTTON_DEBOUNCE_MS) for _ in range(hw.button_count)]
        self.captures = []
        for index in range(hw.wiegand_count):
            capture = WiegandCapture()
            hw.attach_wiegand(index, capture.bit)
            self.captures.append(capture)
        self.tags = [None] * hw.tag_count  # uid on each reader, None when none
        self.tag_sent = [0] * hw.tag_count
        self.out_on = [False] * hw.output_count
        self.out_started = [0] * hw.output_count
        self.out_ms = [0] * hw.output_count  # 0: until told
        for index in range(hw.output_count):
            hw.set_output(index, False)
        now = hw.ticks_ms()
        self.uptime_ms = 0
        self._last_ms = now
        self._hb_at = now
        self._sample_at = now
        self._tag_at = now
        self.send_hello()  # unprompted, on every boot

    def caps(self):
        caps = []
        for kind, count in (
            ("zone", self.hw.zone_count),
            ("button", self.hw.button_count),
            ("wiegand", self.hw.wiegand_count),
            ("tag", self.hw.tag_count),
            ("out", self.hw.output_count),
        ):
            if count:
                caps.append("%s:%d" % (kind, count))
        return caps

    def send_hello(self):
        self.link.send(framing.hello_body(self.fw, self.caps()))

    def run(self):
        while True:
            self.step()
            self.hw.idle(IDLE_MS)

    def step(self):
        hw = self.hw
        now = hw.ticks_ms()
        self.uptime_ms += framing.ticks_diff(now, self._last_ms)
        self._last_ms = now
        data = hw.uart_read()
        if data:
            for body in self.link.receive(data, now):
                self.handle(body, now)
        if framing.ticks_diff(now, self._sample_at) >= ZONE_SAMPLE_MS:
            self._sample_at = now
            self._sample(now)
        self._wiegand(now)
        if framing.ticks_diff(now, self._tag_at) >= TAG_POLL_MS:
            self._tag_at = now
            self._tags(now)
        self._outputs(now)
        if framing.ticks_diff(now, self._hb_at) >= HB_MS:
            self._hb_at = now
            self.link.send({"t": framing.HB, "uptime_ms": self.uptime_ms}, True)
        self.link.poll(now)
        out = self.link.take_output()
        if out:
            hw.uart_write(out)
        hw.feed()

    def handle(self, body, now):
        kind = body["t"]
        if kind == framing.HELLO:
            self.send_hello()
        elif kind == framing.SYNC:
            self.stats["syncs"] += 1
            for index in range(len(self.zones)):
                self._report_zone(index)
            for index in range(len(self.buttons)):
                self._report_button(index)
        elif kind == framing.OUT:
            self._out(body, now)
        else:
            self.stats["unknown_type"] += 1

    def _out(self, body, now):
        index = body.get("output")
        on = body.get("on")
        ms = body.get("ms", 0)
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < len(self.out_on)
            or not isinstance(on, bool)
            or isinstance(ms, bool)
            or not isinstance(ms, int)
            or ms < 0
        ):
            self.stats["bad_out"] += 1
            return
        self.out_on[index] = on
        self.out_started[index] = now
        self.out_ms[index] = ms if on else 0
        self.hw.set_output(index, on)

    def _outputs(self, now):
        # The Pi switches off on time too; this timer covers a Pi that died.
        for index in range(len(self.out_on)):
            if self.out_on[index] and self.out_ms[index] and framing.ticks_diff(now, self.out_started[index]) >= self.out_ms[index]:
                self.out_on[index] = False
                self.hw.set_output(index, False)

    def _sample(self, now):
        for index in range(len(self.zones)):
            if self.zones[index].update(classify(self.hw.read_zone_adc(index)), now):
                self._report_zone(index)
        for index in range(len(self.buttons)):
            pressed = framing.PRESSED if self.hw.read_button(index) else framing.RELEASED
            if self.buttons[index].update(pressed, now):
                self._report_button(index)

    def _report_zone(self, index):
        state = self.zones[index].value
        if state is not None:
            self.link.send({"t": framing.ZONE, "input": index, "state": state})

    def _report_button(self, index):
        state = self.buttons[index].value
        if state is not None:
            self.link.send({"t": framing.BUTTON, "input": index, "state": state})

    def _wiegand(self, now):
        for index in range(len(self.captures)):
            frame = self.captures[index].take(now)
            if frame is None:
                continue
            if frame[0] == 0:
                self.stats["wiegand_dropped"] += 1
                continue
            self.link.send({"t": framing.WIEGAND, "input": index, "bits": frame[0], "data": frame[1]})

    def _tags(self, now):
        for index in range(len(self.tags)):
            uid = self.hw.read_tag(index)
            if uid is None:
                self.tags[index] = None
                continue
            if uid != self.tags[index] or framing.ticks_diff(now, self.tag_sent[index]) >= TAG_REPEAT_MS:
                self.tags[index] = uid
                self.tag_sent[index] = now
                self.link.send({"t": framing.TAG, "input": index, "uid": bytes(uid)})
