# Board wiring of one fieldproof sensor node. Edit for your board, copy with the other
# files (mpremote cp firmware/*.py :). Pins are GPIO numbers.

# Raspberry Pi Pico (RP2040): UART0 on GP0 (TX) / GP1 (RX) to the gateway's USB-serial adapter
BOARD = "rp2040"
UART_ID = 0
UART_TX = 0
UART_RX = 1
BAUDRATE = 115200

# capacitive soil moisture probes: (ADC pin, GPIO that switches the probe's supply)
# The probe is powered only while it is sampled: less corrosion, less self-heating, and no
# current through wet soil the rest of the time.
PROBES = [(26, 22)]
SAMPLES = 32  # ADC readings averaged per measurement
CAL_SAMPLES = 128  # ... and per calibration point
SETTLE_MS = 300  # after power-on, before sampling (the probe's 555 needs to settle)

# DS18B20s on one 1-Wire bus (4.7 kOhm pull-up to 3.3 V)
ONEWIRE_PIN = 15
DS_CONVERSION_MS = 750

# push a reading every INTERVAL_S seconds (0: only when asked with READ)
INTERVAL_S = 60

# ESP32 DevKit: UART_ID = 2; UART_TX = 17; UART_RX = 16; PROBES = [(34, 25)]; ONEWIRE_PIN = 4
