"""Inputs of the edge agent: GPIO zones and buttons, the input loop, readers.

Kept empty on purpose: importing ``agent.inputs.logic`` (pure) must not pull in
gpiozero or pyserial.
"""
