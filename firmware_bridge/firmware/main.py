"""Boot entry of the Pico: MicroPython runs main.py after boot.py.

Copy framing.py, hw.py, app.py and this file to the board's root (docs/firmware.md).
"""

import app
import hw


def main():
    app.App(hw.Hardware()).run()


main()
