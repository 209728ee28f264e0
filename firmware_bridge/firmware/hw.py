"""The Raspberry Pi Pico's hardware, as the firmware's logic (app.py) sees it.

MicroPython only (``machine``). The CPython stand-in with the same methods is
``firmware_bridge.simhw.SimHardware``; a test checks that the two agree.
Wiring (docs/firmware.md has the whole picture):

- UART0 to the Pi: GP0 = TX (to the Pi's RX), GP1 = RX (from the Pi's TX), GND; 3.3 V levels.
- Supervised loops on the three ADC pins GP26, GP27, GP28, each with a 4.7 kOhm
  pull-up to 3V3 and the loop (4.7 kOhm series + 4.7 kOhm across the contact) to AGND.
- Buttons on GP2, GP3 to GND (internal pull-ups): low while pressed.
- Wiegand readers: reader 0 D0 = GP4, D1 = GP5; reader 1 D0 = GP6, D1 = GP7
  (5 V readers through a level shifter or a 1 kOhm / 2 kOhm divider).
- Outputs on GP14, GP15 (high = on) to the siren and strobe drivers (a MOSFET or a relay module).
"""

import time

import machine

UART_ID = 0
UART_TX_PIN = 0
UART_RX_PIN = 1
BAUDRATE = 115200
ZONE_ADC_PINS = (26, 27, 28)
ADC_SAMPLES = 4  # readings averaged per sample: the Pico's ADC is noisy
BUTTON_PINS = (2, 3)
WIEGAND_PINS = ((4, 5), (6, 7))  # (D0, D1) per reader
OUTPUT_PINS = (14, 15)
WATCHDOG_MS = 2000  # the Pico resets itself when the main loop stalls this long


class Hardware:
    zone_count = len(ZONE_ADC_PINS)
    button_count = len(BUTTON_PINS)
    wiegand_count = len(WIEGAND_PINS)
    tag_count = 0  # no card reader on the SPI bus in the reference build
    output_count = len(OUTPUT_PINS)

    def __init__(self):
        Pin = machine.Pin
        # Outputs first, low: a siren must not sound while the rest starts.
        self._outputs = [Pin(p, Pin.OUT, value=0) for p in OUTPUT_PINS]
        self._uart = machine.UART(
            UART_ID, baudrate=BAUDRATE, bits=8, parity=None, stop=1,
            tx=Pin(UART_TX_PIN), rx=Pin(UART_RX_PIN), rxbuf=1024,
        )
        self._adcs = [machine.ADC(Pin(p)) for p in ZONE_ADC_PINS]
        self._buttons = [Pin(p, Pin.IN, Pin.PULL_UP) for p in BUTTON_PINS]
        self._wiegand = [(Pin(d0, Pin.IN, Pin.PULL_UP), Pin(d1, Pin.IN, Pin.PULL_UP)) for d0, d1 in WIEGAND_PINS]
        self._wdt = machine.WDT(timeout=WATCHDOG_MS)

    def ticks_ms(self):
        return time.ticks_ms()

    def uart_read(self):
        if self._uart.any():
            return self._uart.read()
        return None

    def uart_write(self, data):
        self._uart.write(data)

    def read_zone_adc(self, index):
        adc = self._adcs[index]
        total = 0
        for _ in range(ADC_SAMPLES):
            total += adc.read_u16()
        return total // ADC_SAMPLES

    def read_button(self, index):
        return self._buttons[index].value() == 0

    def attach_wiegand(self, index, callback):
        # Hard interrupts: Wiegand pulses are 50 to 100 us apart from the next
        # by about 2 ms; a soft interrupt may come too late. The callback
        # allocates nothing (see WiegandCapture.bit).
        d0, d1 = self._wiegand[index]
        ticks = time.ticks_ms

        def zero(pin):
            callback(0, ticks())

        def one(pin):
            callback(1, ticks())

        d0.irq(trigger=machine.Pin.IRQ_FALLING, handler=zero, hard=True)
        d1.irq(trigger=machine.Pin.IRQ_FALLING, handler=one, hard=True)

    def read_tag(self, index):
        return None

    def set_output(self, index, on):
        self._outputs[index].value(1 if on else 0)

    def feed(self):
        self._wdt.feed()

    def idle(self, ms):
        time.sleep_ms(ms)
