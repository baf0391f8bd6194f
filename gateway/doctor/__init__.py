"""``fieldproof gateway doctor``: is this gateway working and secure? One screen, plain words.

The technician runs it before leaving the field. Every check says what it found and, when it
is not fine, what to do. Exit code 0 when nothing failed (warnings allowed), 1 otherwise;
``--json`` gives the same for tools. Checks:

key · TLS key · enrolled (certificate for this gateway and key, from the CA) · clock (not before
the build date or the certificate, NTP synchronised) · certificate validity · broker (a real
TLS handshake with this gateway's certificate, and an MQTT login when the service is not
connected: the broker makes the certificate's CN the client id, so a login would take the
service's connection over) · service (the running agent's status: its local file while it is
connected, else its retained status read over the doctor's login; a gateway whose config has
no ``[mqtt.tls]`` is judged as such: a warning, and a plain MQTT login) · registration (when
``enrollment_url`` is set: the collector still lists this gateway and certificate) · each
sensor reads a plausible value · spool depth and drops · spool write (disk full: messages held
in memory) · disk space · delivery (published, confirmed).

Which messages the broker has PUBACKed lives only in the running agent's memory (the spool no
longer writes it, see gateway.spool), and so does the time of the last publish. The agent
publishes them in its retained status; the doctor reads that status when it reaches the broker
and falls back to what the spool file can tell (depth, oldest message, counters) when it cannot.
Every delivery check says which source it used (``source`` in ``--json``).

Reading sensors needs the hardware the running service uses; with the service running, a
serial port may be busy: ``--no-sensors`` skips them."""

from gateway.doctor.broker import check_broker, read_service_status
from gateway.doctor.cli import doctor_command, run_doctor
from gateway.doctor.report import SOURCE_SPOOL, SOURCE_STATUS, WIDTH, Check, Probe, Report, render

__all__ = [
    "SOURCE_SPOOL",
    "SOURCE_STATUS",
    "WIDTH",
    "Check",
    "Probe",
    "Report",
    "check_broker",
    "doctor_command",
    "read_service_status",
    "render",
    "run_doctor",
]
