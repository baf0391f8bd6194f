"""The inspector's room: what runs on a stranger's laptop to check a farm's evidence.

It reads formats (:mod:`fieldproof.formats`) and chain nodes (the chain readers in
:mod:`anchor`), and nothing else: no log store, no log key, no anchorer, no collector code
(tests/fieldproof/test_layering.py holds it to that). Verifier, findings, multi-bundle analysis,
InfluxDB
comparison, report and the ``fieldproof verify`` command."""
