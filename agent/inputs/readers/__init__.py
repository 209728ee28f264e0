"""RFID checkpoint readers: RDM6300 and PN532 on serial ports, Wiegand through an mcu.

The frame parsers (:mod:`.rdm6300`, :mod:`.pn532`, :mod:`.wiegand`) and
:mod:`.presence` are pure: bytes or values in, values out, no port. The
threads that own a port live in :mod:`.serial_reader`.
"""
