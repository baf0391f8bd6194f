"""The formats every room reads and writes, pure: bytes in, typed values out, no I/O.

A gateway, a collector and an inspector on a stranger's laptop all decode these; nothing here
imports a room (gateway, collector, anchor, inspector) or touches a file, socket or clock."""
