"""The `alexnet` command and the Prefect flows that wire the stages together."""

# When the alexnet-reprocess deployment runs unless told otherwise: nightly at 03:00.
NIGHTLY = "0 3 * * *"
